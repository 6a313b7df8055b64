"""The pure decision functions: update strategy, promotion gate, metrics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from core.settings import defaults
from models.gate import decide
from models.metrics import auc, log_loss
from models.strategy import choose_strategy

S = dataclasses.replace(
    defaults().strategy,
    skip_below_examples=50,
    light_below_examples=2000,
    retrain_psi=0.5,
    retrain_champion_auc=0.55,
)


@pytest.mark.parametrize(
    ("rows", "champ", "champ_auc", "psi", "expected"),
    [
        (10_000, False, None, None, "retrain"),
        (10, True, 0.7, None, "skip"),
        (10_000, True, 0.50, None, "retrain"),
        (10_000, True, 0.70, {"category": 0.9, "price": 0.1}, "retrain"),
        (500, True, 0.70, {"category": 0.1}, "light"),
        (10_000, True, 0.70, {"category": 0.1}, "full"),
    ],
)
def test_strategy_policy(rows, champ, champ_auc, psi, expected):
    strategy, reasons = choose_strategy(rows, champ, champ_auc, psi, S)
    assert strategy == expected
    assert reasons and all(isinstance(r, str) for r in reasons)


def test_strategy_override_and_reasons():
    assert choose_strategy(10_000, True, 0.7, None, S, override="light")[0] == "light"
    # A warm start is impossible without a champion: the override falls back to retrain.
    strategy, reasons = choose_strategy(10_000, False, None, None, S, override="full")
    assert strategy == "retrain" and "none exists" in reasons[0]
    with pytest.raises(ValueError, match="unknown strategy"):
        choose_strategy(10, True, 0.7, None, S, override="yolo")
    _, reasons = choose_strategy(10_000, True, 0.7, {"category": 0.9}, S)
    assert "category" in reasons[0]


G = dataclasses.replace(defaults().gate, min_auc=0.6, max_auc_drop=0.002, max_int8_auc_gap=0.01)


def test_gate_first_run_passes_above_floor_only():
    assert decide({"auc_int8": 0.7, "auc_float": 0.7}, None, G)[0]
    passed, reasons = decide({"auc_int8": 0.55, "auc_float": 0.55}, None, G)
    assert not passed and "below floor" in reasons[0]


def test_gate_tolerates_small_drop_but_not_large():
    assert decide({"auc_int8": 0.699, "auc_float": 0.7}, {"auc_int8": 0.7}, G)[0]
    passed, reasons = decide({"auc_int8": 0.69, "auc_float": 0.69}, {"auc_int8": 0.7}, G)
    assert not passed and any("drop 0.0100" in r for r in reasons)


def test_gate_catches_broken_int8_model():
    passed, reasons = decide({"auc_int8": 0.62, "auc_float": 0.75}, {"auc_int8": 0.61}, G)
    assert not passed and any("int8 loses" in r for r in reasons)
    assert not decide({"auc_int8": float("nan"), "auc_float": 0.7}, None, G)[0]


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(y, s) == pytest.approx(pairwise)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))


def _seg(auc, rows=1000):
    return {"new_items": {"auc": auc, "rows": rows}, "new_users": {"auc": 0.7, "rows": rows}}


def test_gate_segment_guard_on_new_items():
    cand = {"auc_int8": 0.71, "auc_float": 0.71, "segments": _seg(0.60)}
    champ = {"auc_int8": 0.70, "segments": _seg(0.66)}
    passed, reasons = decide(cand, champ, G)
    assert not passed and any(r.startswith("new_items: AUC 0.6000") for r in reasons)
    # The same drop on a segment too small to judge is reported, not blocking.
    cand["segments"], champ["segments"] = _seg(0.60, rows=50), _seg(0.66, rows=50)
    passed, reasons = decide(cand, champ, G)
    assert passed and any("too few to judge" in r for r in reasons)


def test_calibration_and_ranking_metrics():
    from models.metrics import expected_calibration_error, ranking_metrics

    assert expected_calibration_error([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0]) == 0
    assert expected_calibration_error([0, 0, 0, 0], [0.9, 0.9, 0.9, 0.9]) == pytest.approx(0.9)
    r = ranking_metrics(["a", "a", "a", "b", "b"], [0, 0, 1, 1, 0], [0.9, 0.5, 0.1, 0.8, 0.2], k=2)
    assert r["ranked_requests"] == 2
    assert r["recall@2"] == pytest.approx(0.5)  # a's click is ranked 3rd, b's 1st
    assert r["ndcg@2"] == pytest.approx(0.5)
