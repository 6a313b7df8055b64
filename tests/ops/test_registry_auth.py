"""The MLflow server of `make up` (basic-auth app, ops/mlflow_auth.py) guards the registry:
the `champion` alias moves with the admin's credentials only."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.spark import free_port
from ops import mlflow_auth

MODEL = "ranker"


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{log.read_text()}")


@pytest.fixture
def auth_server(tmp_path):
    """A `mlflow server --app-name basic-auth` on 127.0.0.1 with a temporary auth config,
    auth database and backend store; yields (tracking URI, auth home, server log)."""
    home = tmp_path / "auth"
    mlflow_auth.write_auth_config(home)
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH"))
    }
    env.update(mlflow_auth.server_env(home))
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner (GenAI jobs) to start
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--default-artifact-root",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{uri}/health", proc, log)
        yield uri, home, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def as_user(monkeypatch, uri: str, user: str | None, password: str | None):
    """An MlflowClient for ``uri`` that sends these credentials (MLflow reads them from the
    environment at each request, as the pipeline's `models.registry.client` does)."""
    from mlflow import MlflowClient

    for name, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def refused(call, status: int) -> None:
    """``call`` must fail with HTTP ``status`` (401 or 403), as MLflow's client reports it."""
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as info:
        call()
    code = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}[status]
    assert info.value.error_code == code and f"error code {status}" in str(info.value), info.value


def set_alias_over_http(uri: str, version: str, auth: tuple[str, str] | None) -> int:
    """The status of a bare REST call moving ``champion`` (MlflowClient reads the model first,
    so this hits the alias endpoint itself)."""
    import requests

    body = {"name": MODEL, "alias": "champion", "version": version}
    url = f"{uri}/api/2.0/mlflow/registered-models/alias"
    return requests.post(url, json=body, auth=auth, timeout=30).status_code


@pytest.mark.slow
def test_champion_alias_moves_only_with_the_admins_credentials(auth_server, monkeypatch):
    uri, home, log = auth_server
    user, password = mlflow_auth.credentials(home)
    for name in (
        mlflow_auth.CONFIG,
        mlflow_auth.DATABASE,  # the auth database MLflow filled (users, password hashes)
        mlflow_auth.SERVER_ENV,
        mlflow_auth.CREDENTIALS_ENV,
    ):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    assert (home / mlflow_auth.DATABASE).stat().st_size > 0

    admin = as_user(monkeypatch, uri, user, password)
    run = admin.create_run(admin.get_experiment_by_name("Default").experiment_id)
    admin.create_registered_model(MODEL)
    version = admin.create_model_version(
        MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    ).version

    # No credentials: refused before any permission is looked at (reads too).
    anonymous = as_user(monkeypatch, uri, None, None)
    refused(lambda: anonymous.set_registered_model_alias(MODEL, "champion", version), 401)
    refused(lambda: anonymous.get_registered_model(MODEL), 401)
    assert set_alias_over_http(uri, version, None) == 401
    # The admin's name with a wrong password.
    wrong = as_user(monkeypatch, uri, user, password + "x")
    refused(lambda: wrong.set_registered_model_alias(MODEL, "champion", version), 401)
    assert set_alias_over_http(uri, version, (user, password + "x")) == 401

    # A plain user gets default_permission READ: sees the model, cannot move its alias.
    from mlflow.server import get_app_client

    as_user(monkeypatch, uri, user, password)
    get_app_client("basic-auth", tracking_uri=uri).create_user("viewer", "viewer-password-1")
    viewer = as_user(monkeypatch, uri, "viewer", "viewer-password-1")
    assert viewer.get_registered_model(MODEL).name == MODEL
    refused(lambda: viewer.set_registered_model_alias(MODEL, "champion", version), 403)
    assert set_alias_over_http(uri, version, ("viewer", "viewer-password-1")) == 403

    admin = as_user(monkeypatch, uri, user, password)
    assert not admin.get_registered_model(MODEL).aliases  # nothing above moved it
    admin.set_registered_model_alias(MODEL, "champion", version)
    assert admin.get_model_version_by_alias(MODEL, "champion").version == version

    assert password not in log.read_text()  # the server never logs the password


def test_write_auth_config_keeps_the_first_password(tmp_path):
    home = tmp_path / "auth"
    config = mlflow_auth.write_auth_config(home)
    first = mlflow_auth.credentials(home)
    secret = mlflow_auth.server_env(home)["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    (home / mlflow_auth.CREDENTIALS_ENV).unlink()
    assert mlflow_auth.write_auth_config(home) == config
    assert mlflow_auth.credentials(home) == first  # rewritten from the ini
    assert mlflow_auth.server_env(home)["MLFLOW_FLASK_SERVER_SECRET_KEY"] == secret
    assert mlflow_auth.server_env(home)["MLFLOW_AUTH_CONFIG_PATH"] == str(config)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700

    config.unlink()  # an auth database whose admin password is lost: refused, not replaced
    with pytest.raises(FileExistsError):
        mlflow_auth.write_auth_config(home)
