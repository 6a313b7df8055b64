"""Faults: a killed Spark job, a crash mid-promotion and an unreachable MLflow store leave
the data and the registry consistent, and fail with a clear reason."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from jobs import simulate
from jobs.layout import Layout

REPO = Path(__file__).resolve().parents[2]
DS = "2026-11-20"


def _examples(layout: Layout) -> pd.DataFrame:
    df = pd.read_parquet(layout.examples(DS))
    return df.sort_values(["request_id", "item_id"]).reset_index(drop=True)


@pytest.mark.slow
def test_kill_9_during_preprocessing_leaves_the_last_good_outputs(settings):
    simulate.generate_day(settings.data_root, DS, 0, simulate.SCALES["tiny"], simulate.DIRTY)
    env = {
        **os.environ,
        "FRESHRANK_DATA_ROOT": str(settings.data_root),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "FRESHRANK_ARTIFACT_ROOT": str(settings.artifact_root),
        "FRESHRANK__PREPROCESS__SPARK_MASTER": "local[1]",
    }
    cmd = [sys.executable, "-m", "jobs.preprocess", "--ds", DS]
    subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True)
    layout = Layout(settings.data_root)
    before = _examples(layout)

    # Rerun the day and kill -9 the whole process group (Python driver + JVM) as soon as it
    # starts writing.
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while not any(layout.root.glob("*/**/.dt=*.staging")):
        assert proc.poll() is None, "the rerun finished before it could be killed"
        assert time.time() < deadline, "the rerun never started writing"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert layout.processed_days("examples") == [DS]
    pd.testing.assert_frame_equal(_examples(layout), before)  # the old partition, whole

    subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True)  # the retry
    pd.testing.assert_frame_equal(_examples(layout), before)


def _registry_with_versions(settings, tmp_path, n):
    from models import registry

    c = registry.client(settings)
    c.create_registered_model(settings.model_name)
    source = tmp_path / "model"
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n")
    for _ in range(n):
        c.create_model_version(settings.model_name, source=str(source))
    return c


def test_a_crash_between_the_two_alias_moves_leaves_a_consistent_registry(
    settings, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    from models import registry

    _registry_with_versions(settings, tmp_path, 2)
    registry.promote(settings, "1", reason="first")
    real = MlflowClient.set_registered_model_alias

    def crash_on_champion(self, name, alias, version):
        if alias == registry.CHAMPION:
            raise SystemExit("killed mid-promotion")
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", crash_on_champion)
    with pytest.raises(SystemExit):
        registry.promote(settings, "2", reason="second")
    # champion still serves the old version; previous points at it too: nothing dangles.
    assert registry.alias_version(settings) == "1"
    assert registry.alias_version(settings, registry.PREVIOUS) == "1"

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)
    registry.promote(settings, "2", reason="second")  # the task's retry completes the move
    assert registry.alias_version(settings) == "2"
    assert registry.alias_version(settings, registry.PREVIOUS) == "1"
    registry.promote(settings, "2", reason="second")  # and a third run changes nothing
    assert registry.alias_version(settings, registry.PREVIOUS) == "1"


def test_an_unreachable_registry_fails_clearly_and_never_looks_like_no_champion(
    settings, monkeypatch
):
    import dataclasses

    from models import registry

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    down = dataclasses.replace(settings, tracking_uri=f"http://127.0.0.1:{port}")
    with pytest.raises(registry.RegistryUnavailableError, match=f"127.0.0.1:{port}"):
        registry.fetch_champion(down, settings.data_root / "champion")
    # A reachable store without a champion is the first-run case, not an error.
    assert registry.fetch_champion(settings, settings.data_root / "champion") is None
