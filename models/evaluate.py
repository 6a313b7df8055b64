"""Evaluate a candidate against the champion on the day's held-out requests.

The holdout is the ``split == "holdout"`` rows of ``examples/dt=<ds>`` (requests chosen by a
hash of their id, never trained on). Three scorers: the candidate's float Keras model, the
candidate's int8 TFLite model (what would serve) and the champion's int8 TFLite model (what
serves now). For each: AUC, log loss, calibration error (ECE), NDCG@10 and recall@10 per
request, overall and per segment: new users and new items (ids absent from the previous
``lookback_days`` of examples) and the top categories. Also the int8 model's latency
(p50/p99 to score 100 candidates on one thread) and batched throughput. The gate
(``models.gate``) decides; ``models.report`` renders the page users read.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.layout import Layout
from core.settings import GateSettings
from core.summaries import EvaluateSummary, write_summary
from models import gate, ranker
from models.metrics import expected_calibration_error, ranking_metrics, score_metrics

TOP_CATEGORIES = 3


def metric_set(df, y, p) -> dict:
    out = score_metrics(y, p)
    out["ece"] = expected_calibration_error(y, p)
    out.update(ranking_metrics(df["request_id"].to_numpy(), y, p, k=10))
    out["rows"] = int(len(y))
    out["click_rate"] = float(np.mean(y)) if len(y) else float("nan")
    return out


def seen_ids(layout: Layout, ds: str, lookback_days: int) -> tuple[set, set]:
    """User and item ids present in the examples of the ``lookback_days`` before ``ds``."""
    import pyarrow.parquet as pq

    users, items = set(), set()
    for day in [d for d in layout.processed_days("examples") if d < ds][-lookback_days:]:
        table = pq.read_table(str(layout.examples(day)), columns=["user_id", "item_id"])
        users.update(table.column("user_id").to_pylist())
        items.update(table.column("item_id").to_pylist())
    return users, items


def segments(layout: Layout, ds: str, holdout, lookback_days: int = 7) -> dict[str, np.ndarray]:
    users, items = seen_ids(layout, ds, lookback_days)
    masks = {"all": np.ones(len(holdout), dtype=bool)}
    if users or items:  # on the very first day everything is new: no segment to compare
        masks["new_users"] = ~holdout["user_id"].isin(users).to_numpy()
        masks["new_items"] = ~holdout["item_id"].isin(items).to_numpy()
    for cat in holdout["category"].value_counts().index[:TOP_CATEGORIES]:
        masks[f"category={cat}"] = (holdout["category"] == cat).to_numpy()
    return masks


def score_by_segment(holdout, y, p, masks) -> dict[str, dict]:
    return {name: metric_set(holdout[m], y[m], p[m]) for name, m in masks.items()}


def int8_latency(scorer: ranker.TFLiteScorer, x: dict, candidates: int = 100, runs: int = 300):
    """p50/p99 milliseconds to score ``candidates`` rows, and batched rows per second."""
    one = {k: v[:candidates] for k, v in x.items()}
    scorer.predict(one, batch_size=candidates)  # warm up, sizes the tensors
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        scorer.predict(one, batch_size=candidates)
        times.append((time.perf_counter() - t) * 1000)
    n = len(x["dense"])
    reps = max(1, 200_000 // n)
    t = time.perf_counter()
    for _ in range(reps):
        scorer.predict(x, batch_size=8192)
    rows_per_second = reps * n / (time.perf_counter() - t)
    return {
        "p50_ms_100_candidates": float(np.percentile(times, 50)),
        "p99_ms_100_candidates": float(np.percentile(times, 99)),
        "rows_per_second_batched": float(rows_per_second),
        "threads": 1,
    }


def evaluate_candidate(
    layout: Layout,
    ds: str,
    candidate_dir: Path,
    champion: dict | None,
    cfg: GateSettings,
    measure_latency: bool = True,
) -> dict:
    started = time.perf_counter()
    holdout = ranker.read_examples([layout.examples(ds)], "holdout")
    if holdout.empty:
        raise ValueError(f"no holdout rows in {layout.examples(ds)}: cannot evaluate")
    x, y = ranker.to_inputs(holdout), ranker.labels(holdout)
    masks = segments(layout, ds, holdout)
    int8_scorer = ranker.TFLiteScorer(candidate_dir / "int8.tflite")
    scores = {
        "candidate_float": ranker.load_ranker(candidate_dir / "model.keras")
        .predict(x, batch_size=8192, verbose=0)
        .ravel(),
        # The float TFLite of the same pruned model: int8 vs this is the quantization alone.
        "candidate_pruned_float": ranker.TFLiteScorer(candidate_dir / "float.tflite").predict(x),
        "candidate_int8": int8_scorer.predict(x),
    }
    if champion is not None:
        scores["champion_int8"] = ranker.TFLiteScorer(champion["int8_tflite"]).predict(x)
    by_model = {name: score_by_segment(holdout, y, p, masks) for name, p in scores.items()}
    candidate = {
        "float": by_model["candidate_float"]["all"],
        "pruned_float": by_model["candidate_pruned_float"]["all"],
        "int8": by_model["candidate_int8"]["all"],
    }
    champ = None
    if champion is not None:
        champ = {"version": champion["version"], "int8": by_model["champion_int8"]["all"]}
    passed, reasons = gate.decide(
        {
            "auc_int8": candidate["int8"]["auc"],
            "auc_float": candidate["pruned_float"]["auc"],
            "segments": by_model["candidate_int8"],
        },
        None
        if champ is None
        else {"auc_int8": champ["int8"]["auc"], "segments": by_model["champion_int8"]},
        cfg,
    )
    result = {
        "ds": ds,
        "holdout_rows": int(len(y)),
        "holdout_click_rate": float(y.mean()),
        "candidate": candidate,
        "champion": champ,
        "segments": by_model,
        "latency": int8_latency(int8_scorer, x) if measure_latency else None,
        "gate_passed": passed,
        "gate_reasons": reasons,
        "seconds": round(time.perf_counter() - started, 2),
    }
    from models.report import write_report

    result["report"] = str(write_report(layout, ds, result, y, scores, candidate_dir))
    return result


def evaluate_day(layout: Layout, ds: str, champion: dict | None, cfg: GateSettings) -> dict:
    """The pipeline's stage: evaluate the day's candidate (``layout.candidate_dir``) against
    ``champion``; record ``runs/dt=<ds>/evaluate.json``."""
    result = evaluate_candidate(layout, ds, layout.candidate_dir(ds), champion, cfg)
    return write_summary(layout, result, EvaluateSummary)


def champion_auc_on(layout: Layout, ds: str, champion: dict, max_rows: int = 50_000) -> float:
    """The champion's int8 AUC on (a sample of) the day's training rows: is it still good?"""
    df = ranker.read_examples([layout.examples(ds)], "train")
    if len(df) > max_rows:
        df = df.sample(n=max_rows, random_state=0)
    scores = ranker.TFLiteScorer(champion["int8_tflite"]).predict(ranker.to_inputs(df))
    return score_metrics(ranker.labels(df), scores)["auc"]
