"""Ranking metrics on plain numpy arrays (no sklearn needed at serving or in the DAG)."""

from __future__ import annotations

import numpy as np


def auc(y_true, y_score) -> float:
    """Area under the ROC curve by the rank-sum formula, with ties given average ranks.

    Returns NaN when only one class is present.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Average rank for each run of tied scores.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg_rank = first + (counts + 1) / 2.0
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(avg_rank, counts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true, y_prob, eps: float = 1e-7) -> float:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def score_metrics(y_true, y_prob) -> dict[str, float]:
    return {"auc": auc(y_true, y_prob), "log_loss": log_loss(y_true, y_prob)}
