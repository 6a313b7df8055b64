"""Evaluation metrics on numpy arrays: AUC and log loss from scikit-learn, calibration and
per-request ranking metrics here (scikit-learn has no equivalent, see each). Used by
evaluation, reports and benchmarks; serving does not import it."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk


def auc(y_true, y_score) -> float:
    """Area under the ROC curve (ties count one half). NaN when only one class is present
    or a score is NaN (a broken model then fails the gate instead of raising)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if np.unique(y).size < 2 or np.isnan(s).any():
        return float("nan")
    return float(sk.roc_auc_score(y, s))


def log_loss(y_true, y_prob, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]; NaN on a NaN or
    on no rows (an empty segment of the holdout)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), eps, 1 - eps)
    if len(y) == 0 or np.isnan(p).any():
        return float("nan")
    return float(sk.log_loss(y, p, labels=[0, 1]))


def score_metrics(y_true, y_prob) -> dict[str, float]:
    return {"auc": auc(y_true, y_prob), "log_loss": log_loss(y_true, y_prob)}


def expected_calibration_error(y_true, y_prob, bins: int = 10) -> float:
    """ECE: mean |observed rate - predicted probability| over equal-width bins, by weight."""
    curve = calibration_curve(y_true, y_prob, bins)
    n = sum(c["n"] for c in curve)
    return float(sum(c["n"] * abs(c["observed"] - c["predicted"]) for c in curve) / max(n, 1))


# Not sklearn.calibration.calibration_curve: it returns no bin sizes (which the ECE weights
# by and the report prints) and scikit-learn has no ECE.
def calibration_curve(y_true, y_prob, bins: int = 10) -> list[dict]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            out.append(
                {
                    "bin": b,
                    "n": int(mask.sum()),
                    "predicted": float(p[mask].mean()),
                    "observed": float(y[mask].mean()),
                }
            )
    return out


def ranking_metrics(request_ids, y_true, y_score, k: int = 10) -> dict[str, float]:
    """Mean NDCG@k and recall@k over requests with at least one positive.

    Not sklearn's ndcg_score: it wants equal-sized requests in one matrix, rejects requests
    of one candidate and averages tied scores, where here ties keep the input order.
    """
    import pandas as pd

    df = pd.DataFrame(
        {
            "r": np.asarray(request_ids),
            "y": np.asarray(y_true, dtype=np.float64),
            "s": np.asarray(y_score, dtype=np.float64),
        }
    )
    df = df[df.groupby("r")["y"].transform("sum") > 0]
    if df.empty:
        return {f"ndcg@{k}": float("nan"), f"recall@{k}": float("nan"), "ranked_requests": 0}
    df = df.sort_values(["r", "s"], ascending=[True, False], kind="mergesort")
    df["rank"] = df.groupby("r").cumcount() + 1
    df["gain"] = np.where(df["rank"] <= k, df["y"] / np.log2(df["rank"] + 1), 0.0)
    dcg = df.groupby("r")["gain"].sum()
    ideal = df.sort_values(["r", "y"], ascending=[True, False], kind="mergesort")
    ideal_rank = ideal.groupby("r").cumcount() + 1
    ideal_gain = np.where(ideal_rank <= k, ideal["y"] / np.log2(ideal_rank + 1), 0.0)
    idcg = pd.Series(ideal_gain, index=ideal.index).groupby(ideal["r"]).sum()
    hits = df[df["rank"] <= k].groupby("r")["y"].sum()
    recall = hits.reindex(dcg.index, fill_value=0) / df.groupby("r")["y"].sum()
    return {
        f"ndcg@{k}": float((dcg / idcg).mean()),
        f"recall@{k}": float(recall.mean()),
        "ranked_requests": int(len(dcg)),
    }
