"""The registered champion answers over HTTP (`mlflow models serve`) like in-process int8."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.layout import Layout
from jobs.spark import free_port
from models import ranker, registry
from models.compress import compress_model
from models.serving import frame_to_inputs
from models.train import finetune

from .conftest import make_examples, write_day

pytestmark = pytest.mark.slow
DS = "2026-11-20"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def test_champion_served_over_http_matches_in_process_int8(small_train_settings, tmp_path):
    s = small_train_settings
    layout = Layout(s.data_root)
    write_day(layout, DS, make_examples(4000, seed=1))
    out = layout.model_dir(DS) / "candidate"
    finetune(None, layout, DS, out, "retrain", s.train)
    train = ranker.read_examples([layout.examples(DS)], "train")
    compress_model(out / "model.keras", train, out, s.compress, s.train)
    registry.register_candidate(s, out, {}, {}, {"ds": DS}, promote_if=True)

    raw = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["i3", "i4", "i99"],
            "category": ["c3", "c4", None],
            "brand": "b3",
            "query": "c3",
            "price": [20.0, 30.0, 5.0],
        }
    )
    expected = ranker.TFLiteScorer(out / "int8.tflite").predict(frame_to_inputs(raw))

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": s.tracking_uri}
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [
        mlflow_bin,
        "models",
        "serve",
        "-m",
        f"models:/{s.model_name}@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", proc)
        body = json.dumps({"dataframe_split": json.loads(raw.to_json(orient="split", index=False))})
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            served = np.asarray(json.loads(r.read())["predictions"], dtype=np.float32)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    np.testing.assert_allclose(served.ravel(), expected, rtol=1e-5)
