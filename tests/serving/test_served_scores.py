"""Serve exactly what was trained: the online store rebuilds the examples' inputs from raw
request rows, and the registered version (in process and over `mlflow models serve`) scores
the held-out rows as the pipeline's evaluation does."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from core.layout import Layout
from core.settings import load_settings, world_env
from jobs.preprocess import preprocess_day
from jobs.spark import free_port
from models import ranker, registry
from models.compress import compress_model
from models.train import finetune
from ops import simulate
from pipeline import nightly
from serving import store as online
from serving.inputs import RAW_COLUMNS, model_inputs
from serving.model import STORE_ENV
from serving.scorer import TFLiteScorer

pytestmark = pytest.mark.slow
DAYS = ("2026-11-20", "2026-11-21", "2026-11-22")
SERVED = DAYS[-1]  # requests of this day, with the features after the night before


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Three simulated days preprocessed; the store holds the night before SERVED."""
    settings = load_settings(env=world_env(tmp_path_factory.mktemp("served")))
    simulate.generate_days(settings.data_root, DAYS[0], len(DAYS), simulate.SCALES["tiny"])
    for ds in DAYS:
        preprocess_day(spark, ds, settings)
    summary = nightly.materialize(DAYS[1], settings)
    assert summary["loaded"] and summary["state_as_of"] == DAYS[1]
    assert summary["rows"]["user"] > 0 and summary["rows"]["user_item"] > 0
    return settings


def request_rows(layout: Layout, examples: pd.DataFrame, catalog: bool) -> pd.DataFrame:
    """What a search service sends for the examples' rows: the ids, and the query, price and
    position it showed (the day's impressions); with ``catalog``, the item's attributes too."""
    events = pd.read_parquet(layout.clean_events(SERVED))
    shown = events[events["event_type"] == "impression"].drop_duplicates(["request_id", "item_id"])
    keys = ["request_id", "item_id"]
    raw = examples[[*keys, "user_id"]].merge(
        shown[[*keys, "query", "price", "position"]], on=keys, how="left"
    )
    if catalog:
        items = pd.read_parquet(layout.item_state(SERVED))[
            ["item_id", "category", "brand", "title"]
        ]
        raw = raw.merge(items, on="item_id", how="left")
    assert len(raw) == len(examples)
    return raw[[c for c in RAW_COLUMNS if c in raw]]


def test_the_store_rebuilds_the_examples_inputs_exactly(world):
    layout = Layout(world.data_root)
    examples = pd.read_parquet(layout.examples(SERVED))
    store = online.OnlineStore(layout.online_store(), min_state_as_of=DAYS[1])
    want = ranker.to_inputs(examples)
    got, found = model_inputs(request_rows(layout, examples, catalog=True), store)
    assert found["users_known"] > 0.5 * found["users"] and found["items_known"] > 0
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    # Without the request's catalog fields the store supplies them: the same inputs for every
    # item it knows (an item launched today is not in it yet).
    got, _ = model_inputs(request_rows(layout, examples, catalog=False), store)
    known = examples["item_id"].isin(pd.read_parquet(layout.item_state(DAYS[1]))["item_id"])
    assert known.mean() > 0.8
    for name, values in want.items():
        np.testing.assert_array_equal(got[name][known], values[known], err_msg=name)


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


def served_over_http(uri: str, raw: pd.DataFrame, tracking_uri: str, log: Path) -> np.ndarray:
    port = free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow_bin, "models", "serve", "-m", uri, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            wait_ready(f"http://127.0.0.1:{port}/ping", proc)
            body = {"dataframe_split": json.loads(raw.to_json(orient="split", index=False))}
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=60) as r:
                return np.asarray(json.loads(r.read())["predictions"], np.float32).ravel()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_the_served_version_scores_held_out_rows_as_evaluate_does(world, tmp_path, monkeypatch):
    s = dataclasses.replace(
        world,
        train=dataclasses.replace(
            world.train, embedding_dim=8, hidden_units=(16, 8), retrain_epochs=1
        ),
    )
    layout = Layout(s.data_root)
    out = layout.candidate_dir(SERVED)
    finetune(None, layout, SERVED, out, "retrain", s.train)
    compress_model(
        out / "model.keras", ranker.read_examples([layout.examples(SERVED)], "train"), out,
        s.compress, s.train,
    )  # fmt: skip
    registry.register_candidate(
        s, out, {}, {}, {"ds": SERVED}, promote_if=True, state_as_of=DAYS[1]
    )
    holdout = pd.read_parquet(layout.examples(SERVED)).query("split == 'holdout'")
    expected = TFLiteScorer(out / "int8.tflite").predict(ranker.to_inputs(holdout))
    raw = request_rows(layout, holdout, catalog=True)
    uri = f"models:/{s.model_name}@champion"

    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.input_names() == list(RAW_COLUMNS)
    assert (Path(mlflow.artifacts.download_artifacts(uri)) / "input_example.json").exists()
    model = mlflow.pyfunc.load_model(uri)
    assert model.model_config["state_as_of"] == DAYS[1]
    in_process = np.asarray(model.predict(raw), np.float32).ravel()
    assert np.abs(in_process - expected).max() <= 1e-5
    served = served_over_http(uri, raw, s.tracking_uri, tmp_path / "serve.log")
    assert np.abs(served - expected).max() <= 1e-5

    # A store a night behind what the model was trained with is refused at load.
    behind = tmp_path / "behind.sqlite"
    tables = {t: pd.read_parquet(layout.online_table(t, DAYS[0])) for t in online.KEYS}
    online.load(behind, tables, DAYS[0])
    monkeypatch.setenv(STORE_ENV, str(behind))
    with pytest.raises(online.StoreBehindError, match=f"after {DAYS[0]}"):
        mlflow.pyfunc.load_model(uri)
