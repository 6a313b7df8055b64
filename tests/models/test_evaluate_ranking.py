"""Evaluation on the held-out ranking cases, and days too small to evaluate."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.layout import Layout
from core.settings import load_settings, world_env
from core.summaries import PreprocessSummary, write_summary
from models.evaluate import evaluate_candidate, evaluate_day

from .conftest import make_examples, make_ranking_cases, write_day, write_ranking

pytestmark = pytest.mark.slow
D1, TINY = "2026-11-20", "2026-11-21"


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    """A small pruned int8 candidate trained on day D1 of the synthetic world."""
    from models import ranker
    from models.compress import compress_model
    from models.train import finetune

    root = tmp_path_factory.mktemp("candidate")
    s = load_settings(env=world_env(root))
    train = dataclasses.replace(
        s.train, embedding_dim=8, hidden_units=(16, 8), batch_size=256, retrain_epochs=4
    )
    layout = Layout(s.data_root)
    write_day(layout, D1, make_examples(6000, seed=1, items=range(0, 150)))
    out = layout.candidate_dir(D1)
    finetune(None, layout, D1, out, "retrain", train)
    compress_model(
        out / "model.keras",
        ranker.read_examples([layout.examples(D1)], "train"),
        out,
        s.compress,
        train,
    )
    return out, s.gate


@pytest.fixture
def settings_here(tmp_path):
    return load_settings(env=world_env(tmp_path))


def test_candidate_is_ranked_against_popularity_and_random(candidate, settings_here):
    out, gate = candidate
    layout = Layout(settings_here.data_root)
    write_day(layout, D1, make_examples(6000, seed=1, items=range(0, 150)))
    # A first day: no history, so popularity is 0 for every item (it cannot rank).
    write_ranking(layout, D1, make_ranking_cases(300, seed=11, items=range(0, 150)))
    result = evaluate_candidate(layout, D1, out, None, gate, measure_latency=False)

    ranking = result["ranking"]
    assert set(ranking) == {"candidate_int8", "candidate_float", "popularity", "random"}
    assert all(r["cases"] == 300 for r in ranking.values()) and result["ranking_cases"] == 300
    # Ties never favour the target: a popularity of 0 everywhere ranks exactly as random.
    assert ranking["popularity"]["hr@10"] == pytest.approx(0.1)
    assert ranking["random"]["hr@10"] == pytest.approx(0.1)  # its expectation, exactly
    assert ranking["candidate_int8"]["hr@10"] > 0.2
    vs_pop = result["ranking_vs_popularity"]
    assert vs_pop["metric"] == gate.ranking_metric and vs_pop["confidence"] == gate.confidence
    assert vs_pop["cases"] == 300 and 0 < vs_pop["users"] <= 300
    assert 0 < vs_pop["low"] <= vs_pop["diff"] <= vs_pop["high"]
    assert result["ranking_vs_champion"] is None
    assert result["gate_passed"], result["gate_reasons"]
    assert result["gate_reasons"][-1] == "first run: no champion to compare with"

    page = (layout.run_dir(D1) / "report.html").read_text()
    assert "popularity (reference)" in page and "hr@10" in page
    assert "vs popularity (90% CI" in page and "recall" not in page


def test_a_candidate_equal_to_the_champion_is_not_promoted(candidate, settings_here):
    out, gate = candidate
    layout = Layout(settings_here.data_root)
    write_day(layout, D1, make_examples(6000, seed=1, items=range(0, 150)))
    write_ranking(layout, D1, make_ranking_cases(300, seed=11, items=range(0, 150)))
    champion = {"version": "1", "int8_tflite": str(out / "int8.tflite")}
    result = evaluate_candidate(layout, D1, out, champion, gate, measure_latency=False)
    vs = result["ranking_vs_champion"]
    assert vs["diff"] == vs["low"] == vs["high"] == 0
    assert result["ranking"]["champion_int8"] == result["ranking"]["candidate_int8"]
    assert not result["gate_passed"]
    assert any("not credibly better than the champion" in r for r in result["gate_reasons"])


@pytest.mark.parametrize("ranking_dir", ["missing", "empty"])
def test_a_day_without_holdout_rows_or_cases_fails_the_gate_without_raising(
    candidate, settings_here, ranking_dir
):
    out, gate = candidate
    layout = Layout(settings_here.data_root)
    tiny = make_examples(40, seed=5, items=range(0, 150))
    tiny["split"] = "train"  # no held-out request
    write_day(layout, TINY, tiny)
    if ranking_dir == "empty":
        layout.ranking(TINY).mkdir(parents=True)
        (layout.ranking(TINY) / "_SUCCESS").touch()
    layout.candidate_dir(TINY).parent.mkdir(parents=True)
    layout.candidate_dir(TINY).symlink_to(out, target_is_directory=True)
    champion = {"version": "1", "int8_tflite": str(out / "int8.tflite")}

    written = evaluate_day(layout, TINY, champion, gate)
    assert not written["gate_passed"]
    assert written["holdout_rows"] == 0 and written["ranking_cases"] == 0
    reasons = written["gate_reasons"]
    assert "candidate int8 AUC is undefined (0 holdout rows, or one class only)" in reasons
    assert f"too few cases to judge: 0 ranking cases < {gate.min_ranking_cases}" in reasons
    on_disk = json.loads((layout.run_dir(TINY) / "evaluate.json").read_text())
    assert on_disk["gate_reasons"] == reasons and on_disk["latency"] is None  # no rows
    assert on_disk["ranking"]["popularity"]["cases"] == 0
    assert (layout.run_dir(TINY) / "report.html").exists()


def test_the_nightly_strategy_skips_a_day_too_small_to_evaluate(settings_here):
    from pipeline import nightly

    layout = Layout(settings_here.data_root)
    summary = PreprocessSummary(
        ds=TINY, rows_in=90, clean=90, quarantined=0, duplicates=0, examples=90,
        train_examples=80, holdout_examples=10, ranking_cases=3,
    )  # fmt: skip
    write_summary(layout, summary)
    write_ranking(layout, TINY, make_ranking_cases(3, seed=1))  # the window's only cases
    decision = nightly.choose_strategy(TINY, settings_here)
    minimum = settings_here.gate.min_ranking_cases
    assert decision["strategy"] == "skip"
    assert decision["reasons"] == [f"too small to evaluate: 3 cases < {minimum}"]
    assert decision["ranking_cases"] == 3 and decision["ranking_today"] is None
    bad = dataclasses.replace(
        settings_here, gate=dataclasses.replace(settings_here.gate, ranking_metric="recall@10")
    )
    with pytest.raises(ValueError, match="ranking_metric 'recall@10'"):
        nightly.choose_strategy(TINY, bad)
    assert np.isfinite(decision["seconds"])
