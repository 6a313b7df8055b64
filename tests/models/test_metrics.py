"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics import (
    auc,
    calibration_curve,
    expected_calibration_error,
    log_loss,
    paired_auc_bootstrap,
    paired_bootstrap,
    ranking_metrics,
    sampled_ranking,
    score_metrics,
)


def test_auc_small_case_with_ties():
    # Positive/negative pairs: (0.8 vs 0.1) 1, (0.8 vs 0.4) 1, (0.4 vs 0.1) 1, (0.4 vs 0.4)
    # a tie, 1/2: 3.5 of 4 pairs.
    assert auc([1, 0, 1, 0], [0.8, 0.1, 0.4, 0.4]) == pytest.approx(3.5 / 4)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc([0, 1], [0.5, 0.5]) == 0.5
    assert auc(np.array([1.0, 0.0]), np.array([[0.2], [0.9]])) == 0.0  # any shape, floats


def test_auc_is_nan_for_one_class_or_nan_scores():
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert math.isnan(auc([0, 0, 0], [0.2, 0.3, 0.1]))
    assert math.isnan(auc([0, 1], [0.2, float("nan")]))
    assert math.isnan(auc([], []))  # an empty segment of the holdout


def test_metrics_of_an_empty_segment_are_nan_not_errors():
    assert all(math.isnan(v) for v in score_metrics([], []).values())


def test_log_loss_clips_probabilities():
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert log_loss([1, 0], [0.9, 0.2]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert log_loss([1], [1.0]) == pytest.approx(1e-7, rel=1e-3)  # one class is fine
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    assert log_loss([0], [0.0], eps=1e-3) == pytest.approx(-math.log(1 - 1e-3))
    assert math.isnan(log_loss([1, 0], [float("nan"), 0.5]))
    assert set(score_metrics([1, 0], [0.9, 0.2])) == {"auc", "log_loss"}


def test_expected_calibration_error_tiny_example():
    y = [0, 1, 1, 1, 0]
    p = [0.1, 0.15, 0.8, 0.9, 0.95]
    # Bins (width 0.1): [0.1, 0.15] -> predicted 0.125, observed 0.5; [0.8] -> 0.8 vs 1;
    # [0.9, 0.95] -> 0.925 vs 0.5.
    curve = calibration_curve(y, p)
    assert [(c["bin"], c["n"]) for c in curve] == [(1, 2), (8, 1), (9, 2)]
    expected = (2 * 0.375 + 1 * 0.2 + 2 * 0.425) / 5
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    assert expected_calibration_error([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0]) == 0
    assert expected_calibration_error([0, 0, 0, 0], [0.9] * 4) == pytest.approx(0.9)


def test_ranking_metrics_small_case():
    # Request a: its positive ranked 3rd of 3; b: ranked 1st; c: no positive, left out.
    r = ranking_metrics(
        ["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 0, 0], [0.9, 0.5, 0.1, 0.8, 0.2, 0.3], k=3
    )
    assert r["ranked_requests"] == 2
    assert r["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1) / 2)
    assert set(r) == {"ndcg@3", "ranked_requests"}  # no recall@k: it cannot fail on a page
    # Tied scores keep the input order.
    tied = ranking_metrics(["a", "a"], [0, 1], [0.5, 0.5], k=1)
    assert tied["ndcg@1"] == 0.0
    empty = ranking_metrics(["a"], [0], [0.5])
    assert empty["ranked_requests"] == 0 and math.isnan(empty["ndcg@10"])


def _case(case_id, target_score, others):
    """One case: the target first, then the sampled candidates."""
    n = 1 + len(others)
    return [case_id] * n, [1] + [0] * len(others), [target_score, *others]


def _cases(*cases):
    ids, y, s = [], [], []
    for c in cases:
        ids += c[0]
        y += c[1]
        s += c[2]
    return ids, y, s


def test_sampled_ranking_hand_made_cases():
    ids, y, s = _cases(
        _case("top", 0.9, [0.1] * 99),  # rank 1
        _case("third", 0.5, [0.9, 0.8] + [0.1] * 97),  # rank 3
        _case("tenth", 0.5, [0.9] * 9 + [0.1] * 90),  # rank 10: still a hit
        _case("eleventh", 0.5, [0.9] * 10 + [0.1] * 89),  # rank 11: a miss
    )
    r = sampled_ranking(ids, y, s, k=10)
    assert list(r.case_ids) == ["top", "third", "tenth", "eleventh"]
    np.testing.assert_allclose(r.rank, [1, 3, 10, 11])
    np.testing.assert_allclose(r.hit, [1, 1, 1, 0])
    np.testing.assert_allclose(r.ndcg, [1, 1 / math.log2(4), 1 / math.log2(11), 0])
    means = r.means()
    assert means == {
        "hr@10": 0.75,
        "ndcg@10": pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 4),
        "cases": 4,
    }
    np.testing.assert_allclose(r.per_case("hr@10"), r.hit)
    with pytest.raises(ValueError, match="unknown ranking metric 'recall@10'"):
        r.per_case("recall@10")
    # The rows of a case need not be together, nor the target first.
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = sampled_ranking(
        np.asarray(ids)[shuffled], np.asarray(y)[shuffled], np.asarray(s)[shuffled]
    )
    np.testing.assert_allclose(again.hit, [1, 1, 1, 0])


def test_sampled_ranking_ties_never_favour_the_target():
    # The target ties with every candidate: a constant scorer is exactly as good as random,
    # HR@10 = 10 / 100, wherever the target sits in the input.
    for target_first in (True, False):
        ids, y, s = ["c"] * 100, [0] * 100, [0.5] * 100
        y[0 if target_first else 99] = 1
        r = sampled_ranking(ids, y, s, k=10)
        assert r.hit[0] == pytest.approx(0.1)
        assert r.rank[0] == pytest.approx(50.5)
        discounts = 1 / np.log2(np.arange(1, 11) + 1)
        assert r.ndcg[0] == pytest.approx(discounts.sum() / 100)
    # Two higher and a tie with 9 others (places 3..12 equally likely): 8 of 10 are hits.
    ids, y, s = _cases(_case("t", 0.5, [0.9, 0.8] + [0.5] * 9 + [0.1] * 88))
    r = sampled_ranking(ids, y, s, k=10)
    assert r.hit[0] == pytest.approx(0.8)
    assert r.ndcg[0] == pytest.approx(sum(1 / math.log2(p + 1) for p in range(3, 11)) / 10)
    assert r.rank[0] == pytest.approx(3 + 9 / 2)


def test_sampled_ranking_nan_target_is_a_miss_and_bad_cases_are_left_out():
    ids, y, s = _cases(
        _case("nan", float("nan"), [0.1] * 20),
        _case("ok", 0.9, [0.1] * 20),
    )
    ids += ["none", "none", "two", "two", "two"]  # no target; two targets: not cases
    y += [0, 0, 1, 1, 0]
    s += [0.3, 0.2, 0.9, 0.8, 0.1]
    r = sampled_ranking(ids, y, s)
    assert list(r.case_ids) == ["nan", "ok"]
    np.testing.assert_allclose(r.hit, [0, 1])
    empty = sampled_ranking([], [], [])
    assert empty.means()["cases"] == 0 and math.isnan(empty.means()["hr@10"])


def _two_rankers(effect: float, cases: int = 3000, users: int = 1000, seed: int = 1):
    """Per-case NDCG-like values of two rankers: b = a + effect + noise, several cases
    per user."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, cases)
    a = rng.random(cases) * 0.6
    b = a + effect + rng.normal(0, 0.2, cases)
    return b, a, user


def test_paired_bootstrap_a_clear_win_excludes_zero():
    b, a, user = _two_rankers(effect=0.05)
    ci = paired_bootstrap(b, a, user, samples=1000, confidence=0.9, seed=0)
    assert ci["diff"] == pytest.approx(np.mean(b - a))
    assert 0 < ci["low"] < ci["diff"] < ci["high"]
    assert ci["cases"] == 3000 and ci["users"] == len(np.unique(user))
    assert ci["confidence"] == 0.9
    reverse = paired_bootstrap(a, b, user, samples=1000, confidence=0.9, seed=0)
    assert reverse["high"] < 0


def test_paired_bootstrap_a_noisy_tie_includes_zero_and_is_seeded():
    b, a, user = _two_rankers(effect=0.0)
    ci = paired_bootstrap(b, a, user, samples=1000, confidence=0.9, seed=0)
    assert ci["low"] < 0 < ci["high"]
    assert paired_bootstrap(b, a, user, samples=1000, confidence=0.9, seed=0) == ci
    other = paired_bootstrap(b, a, user, samples=1000, confidence=0.9, seed=1)
    assert other["low"] != ci["low"]
    wider = paired_bootstrap(b, a, user, samples=1000, confidence=0.99, seed=0)
    assert wider["low"] < ci["low"] and wider["high"] > ci["high"]


def test_paired_bootstrap_resamples_users_not_cases():
    # One user holds half the cases, all won by b; the others are a tie. Resampling cases
    # would call it a clear win; over users it hinges on one user and is not credible.
    rng = np.random.default_rng(3)
    n = 400
    user = np.where(np.arange(n) < n // 2, 0, rng.integers(1, 40, n))
    a = np.zeros(n)
    b = np.where(user == 0, 0.2, rng.normal(0, 0.05, n))
    by_user = paired_bootstrap(b, a, user, samples=1000, confidence=0.9, seed=0)
    by_case = paired_bootstrap(b, a, np.arange(n), samples=1000, confidence=0.9, seed=0)
    assert by_case["low"] > 0
    assert by_user["low"] < by_case["low"] and by_user["high"] - by_user["low"] > 3 * (
        by_case["high"] - by_case["low"]
    )
    empty = paired_bootstrap([], [], [])
    assert empty["cases"] == 0 and math.isnan(empty["low"])


def test_paired_bootstrap_is_fast_enough_for_every_night():
    import time

    b, a, user = _two_rankers(effect=0.01, cases=5000, users=2000)
    started = time.perf_counter()
    paired_bootstrap(b, a, user, samples=1000, confidence=0.9, seed=0)
    assert time.perf_counter() - started < 1.0


def test_the_auc_interval_resamples_users_and_is_paired():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(300), 10)
    y = (rng.random(3000) < 0.2).astype(int)
    noise = rng.normal(size=3000)
    good, worse = y + noise, y + 2 * noise  # the same rows, one model clearly better
    same = paired_auc_bootstrap(y, good, good, users, samples=100)
    assert same["diff"] == 0 and same["low"] == same["high"] == 0  # paired: no noise at all
    better = paired_auc_bootstrap(y, good, worse, users, samples=100)
    assert better["metric"] == "auc" and better["cases"] == 3000 and better["users"] == 300
    assert 0 < better["low"] < better["diff"] < better["high"]
    tie = paired_auc_bootstrap(y, good, good + 0.01 * rng.normal(size=3000), users, samples=100)
    assert tie["low"] < 0 < tie["high"]  # a noisy tie
    assert math.isnan(paired_auc_bootstrap(np.zeros(5), good[:5], good[:5], users[:5])["diff"])
