"""Serve exactly what was trained: the online store rebuilds the examples' inputs from raw
request rows, and the registered version (in process and over `mlflow models serve`) scores
the held-out rows as the pipeline's evaluation does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from core.layout import Layout
from core.settings import load_settings, world_env
from jobs.preprocess import preprocess_day
from models import ranker, registry
from models.compress import compress_model
from models.train import finetune
from ops import simulate
from ops.served import invoke, model_server, request_rows
from pipeline import nightly
from serving import store as online
from serving.inputs import RAW_COLUMNS, model_inputs
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


def test_the_store_rebuilds_the_examples_inputs_exactly(world):
    layout = Layout(world.data_root)
    examples = pd.read_parquet(layout.examples(SERVED))
    store = online.OnlineStore(layout.online_store(), min_state_as_of=DAYS[1])
    want = ranker.to_inputs(examples)
    got, found = model_inputs(request_rows(layout, SERVED, examples), store)
    assert found["users_known"] > 0.5 * found["users"] and found["items_known"] > 0
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    # Without the request's catalog fields the store supplies them: the same inputs for every
    # item it knows (an item launched today is not in it yet).
    got, _ = model_inputs(request_rows(layout, SERVED, examples, catalog=False), store)
    known = examples["item_id"].isin(pd.read_parquet(layout.item_state(DAYS[1]))["item_id"])
    assert known.mean() > 0.8
    for name, values in want.items():
        np.testing.assert_array_equal(got[name][known], values[known], err_msg=name)


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
    raw = request_rows(layout, SERVED, holdout)
    uri = f"models:/{s.model_name}@champion"

    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.input_names() == list(RAW_COLUMNS)
    assert (Path(mlflow.artifacts.download_artifacts(uri)) / "input_example.json").exists()
    model = mlflow.pyfunc.load_model(uri)
    assert model.model_config["state_as_of"] == DAYS[1]
    in_process = np.asarray(model.predict(raw), np.float32).ravel()
    assert np.abs(in_process - expected).max() <= 1e-5
    # The in-process path without MLflow's schema enforcement: the same scores, bit for bit,
    # on these rows and on rows of guests, new items and no query.
    scored = model.unwrap_python_model().score(raw)
    assert scored.dtype == np.float32 and scored.tobytes() == in_process.tobytes()
    other = raw.assign(
        user_id=raw["user_id"].where(raw.index % 3 != 0, None),
        item_id=raw["item_id"].where(raw.index % 5 != 0, "i-launched-today"),
        query=None,
    )
    served = np.asarray(model.predict(other), np.float32).ravel()
    assert model.unwrap_python_model().score(other).tobytes() == served.tobytes()
    with model_server(uri, s.tracking_uri, tmp_path / "serve.log") as url:
        served = invoke(url, raw)
    assert np.abs(served - expected).max() <= 1e-5

    # A store a night behind what the model was trained with is refused at load.
    behind = tmp_path / "behind.sqlite"
    tables = {t: pd.read_parquet(layout.online_table(t, DAYS[0])) for t in online.KEYS}
    online.load(behind, tables, DAYS[0])
    monkeypatch.setenv(online.STORE_ENV, str(behind))
    with pytest.raises(online.StoreBehindError, match=f"after {DAYS[0]}"):
        mlflow.pyfunc.load_model(uri)
