"""Through the real scheduler: start Airflow, log in, trigger with Params over REST, check.

Starts the API server, scheduler and DAG processor with ``scripts/up.sh`` (a throwaway
AIRFLOW_HOME, data root and MLflow store), checks that the API refuses anonymous calls,
logs in with the generated password, triggers ``freshrank_nightly`` for a simulated day
with Params, waits for the run to succeed and checks the registry; then delivers the next
day and announces it with an asset event (``ops.announce``), which must start a run for
that day on its own; stops everything with ``scripts/down.sh``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from airflow_client.client import DAGApi, DAGPatchBody, DagRunApi, TriggerDAGRunPostBody
from airflow_client.client.exceptions import (
    BadRequestException,
    NotFoundException,
    UnauthorizedException,
)

from core.settings import load_settings, world_env
from jobs.spark import free_port
from ops import simulate
from ops.announce import announce, api_client, default_password, login

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
DS, NEXT = "2026-11-20", "2026-11-21"
DAG_ID = "freshrank_nightly"


def wait_for_run(runs_api: DagRunApi, run_id: str, logs: Path):
    deadline = time.time() + 600
    while time.time() < deadline:
        info = runs_api.get_dag_run(DAG_ID, run_id)
        if info.state in ("success", "failed"):
            break
        time.sleep(5)
    text = "\n".join(p.read_text()[-2000:] for p in logs.glob("*.log"))
    assert info.state == "success", text
    return info


@pytest.fixture
def airflow_up(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "FRESHRANK_HOME": str(REPO),
        "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        **world_env(tmp_path),
        "FRESHRANK_RUN_DIR": str(tmp_path / "run"),
        "FRESHRANK_LOG_DIR": str(tmp_path / "log"),
        "FRESHRANK_UP_MLFLOW": "0",
        "FRESHRANK_SCHEDULE": "none",  # only the run this test triggers
        # A tiny day holds a few dozen held-out ranking cases: judge them (default 100).
        "FRESHRANK__GATE__MIN_RANKING_CASES": "10",
        "AIRFLOW_PORT": str(port),
    }
    up = subprocess.run([str(REPO / "scripts" / "up.sh")], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield env, f"http://127.0.0.1:{port}", tmp_path
    finally:
        down = subprocess.run(
            [str(REPO / "scripts" / "down.sh")], env=env, capture_output=True, text=True
        )
        assert down.returncode == 0, down.stderr


def test_trigger_through_rest_api_and_scheduler(airflow_up, monkeypatch):
    env, base, tmp = airflow_up
    settings = load_settings(env=env)
    simulate.generate_days(settings.data_root, DS, 1, simulate.SCALES["tiny"])

    with pytest.raises(UnauthorizedException) as anonymous:
        DAGApi(api_client(base)).get_dags()
    assert anonymous.value.status == 401

    monkeypatch.setenv("AIRFLOW_HOME", env["AIRFLOW_HOME"])  # where the generated password is
    token = login(base, "admin", default_password("admin"))
    with pytest.raises(PermissionError):
        login(base, "admin", "not-the-password")
    client = api_client(base, token)
    dags_api, runs_api = DAGApi(client), DagRunApi(client)

    deadline = time.time() + 120  # the DAG processor parses the files first
    while True:
        try:
            dags_api.get_dag(DAG_ID)
            break
        except NotFoundException:
            assert time.time() < deadline, "freshrank_nightly never appeared"
            time.sleep(3)
    dags_api.patch_dag(DAG_ID, DAGPatchBody(is_paused=False))
    logical_date = f"{DS}T00:00:00Z"
    with pytest.raises(BadRequestException) as bad_param:
        runs_api.trigger_dag_run(
            DAG_ID, TriggerDAGRunPostBody(logical_date=logical_date, conf={"workers": 0})
        )
    assert bad_param.value.status == 400
    conf = {"strategy": "retrain", "dry_run": False}
    run = runs_api.trigger_dag_run(
        DAG_ID, TriggerDAGRunPostBody(logical_date=logical_date, conf=conf)
    )
    wait_for_run(runs_api, run.dag_run_id, tmp / "log")

    from models import registry

    assert registry.alias_version(settings) == "1"
    strategy = json.loads(
        (settings.data_root / "runs" / f"dt={DS}" / "choose_strategy.json").read_text()
    )
    assert strategy["strategy"] == "retrain" and "override" in strategy["reasons"][0]

    # The next day is delivered and announced: the asset event alone starts its run.
    simulate.generate_day(settings.data_root, DS, 1, simulate.SCALES["tiny"])
    announce(NEXT, base, token)
    deadline = time.time() + 120
    triggered = []
    while not triggered:
        assert time.time() < deadline, "the asset event started no run"
        time.sleep(3)
        runs = runs_api.get_dag_runs(DAG_ID).dag_runs
        triggered = [r for r in runs if r.run_type == "asset_triggered"]
    wait_for_run(runs_api, triggered[0].dag_run_id, tmp / "log")
    c = registry.client(settings)
    versions = c.search_model_versions(f"name='{settings.model_name}'")
    assert sorted(v.tags["ds"] for v in versions) == [DS, NEXT]

    # No secret leaks: the password, the API's signing secrets and the token appear in no
    # log, run summary or MLflow store written by the two nights.
    home = Path(env["AIRFLOW_HOME"])
    secrets = [default_password("admin"), token]
    for line in (home / "secrets.env").read_text().splitlines():
        secrets.append(line.split("=", 1)[1])
    assert all(len(s) >= 16 for s in secrets)
    written = [home / "logs", tmp / "log", settings.data_root / "runs", tmp / "artifacts"]
    files = [p for d in written for p in d.rglob("*") if p.is_file()]
    files.append(tmp / "mlflow.db")
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret is written to {path}"
    assert oct((home / "secrets.env").stat().st_mode & 0o777) == "0o600"
