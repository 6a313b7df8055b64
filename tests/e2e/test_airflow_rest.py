"""Through the real scheduler: start Airflow, log in, trigger with Params over REST, check.

Starts the API server, scheduler and DAG processor with ``scripts/up.sh`` (a throwaway
AIRFLOW_HOME, data root and MLflow store), checks that the API refuses anonymous calls,
logs in with the generated password, triggers ``freshrank_nightly`` for a simulated day
with Params, waits for the run to succeed and checks the registry; then the next day
arrives hour by hour, and the day and one of its hours are announced with asset events
(``ops.announce``), which must start the night and an intra-day run on their own; the two
train one after the other (the shared pool); stops everything with ``scripts/down.sh``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from airflow_client.client import (
    DAGApi,
    DAGPatchBody,
    DagRunApi,
    PoolApi,
    TaskInstanceApi,
    TriggerDAGRunPostBody,
)
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
INTRADAY = "freshrank_intraday"
TRAINING_POOL = "freshrank_training"


def wait_for_run(runs_api: DagRunApi, run_id: str, logs: Path, dag_id: str = DAG_ID):
    deadline = time.time() + 600
    while time.time() < deadline:
        info = runs_api.get_dag_run(dag_id, run_id)
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
    for dag_id in (DAG_ID, INTRADAY):
        while True:
            try:
                dags_api.get_dag(dag_id)
                break
            except NotFoundException:
                assert time.time() < deadline, f"{dag_id} never appeared"
                time.sleep(3)
        dags_api.patch_dag(dag_id, DAGPatchBody(is_paused=False))
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

    # The next day arrives hour by hour. Hour 15 and the whole day are announced at once:
    # the asset events alone start an intra-day run and the night, which both train, one
    # at a time (the pool's one slot).
    simulate.generate_day(settings.data_root, DS, 1, simulate.SCALES["tiny"], hourly=True)
    announce(NEXT, base, token, hour=15)
    announce(NEXT, base, token)
    started = {}
    deadline = time.time() + 120
    while len(started) < 2:
        assert time.time() < deadline, f"the asset events started only {started}"
        time.sleep(3)
        for dag_id in (DAG_ID, INTRADAY):
            runs = runs_api.get_dag_runs(dag_id).dag_runs
            started.update((dag_id, r.dag_run_id) for r in runs if r.run_type == "asset_triggered")
    for dag_id, run_id in started.items():
        wait_for_run(runs_api, run_id, tmp / "log", dag_id)
    c = registry.client(settings)
    versions = c.search_model_versions(f"name='{settings.model_name}'")
    assert sorted(v.tags["ds"] for v in versions) == [DS, NEXT, f"{NEXT}T15"]
    assert PoolApi(client).get_pool(TRAINING_POOL).slots == 1
    training = sorted(
        (ti.start_date, ti.end_date, dag_id, ti.task_id)
        for dag_id, run_id in started.items()
        for ti in TaskInstanceApi(client).get_task_instances(dag_id, run_id).task_instances
        if ti.pool == TRAINING_POOL
    )
    assert len(training) == 4, training  # fine_tune and compress of each run
    for first, then in zip(training, training[1:], strict=False):
        assert first[1] <= then[0], f"{first[2:]} and {then[2:]} trained at the same time"

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
