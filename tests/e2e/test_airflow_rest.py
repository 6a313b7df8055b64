"""Through the real scheduler: start Airflow, log in, trigger with Params over REST, check.

Starts the API server, scheduler and DAG processor with ``scripts/up.sh`` (a throwaway
AIRFLOW_HOME, data root and MLflow store), checks that the API refuses anonymous calls,
logs in with the generated password, triggers ``freshrank_nightly`` for a simulated day
with Params, waits for the run to succeed and checks the registry; stops everything with
``scripts/down.sh``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jobs import simulate
from jobs.settings import load_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
DS = "2026-11-20"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method="GET", body=None, token=None, timeout=30):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"{}")


@pytest.fixture
def airflow_up(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "FRESHRANK_HOME": str(REPO),
        "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "FRESHRANK_DATA_ROOT": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRESHRANK_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "FRESHRANK_RUN_DIR": str(tmp_path / "run"),
        "FRESHRANK_LOG_DIR": str(tmp_path / "log"),
        "FRESHRANK_UP_MLFLOW": "0",
        "FRESHRANK_SCHEDULE": "none",  # only the run this test triggers
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


def test_trigger_through_rest_api_and_scheduler(airflow_up):
    env, base, tmp = airflow_up
    settings = load_settings(env=env)
    simulate.generate_days(settings.data_root, DS, 1, simulate.SCALES["tiny"])

    with pytest.raises(urllib.error.HTTPError) as anonymous:
        call(f"{base}/api/v2/dags")
    assert anonymous.value.code == 401

    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    password = json.loads(passwords.read_text())["admin"]
    _, auth = call(f"{base}/auth/token", "POST", {"username": "admin", "password": password})
    token = auth["access_token"]

    deadline = time.time() + 120  # the DAG processor parses the files first
    while True:
        try:
            call(f"{base}/api/v2/dags/freshrank_nightly", token=token)
            break
        except urllib.error.HTTPError:
            assert time.time() < deadline, "freshrank_nightly never appeared"
            time.sleep(3)
    call(f"{base}/api/v2/dags/freshrank_nightly", "PATCH", {"is_paused": False}, token)
    status, run = call(
        f"{base}/api/v2/dags/freshrank_nightly/dagRuns",
        "POST",
        {"logical_date": f"{DS}T00:00:00Z", "conf": {"strategy": "retrain", "dry_run": False}},
        token,
    )
    assert status == 200
    run_id = run["dag_run_id"]

    deadline = time.time() + 600
    state = None
    while time.time() < deadline:
        _, info = call(f"{base}/api/v2/dags/freshrank_nightly/dagRuns/{run_id}", token=token)
        state = info["state"]
        if state in ("success", "failed"):
            break
        time.sleep(5)
    logs = "\n".join(p.read_text()[-2000:] for p in (tmp / "log").glob("*.log"))
    assert state == "success", logs

    from models import registry

    assert registry.alias_version(settings) == "1"
    strategy = json.loads(
        (settings.data_root / "runs" / f"dt={DS}" / "choose_strategy.json").read_text()
    )
    assert strategy["strategy"] == "retrain" and "override" in strategy["reasons"][0]
