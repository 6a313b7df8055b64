"""Evaluation metrics on numpy arrays: AUC and log loss from scikit-learn; calibration,
per-request NDCG, sampled-candidate ranking metrics per case and a paired bootstrap over
users here (scikit-learn has no equivalent, see each). Used by evaluation, the gate's
inputs, reports and benchmarks; serving does not import it."""

from __future__ import annotations

from dataclasses import dataclass

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
    """Mean NDCG@k over requests with at least one positive (impression holdouts).

    Not sklearn's ndcg_score: it wants equal-sized requests in one matrix, rejects requests
    of one candidate and averages tied scores, where here ties keep the input order.
    (No recall@k: a page shows at most k items, so on impression logs it is always 1.)
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
        return {f"ndcg@{k}": float("nan"), "ranked_requests": 0}
    df = df.sort_values(["r", "s"], ascending=[True, False], kind="mergesort")
    df["rank"] = df.groupby("r").cumcount() + 1
    df["gain"] = np.where(df["rank"] <= k, df["y"] / np.log2(df["rank"] + 1), 0.0)
    dcg = df.groupby("r")["gain"].sum()
    ideal = df.sort_values(["r", "y"], ascending=[True, False], kind="mergesort")
    ideal_rank = ideal.groupby("r").cumcount() + 1
    ideal_gain = np.where(ideal_rank <= k, ideal["y"] / np.log2(ideal_rank + 1), 0.0)
    idcg = pd.Series(ideal_gain, index=ideal.index).groupby(ideal["r"]).sum()
    return {f"ndcg@{k}": float((dcg / idcg).mean()), "ranked_requests": int(len(dcg))}


RANKING_METRICS = ("hr@10", "ndcg@10")


@dataclass(frozen=True)
class RankedCases:
    """Per-case results of one ranker on sampled-candidate cases (one target per case).

    ``rank`` is the target's expected rank among its case's candidates, ``hit`` and
    ``ndcg`` its expected HR@k and NDCG@k; all in the order of ``case_ids``.
    """

    case_ids: np.ndarray
    rank: np.ndarray
    hit: np.ndarray
    ndcg: np.ndarray
    k: int = 10

    def per_case(self, metric: str) -> np.ndarray:
        """The per-case values of ``hr@k`` or ``ndcg@k``."""
        values = {f"hr@{self.k}": self.hit, f"ndcg@{self.k}": self.ndcg}
        if metric not in values:
            raise ValueError(f"unknown ranking metric {metric!r}; known: {sorted(values)}")
        return values[metric]

    def means(self) -> dict:
        n = len(self.case_ids)
        mean = (lambda v: float(v.mean())) if n else (lambda v: float("nan"))
        return {f"hr@{self.k}": mean(self.hit), f"ndcg@{self.k}": mean(self.ndcg), "cases": n}


def sampled_ranking(case_ids, y_true, y_score, k: int = 10) -> RankedCases:
    """HR@k and NDCG@k of each case: a held-out target (label 1) among sampled candidates.

    rank = 1 + (candidates scoring strictly higher) + the target's place among the
    candidates it ties with. Ties are averaged: the target takes each place in its tie
    group with equal probability (a random tie-break, in expectation), so HR@k and
    NDCG@k are expectations over those places. A ranker that cannot tell the target from
    the others (a constant score, a quantized output that saturates, a popularity count of
    0 for all) thus scores as random (HR@k = k / candidates), never better; and the
    tie-break does not depend on the input order. NDCG@k = 1 / log2(rank + 1) if
    rank <= k else 0 (one relevant item: the ideal DCG is 1). A NaN target score is a miss.
    Only cases with exactly one target count; the others are left out.
    """
    import pandas as pd

    y = np.asarray(y_true).ravel() == 1
    s = np.asarray(y_score, dtype=np.float64).ravel()
    codes, uniques = pd.factorize(np.asarray(case_ids).ravel(), use_na_sentinel=False)
    n = len(uniques)
    targets = np.bincount(codes[y], minlength=n)
    target = np.full(n, np.nan)
    target[codes[y]] = s[y]
    t = target[codes]
    higher = np.bincount(codes, weights=~y & (s > t), minlength=n)
    ties = np.bincount(codes, weights=~y & (s == t), minlength=n)
    # The target takes places first..last (1-based) with equal probability.
    first, last = higher + 1, higher + ties + 1
    places = ties + 1
    discount = np.concatenate([[0.0], np.cumsum(1 / np.log2(np.arange(1, k + 1) + 1))])
    top = np.minimum(last, k)
    inside = np.clip(top - first + 1, 0, None)
    hit = inside / places
    low = np.clip(first - 1, 0, k).astype(int)
    ndcg = np.where(inside > 0, discount[top.astype(int)] - discount[low], 0.0) / places
    rank = higher + 1 + ties / 2
    missed = np.isnan(target)
    hit[missed], ndcg[missed] = 0.0, 0.0
    rank[missed] = np.bincount(codes, minlength=n)[missed]
    keep = targets == 1
    return RankedCases(uniques[keep], rank[keep], hit[keep], ndcg[keep], k)


def paired_bootstrap(
    a, b, groups, samples: int = 1000, confidence: float = 0.9, seed: int = 0
) -> dict:
    """Mean of ``a - b`` over cases and its two-sided percentile confidence interval.

    ``a`` and ``b`` are per-case values of two rankers on the same cases, ``groups`` the
    case's user: cases of one user are not independent, so users are resampled with
    replacement (a cluster bootstrap), ``samples`` times, and each resample's difference is
    the mean over the cases of the users drawn. Vectorised; seeded, so a night's verdict is
    reproducible.
    """
    import pandas as pd

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    codes, users = pd.factorize(np.asarray(groups).ravel(), use_na_sentinel=False)
    out = {"confidence": confidence, "cases": int(len(d)), "users": int(len(users))}
    if len(d) == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), **out}
    per_user = np.bincount(codes, weights=d)
    count = np.bincount(codes).astype(np.float64)
    rng = np.random.default_rng(seed)
    u = len(users)
    stats = np.empty(samples)
    block = max(1, 4_000_000 // u)  # bounded memory: at most ~32 MB of indices at once
    for start in range(0, samples, block):
        stop = min(start + block, samples)
        idx = rng.integers(0, u, size=(stop - start, u))
        stats[start:stop] = per_user[idx].sum(axis=1) / count[idx].sum(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return {"diff": float(d.mean()), "low": float(low), "high": float(high), **out}


def paired_auc_bootstrap(
    y_true, a, b, groups, samples: int = 200, confidence: float = 0.9, seed: int = 0
) -> dict:
    """AUC of scores ``a`` minus AUC of ``b`` on the same rows, and its two-sided percentile
    confidence interval from a cluster bootstrap over ``groups`` (users: their rows are
    resampled together, ``samples`` times; a resample with one class only is skipped).
    The AUC is not a mean over cases, so :func:`paired_bootstrap` does not apply; same
    keys, with ``cases`` the rows."""
    import pandas as pd

    y = np.asarray(y_true).ravel()
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    codes, users = pd.factorize(np.asarray(groups).ravel(), use_na_sentinel=False)
    out = {"metric": "auc", "confidence": confidence, "cases": int(len(y)), "users": len(users)}
    diff = auc(y, a) - auc(y, b) if len(y) else float("nan")
    if diff != diff:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), **out}
    rows_of = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(samples):
        idx = np.concatenate([rows_of[u] for u in rng.integers(0, len(users), len(users))])
        if 0 < y[idx].sum() < len(idx):
            stats.append(auc(y[idx], a[idx]) - auc(y[idx], b[idx]))
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail]) if stats else (float("nan"),) * 2
    return {"diff": float(diff), "low": float(low), "high": float(high), **out}
