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
    ranking_metrics,
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
    assert r["recall@3"] == 1.0
    # Tied scores keep the input order.
    tied = ranking_metrics(["a", "a"], [0, 1], [0.5, 0.5], k=1)
    assert tied["ndcg@1"] == 0.0 and tied["recall@1"] == 0.0
    empty = ranking_metrics(["a"], [0], [0.5])
    assert empty["ranked_requests"] == 0 and math.isnan(empty["ndcg@10"])
