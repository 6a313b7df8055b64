"""Shared fixtures: a small local SparkSession and settings pointing at a temporary root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Before Airflow is imported anywhere: this repository's airflow.cfg, a test AIRFLOW_HOME.
os.environ.setdefault("FRESHRANK_HOME", str(REPO))
os.environ.setdefault("AIRFLOW_CONFIG", str(REPO / "airflow.cfg"))
os.environ.setdefault("AIRFLOW_HOME", str(REPO / "var" / "airflow-test"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(scope="session")
def spark():
    from core.settings import PreprocessSettings
    from jobs.spark import get_spark

    session = get_spark(PreprocessSettings(spark_master="local[2]", shuffle_partitions=2))
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path):
    """Settings whose data root and MLflow store live in the test's temporary directory."""
    from core.settings import load_settings

    env = {
        "FRESHRANK_DATA_ROOT": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRESHRANK_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    return load_settings(env=env)
