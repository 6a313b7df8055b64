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
    import dataclasses

    from core.settings import defaults
    from jobs.spark import get_spark

    cfg = dataclasses.replace(defaults().preprocess, spark_master="local[2]", shuffle_partitions=2)
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path):
    """Settings whose data root and MLflow store live in the test's temporary directory."""
    from core.settings import load_settings, world_env

    return load_settings(env=world_env(tmp_path))


# --- test tiers (README, "Tests") -------------------------------------------------------
# `make test-fast` sets this: a test that starts a JVM there fails instead of running.
NO_JVM = os.environ.get("FRESHRANK_TEST_NO_JVM") == "1"


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the Spark session ``spark``: the tier follows what a test
    really uses, so a new Spark test cannot land in the fast tier by a forgotten mark."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(autouse=True, scope="session")
def _refuse_jvm_in_the_fast_tier():
    if not NO_JVM:
        yield
        return
    import jobs.spark

    def refuse(*args, **kwargs):
        raise RuntimeError(
            "this test starts Spark (a JVM) but runs in the fast tier: mark it "
            "@pytest.mark.spark (or slow/e2e)"
        )

    original, jobs.spark.get_spark = jobs.spark.get_spark, refuse
    yield
    jobs.spark.get_spark = original
