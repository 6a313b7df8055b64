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
    retrain_below_popularity=0.8,
)
MIN_CASES = 100


def _ranking(champion, popularity=0.20):
    return {"metric": "ndcg@10", "champion": champion, "popularity": popularity, "cases": 500}


def _strategy(rows, champ, ranking=None, psi=None, cases=500, override=None):
    return choose_strategy(
        train_examples=rows,
        ranking_cases=cases,
        has_champion=champ,
        ranking_today=ranking,
        drift_psi=psi,
        cfg=S,
        min_ranking_cases=MIN_CASES,
        override=override,
    )


@pytest.mark.parametrize(
    ("rows", "champ", "ranking", "psi", "expected"),
    [
        (10_000, False, None, None, "retrain"),
        (10, True, _ranking(0.30), None, "skip"),
        (10_000, True, _ranking(0.10), None, "retrain"),  # far below popularity: collapsed
        (10_000, True, _ranking(0.30), {"category": 0.9, "price": 0.1}, "retrain"),
        (500, True, _ranking(0.30), {"category": 0.1}, "light"),
        (10_000, True, _ranking(0.30), {"category": 0.1}, "full"),
        (10_000, True, _ranking(0.17), None, "full"),  # a little below popularity: not collapsed
        (10_000, True, None, None, "full"),  # not measured: no collapse claimed
    ],
)
def test_strategy_policy(rows, champ, ranking, psi, expected):
    strategy, reasons = _strategy(rows, champ, ranking, psi)
    assert strategy == expected
    assert reasons and all(isinstance(r, str) for r in reasons)


def test_strategy_retrains_a_champion_far_below_popularity_and_says_so():
    strategy, reasons = _strategy(10_000, True, _ranking(0.05, popularity=0.25))
    assert strategy == "retrain"
    assert reasons == [
        "champion collapsed: ndcg@10 0.0500 on today's 500 cases < 0.8 x popularity's 0.2500"
    ]


def test_a_champion_that_beats_popularity_is_never_collapsed():
    # Whatever its absolute level (a hard catalogue: every score is low) ...
    assert _strategy(10_000, True, _ranking(0.03, popularity=0.02))[0] == "full"
    # ... and even with a threshold above 1, which would otherwise call it collapsed.
    above = dataclasses.replace(S, retrain_below_popularity=1.5)
    strategy, _ = choose_strategy(10_000, 500, True, _ranking(0.25), None, above, MIN_CASES)
    assert strategy == "full"
    strategy, _ = choose_strategy(10_000, 500, True, _ranking(0.19), None, above, MIN_CASES)
    assert strategy == "retrain"  # below popularity and below 1.5 x it


def test_a_day_too_small_to_evaluate_is_skipped_before_anything_is_trained():
    strategy, reasons = _strategy(10_000, True, None, cases=40)
    assert strategy == "skip"
    assert reasons == ["too small to evaluate: 40 cases < 100"]
    # Also without a champion: a first model it could not judge would not be promoted.
    assert _strategy(10_000, False, cases=0)[0] == "skip"
    assert _strategy(10_000, True, _ranking(0.30), cases=100)[0] == "full"  # the boundary


def test_strategy_override_and_reasons():
    assert _strategy(10_000, True, _ranking(0.3), override="light")[0] == "light"
    # A forced strategy wins even on a tiny day (evaluate then fails it, never crashes).
    assert _strategy(10_000, True, cases=3, override="full")[0] == "full"
    # A warm start is impossible without a champion: the override falls back to retrain.
    strategy, reasons = _strategy(10_000, False, override="full")
    assert strategy == "retrain" and "none exists" in reasons[0]
    with pytest.raises(ValueError, match="unknown strategy"):
        _strategy(10, True, override="yolo")
    _, reasons = _strategy(10_000, True, _ranking(0.3), {"category": 0.9})
    assert "category" in reasons[0]


def test_a_champion_of_an_older_model_version_is_retrained_not_warm_started():
    args = (10_000, 500, True, _ranking(0.3), None, S, MIN_CASES)
    strategy, reasons = choose_strategy(*args, champion_current=False)
    assert strategy == "retrain" and "lacks inputs" in reasons[0]
    strategy, _ = choose_strategy(*args, override="full", champion_current=False)
    assert strategy == "retrain"
    assert choose_strategy(*args, override="skip", champion_current=False)[0] == "skip"
    assert choose_strategy(*args)[0] == "full"


G = dataclasses.replace(
    defaults().gate,
    min_auc=0.6,
    max_int8_auc_gap=0.01,
    min_ranking_cases=100,
    confidence=0.9,
    ranking_metric="ndcg@10",
)


def _ci(diff, low, high, cases=800):
    return {
        "metric": "ndcg@10",
        "diff": diff,
        "low": low,
        "high": high,
        "confidence": 0.9,
        "cases": cases,
        "users": cases // 2,
    }


WIN, TIE, LOSS = _ci(0.03, 0.01, 0.05), _ci(0.004, -0.006, 0.014), _ci(-0.03, -0.05, -0.01)


def _cand(auc=0.7, aucf=None, cases=800, vs_pop=WIN, vs_champ=None, segments=None):
    return {
        "auc_int8": auc,
        "auc_float": auc if aucf is None else aucf,
        "ranking_cases": cases,
        "vs_popularity": vs_pop,
        "vs_champion": vs_champ,
        "segments": segments or {},
    }


CHAMP = {"auc_int8": 0.7, "segments": {}}


def test_gate_first_run_needs_the_floor_and_popularity_only():
    passed, reasons = decide(_cand(vs_pop=TIE), None, G)  # a tie with popularity is enough
    assert passed and reasons[-1] == "first run: no champion to compare with"
    passed, reasons = decide(_cand(auc=0.55), None, G)
    assert not passed and "below floor" in reasons[0]
    passed, reasons = decide(_cand(vs_pop=LOSS), None, G)
    assert not passed and any(r.startswith("ranks worse than popularity") for r in reasons)


def test_gate_promotes_a_credible_win_over_the_champion():
    passed, reasons = decide(_cand(vs_champ=WIN), CHAMP, G)
    assert passed
    assert (
        "credibly better than the champion: ndcg@10 +0.0300 vs champion "
        "(90% CI +0.0100 .. +0.0500; 800 cases, 400 users)"
    ) in reasons


def test_gate_does_not_promote_a_noisy_tie_or_a_loss():
    passed, reasons = decide(_cand(vs_champ=TIE), CHAMP, G)
    assert not passed
    tie = "not credibly better than the champion (the interval includes 0)"
    assert any(r.startswith(tie) for r in reasons)
    # A higher AUC does not rescue it: AUC against the champion is reported, not judged.
    assert not decide(_cand(auc=0.8, vs_champ=TIE), CHAMP, G)[0]
    passed, reasons = decide(_cand(vs_champ=LOSS), CHAMP, G)
    assert not passed and any(r.startswith("worse than the champion") for r in reasons)
    # A lower bound of exactly 0 is not credible either.
    assert not decide(_cand(vs_champ=_ci(0.01, 0.0, 0.02)), CHAMP, G)[0]


def test_gate_does_not_promote_a_candidate_worse_than_popularity():
    passed, reasons = decide(_cand(vs_pop=LOSS, vs_champ=WIN), CHAMP, G)
    assert not passed
    assert any(r.startswith("ranks worse than popularity: ndcg@10 -0.0300") for r in reasons)


def test_gate_does_not_judge_too_few_cases():
    passed, reasons = decide(_cand(cases=99, vs_champ=WIN), CHAMP, G)
    assert not passed
    assert "too few cases to judge: 99 ranking cases < 100" in reasons
    assert not any("popularity" in r or "credibly" in r for r in reasons)  # not judged
    assert not decide(_cand(cases=0), None, G)[0]  # the first run too
    assert decide(_cand(cases=100, vs_champ=WIN), CHAMP, G)[0]


def test_gate_returns_every_reason_of_a_day_without_holdout_or_cases():
    empty = _cand(auc=float("nan"), cases=0, vs_pop=_ci(*[float("nan")] * 3, cases=0))
    empty["auc_float"], empty["holdout_rows"] = None, 0
    passed, reasons = decide(empty, CHAMP, G)
    assert not passed
    assert reasons[0] == "candidate int8 AUC is undefined (0 holdout rows, or one class only)"
    assert "too few cases to judge: 0 ranking cases < 100" in reasons


def test_gate_catches_broken_int8_model():
    passed, reasons = decide(_cand(auc=0.62, aucf=0.75, vs_champ=WIN), CHAMP, G)
    assert not passed and any("int8 loses" in r for r in reasons)
    assert not decide(_cand(auc=float("nan")), None, G)[0]


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
    cand = _cand(auc=0.71, vs_champ=WIN, segments=_seg(0.60))
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
    assert r["ndcg@2"] == pytest.approx(0.5)  # a's click is ranked 3rd, b's 1st
    assert "recall@2" not in r


def test_a_noisy_tie_measured_by_the_bootstrap_is_not_a_promotion():
    from models.metrics import paired_bootstrap

    rng = np.random.default_rng(7)
    cases, users = 800, rng.integers(0, 300, 800)
    champion = rng.random(cases) * 0.5
    pop = champion - 0.1

    def gate_on(candidate):
        ci = {
            "vs_champion": paired_bootstrap(candidate, champion, users, 1000, 0.9, seed=0),
            "vs_popularity": paired_bootstrap(candidate, pop, users, 1000, 0.9, seed=0),
        }
        cand = _cand(vs_pop={"metric": "ndcg@10", **ci["vs_popularity"]})
        cand["vs_champion"] = {"metric": "ndcg@10", **ci["vs_champion"]}
        return decide(cand, CHAMP, G)

    # The same quality plus noise: its mean may even come out a little higher; no promotion.
    tie = champion + rng.normal(0.002, 0.15, cases)
    passed, reasons = gate_on(tie)
    assert not passed and any("the interval includes 0" in r for r in reasons)
    # A real improvement on the same cases is promoted.
    passed, reasons = gate_on(champion + 0.03 + rng.normal(0, 0.15, cases))
    assert passed and any(r.startswith("credibly better than the champion") for r in reasons)
