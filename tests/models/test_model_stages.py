"""Training, compression, evaluation and the registry on small synthetic days."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core import features
from core.layout import Layout
from models import ranker
from models.compress import compress_model
from models.evaluate import evaluate_candidate
from models.metrics import auc
from models.train import finetune
from serving.scorer import LARGE, TFLiteScorer

from .conftest import click_counts, make_examples, make_ranking_cases, write_day, write_ranking

pytestmark = pytest.mark.slow
D1, D2 = "2026-11-20", "2026-11-21"


@pytest.fixture
def two_days(small_train_settings):
    s = small_train_settings
    layout = Layout(s.data_root)
    write_day(layout, D1, make_examples(6000, seed=1, items=range(0, 150)))
    # Day 2 brings 50 items never seen before.
    write_day(layout, D2, make_examples(6000, seed=2, items=range(0, 200)))
    return s, layout


def _holdout(layout, ds):
    df = ranker.read_examples([layout.examples(ds)], "holdout")
    return df, ranker.to_inputs(df), ranker.labels(df)


def test_retrain_then_warm_start_learns_new_items_and_keeps_old(two_days):
    s, layout = two_days
    d1 = finetune(None, layout, D1, layout.model_dir(D1), "retrain", s.train)
    assert d1["rows"] > 4000 and d1["days"] == [D1]
    m1 = ranker.load_ranker(d1["model_path"])
    _, x1, y1 = _holdout(layout, D1)
    p1_before = m1.predict(x1, verbose=0).ravel()
    assert auc(y1, p1_before) > 0.7

    d2 = finetune(d1["model_path"], layout, D2, layout.model_dir(D2), "full", s.train)
    assert d2["days"] == [D1, D2]  # replay of the day before
    m2 = ranker.load_ranker(d2["model_path"])
    # Optimizer state came along: Adam's step counter continues from day 1.
    assert int(m2.optimizer.iterations.numpy()) > int(m1.optimizer.iterations.numpy())
    p1_after = m2.predict(x1, verbose=0).ravel()
    assert np.mean(np.abs(p1_after - p1_before)) < 0.1  # no forgetting of day 1
    assert auc(y1, p1_after) > auc(y1, p1_before) - 0.02

    df2, x2, y2 = _holdout(layout, D2)
    new = df2["item_id"].str[1:].astype(int) >= 150
    new_x = {k: v[new.to_numpy()] for k, v in x2.items()}
    auc_new_before = auc(y2[new], m1.predict(new_x, verbose=0).ravel())
    auc_new_after = auc(y2[new], m2.predict(new_x, verbose=0).ravel())
    assert auc_new_after > auc_new_before + 0.03


def test_a_fine_tune_moves_only_the_embedding_rows_its_rows_look_up(small_train_settings):
    s = small_train_settings
    train = dataclasses.replace(s.train, replay_days=0)  # the day only: items 0-99
    layout = Layout(s.data_root)
    write_day(layout, D1, make_examples(6000, seed=1, items=range(0, 200)))
    day2 = make_examples(6000, seed=2, items=range(0, 100))
    write_day(layout, D2, day2)
    d1 = finetune(None, layout, D1, layout.model_dir(D1), "retrain", train)
    d2 = finetune(d1["model_path"], layout, D2, layout.model_dir(D2), "full", train)
    m1, m2 = ranker.load_ranker(d1["model_path"]), ranker.load_ranker(d2["model_path"])
    assert type(m2.optimizer).__name__ == "LazyAdam"  # carried over by the warm start
    before = m1.get_layer("item_embedding").get_weights()[0]
    after = m2.get_layer("item_embedding").get_weights()[0]

    # Looked up today: the candidates and the items of the users' histories (one table).
    today = {features.hash_bucket("item", f"i{i}") for i in range(0, 100)}
    trained = day2[day2["split"] == "train"]
    today |= {b for h in trained[features.HISTORY_BUCKETS] for b in h if b}
    yesterday_only = {features.hash_bucket("item", f"i{i}") for i in range(100, 200)} - today
    assert len(yesterday_only) > 90
    # Trained yesterday (so with momentum), not looked up today: not moved at all.
    rows = sorted(yesterday_only)
    np.testing.assert_array_equal(after[rows], before[rows])
    moved = np.abs(after - before).sum(axis=1) > 0
    assert set(np.flatnonzero(moved)) == today


def test_a_warm_start_carries_the_history_and_word_weights_and_their_optimizer_state(two_days):
    """The full strategy starts from the champion's history pooling, word table and
    two-tower terms as saved, with their Adam moments, not from fresh ones."""
    from models.fit import prepare_model

    s, layout = two_days
    d1 = finetune(None, layout, D1, layout.model_dir(D1), "retrain", s.train)
    saved = ranker.load_ranker(d1["model_path"])
    warm = prepare_model(d1["model_path"], "full", s.train)
    fresh = prepare_model(None, "retrain", s.train)
    parts = ("history_pool", "word_embedding", "user_item_norm", "query_title_norm")
    for name in parts:
        for a, b, c in zip(
            warm.get_layer(name).get_weights(),
            saved.get_layer(name).get_weights(),
            fresh.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c), name  # trained: not where a new model starts
    moments = {v.name: v.numpy() for v in saved.optimizer.variables if "word_embedding" in v.name}
    assert len(moments) == 2 and all(np.abs(m).sum() > 0 for m in moments.values())
    for v in warm.optimizer.variables:
        if v.name in moments:
            np.testing.assert_array_equal(v.numpy(), moments.pop(v.name))
    assert not moments  # both of the word table's moments were carried
    assert int(warm.optimizer.iterations.numpy()) == int(saved.optimizer.iterations.numpy())


def test_a_champion_saved_with_keras_adam_switches_to_lazy_adam_keeping_its_state(
    two_days, tmp_path
):
    s, layout = two_days
    k = ranker.keras()
    model = ranker.build_ranker(8, (16, 8))
    model.compile(optimizer=k.optimizers.Adam(0.01), loss="binary_crossentropy")
    df = ranker.read_examples([layout.examples(D1)], "train")
    model.fit(ranker.to_inputs(df), ranker.labels(df), batch_size=256, epochs=1, verbose=0)
    path = tmp_path / "adam.keras"
    model.save(path)

    old = ranker.load_ranker(path).optimizer
    switched = ranker.with_lazy_adam(ranker.load_ranker(path)).optimizer
    assert type(old).__name__ == "Adam" and type(switched).__name__ == "LazyAdam"
    assert int(switched.iterations.numpy()) == int(old.iterations.numpy()) > 0
    for new, saved in zip(switched.variables, old.variables, strict=True):
        np.testing.assert_array_equal(new.numpy(), saved.numpy())
    d2 = finetune(str(path), layout, D2, layout.model_dir(D2), "full", s.train)
    assert type(ranker.load_ranker(d2["model_path"]).optimizer).__name__ == "LazyAdam"


def test_light_strategy_freezes_the_mlp(two_days):
    s, layout = two_days
    d1 = finetune(None, layout, D1, layout.model_dir(D1), "retrain", s.train)
    d2 = finetune(d1["model_path"], layout, D2, layout.model_dir(D2), "light", s.train)
    assert d2["days"] == [D2]
    w1 = ranker.load_ranker(d1["model_path"]).get_layer("mlp_0").get_weights()[0]
    m2 = ranker.load_ranker(d2["model_path"])
    np.testing.assert_array_equal(w1, m2.get_layer("mlp_0").get_weights()[0])
    assert all(layer.trainable for layer in m2.layers)  # saved unfrozen for tomorrow
    with pytest.raises(ValueError, match="needs a base model"):
        finetune(None, layout, D2, layout.model_dir(D2), "full", s.train)


def test_compress_evaluate_register_promote_and_rollback(two_days):
    from models import registry

    s, layout = two_days
    out1 = layout.model_dir(D1) / "candidate"
    finetune(None, layout, D1, out1, "retrain", s.train)
    train1 = ranker.read_examples([layout.examples(D1)], "train")
    comp = compress_model(out1 / "model.keras", train1, out1, s.compress, s.train)

    sizes = comp["sizes"]
    assert sizes["int8_tflite"]["bytes"] * 3 < sizes["float_tflite"]["bytes"]
    assert comp["sparsity_by_layer"]["mlp_0"] == pytest.approx(s.compress.target_sparsity, abs=0.02)
    df1, x1, y1 = _holdout(layout, D1)
    int8 = TFLiteScorer(out1 / "int8.tflite").predict(x1)
    assert int8.shape == y1.shape and np.all((int8 >= 0) & (int8 <= 1))
    # A large batch on two threads, in 1000-row batches: each row's score is the same.
    reps = -(-LARGE // len(y1))
    big = {k: np.concatenate([v] * reps) for k, v in x1.items()}
    two = TFLiteScorer(out1 / "int8.tflite", threads=2).predict(big, batch_size=1000)
    np.testing.assert_array_equal(two, np.tile(int8, reps))
    assert auc(y1, int8) > 0.7

    # Held-out ranking cases: on the first day nothing is popular yet; on the second,
    # popularity counts the first day's clicks.
    write_ranking(layout, D1, make_ranking_cases(200, seed=11, items=range(0, 150)))
    popular = click_counts(ranker.read_examples([layout.examples(D1)]))
    write_ranking(
        layout, D2, make_ranking_cases(200, seed=12, items=range(0, 200), popularity=popular)
    )
    ev1 = evaluate_candidate(layout, D1, out1, None, s.gate)
    assert ev1["gate_passed"] and ev1["champion"] is None
    assert ev1["ranking_vs_popularity"]["low"] > 0  # popularity knows nothing on day 1
    assert abs(ev1["candidate"]["float"]["auc"] - ev1["candidate"]["int8"]["auc"]) < 0.01
    # The gate's quantization check compares int8 with the float TFLite of the pruned model.
    quantization_gap = ev1["candidate"]["pruned_float"]["auc"] - ev1["candidate"]["int8"]["auc"]
    assert abs(quantization_gap) < 0.01

    v1 = registry.register_candidate(
        s, out1, {"strategy": "retrain"}, {"auc": 0.7}, {"ds": D1}, promote_if=True
    )
    assert v1["promoted"] and registry.alias_version(s) == v1["version"]
    # A rerun of the night registers nothing new and does not promote again.
    again = registry.register_candidate(s, out1, {}, {}, {"ds": D1}, promote_if=True)
    assert again["reused"] and again["version"] == v1["version"] and not again["promoted"]

    # A candidate trained on label-shuffled data must be registered but not promoted.
    out2 = layout.model_dir(D2) / "candidate"
    shuffled = make_examples(6000, seed=2)
    shuffled["label_click"] = np.random.default_rng(5).permutation(shuffled["label_click"])
    write_day(layout, D2, shuffled)
    only_today = dataclasses.replace(s.train, retrain_history_days=1)
    finetune(None, layout, D2, out2, "retrain", only_today)
    compress_model(
        out2 / "model.keras",
        ranker.read_examples([layout.examples(D2)], "train"),
        out2,
        s.compress,
        s.train,
    )
    write_day(layout, D2, make_examples(6000, seed=2))  # evaluate on honest labels
    champion = registry.fetch_champion(s, layout.model_dir(D2) / "champion")
    ev2 = evaluate_candidate(layout, D2, out2, champion, s.gate)
    assert not ev2["gate_passed"]
    assert ev2["ranking_vs_champion"]["high"] < 0  # credibly worse than the champion
    v2 = registry.register_candidate(s, out2, {}, {}, {"ds": D2}, promote_if=ev2["gate_passed"])
    assert not v2["promoted"] and registry.alias_version(s) == v1["version"]
    # Another candidate for a day that already promoted one is registered, never promoted.
    other = registry.register_candidate(s, out2, {}, {}, {"ds": D1}, promote_if=True)
    assert not other["reused"] and not other["promoted"]
    assert other["already_promoted"] == v1["version"] and registry.alias_version(s) == v1["version"]

    # Manual promotion then one-step rollback.
    registry.promote(s, v2["version"], reason="test")
    assert registry.alias_version(s, "previous") == v1["version"]
    assert registry.rollback(s, reason="bad model") == v1["version"]
    assert registry.alias_version(s) == v1["version"]
    history = json.loads(
        registry.client(s).get_registered_model(s.model_name).tags["champion_history"]
    )
    assert [h["version"] for h in history] == [v1["version"], v2["version"], v1["version"]]
    assert history[-1]["reason"] == "rollback: bad model" and history[-1]["from"] == v2["version"]
