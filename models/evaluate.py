"""Evaluate a candidate against the champion on the day's held-out data.

Two held-out sets, never trained on. The holdout requests (``split == "holdout"`` rows of
``examples/dt=<ds>``, chosen by a hash of the request id): the candidate's float Keras
model, its int8 TFLite model (what would serve) and the champion's int8 model (what serves
now) get AUC, log loss, calibration error (ECE) and NDCG@10 per request, overall and per
segment: new users and new items (ids absent from the previous ``lookback_days`` of
examples) and the top categories. The ranking cases (``ranking/dt=<ds>``: each held-out
positive among sampled candidates): sampled HR@10 and NDCG@10 of the same models, of the
popularity ranking (the cases' ``popularity`` column) and of a random one, and the paired
bootstrap intervals (over users) of candidate minus champion and minus popularity. Also the
int8 model's latency (p50/p99 to score 100 candidates on one thread) and batched
throughput. The gate (``models.gate``) decides; ``models.report`` renders the page users
read. A day without holdout rows or ranking cases is not an error: the gate fails it.

An intra-day run of a shop with impressions ranks what the shop showed instead
(:func:`impression_cases`): each held-out request of the day so far is a case, its clicked
item among the items shown with it (the popularity check), and the candidate is judged
against the champion by the AUC of the day so far's held-out impressions (a paired cluster
bootstrap over users, :func:`models.metrics.paired_auc_bootstrap`). Sampled candidates
judged the hours' candidates by what had not been shown: on a simulated trend day, every
hour after the trend lost 0.03-0.045 sampled NDCG@10 to the champion while gaining
0.012-0.017 AUC on the day's held-out impressions; NDCG@10 among the ~10 items a request
shows, on the ~100-200 held-out requests with one click, could not tell them apart.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core import features
from core.layout import Layout, shift_ds
from core.settings import GateSettings
from core.summaries import (
    EvaluateSummary,
    PreprocessSummary,
    failed_validation,
    read_summary,
    write_summary,
)
from models import gate, ranker
from models.metrics import (
    RankedCases,
    expected_calibration_error,
    paired_auc_bootstrap,
    paired_bootstrap,
    ranking_metrics,
    sampled_ranking,
    score_metrics,
)
from serving.scorer import TFLiteScorer

TOP_CATEGORIES = 3
# Seeds the bootstrap and the random reference ranker: a night's verdict is reproducible.
BOOTSTRAP_SEED = 0


def metric_set(df, y, p) -> dict:
    out = score_metrics(y, p)
    out["ece"] = expected_calibration_error(y, p) if len(y) else float("nan")
    out.update(ranking_metrics(df["request_id"].to_numpy(), y, p, k=10))
    out["rows"] = int(len(y))
    out["click_rate"] = float(np.mean(y)) if len(y) else float("nan")
    return out


def read_holdout(layout: Layout, ds: str):
    """The day's held-out request rows (an empty frame when the day has none)."""
    path = layout.examples(ds)
    if not _parquet_files(path):
        return ranker.read_examples([])
    return ranker.read_examples([path], "holdout").reset_index(drop=True)


# What evaluation reads of ranking/dt=<ds>/ (jobs.ranking writes these among the examples'
# columns): the case, the user, the label, the reference score and the model inputs.
RANKING_COLUMNS = (
    "request_id",
    "user_id",
    "item_id",
    features.LABEL,
    "popularity",
    *features.MODEL_COLUMNS,
)


def read_ranking_cases(layout: Layout, ds: str, window_days: int = 1):
    """The ranking cases (``ranking/dt=<day>``) of ``ds`` and of the processed days among the
    ``window_days - 1`` before it, days that failed validation left out: ``request_id`` is
    the case (prefixed with its day), one row of each has ``label_click == 1`` (the
    held-out positive), the others are sampled candidates; ``popularity`` is the reference
    ranker's score. Held-out requests are never trained on, so every case of the window is
    unseen by every model; a shop with a few hundred orders a day needs several days of
    them to tell two models apart. An empty frame when there is none (a first day).

    An intra-day run (:class:`core.layout.HourLayout`) judges the day so far alone: its
    held-out requests are the ones that show today's shifts (a trend from noon), and pooled
    with the days before they would be outvoted by what the night already knew."""
    import pandas as pd
    import pyarrow.parquet as pq

    if layout.hour is not None:
        window_days = 1
    days = layout.days_before("ranking", shift_ds(ds, 1), window_days)
    frames = []
    for day in days:
        if failed_validation(layout, day) or not _parquet_files(layout.ranking(day)):
            continue
        frame = pq.read_table(str(layout.ranking(day)), columns=list(RANKING_COLUMNS))
        frame = frame.to_pandas()
        frame["request_id"] = day + "/" + frame["request_id"]
        frames.append(frame)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in RANKING_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def impression_cases(layout: Layout, ds: str, holdout):
    """The held-out requests of ``ds`` as ranking cases (the :func:`read_ranking_cases`
    columns): a request's shown items are its candidates and its one clicked item the
    target (requests with no click, or several, are left out by the ranking); ``popularity``
    counts each item's clicks in the day's training rows (the day so far's trend)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(
        str(layout.examples(ds)), columns=["item_id", features.LABEL, "split"]
    ).to_pandas()
    clicked = rows[(rows["split"] == "train") & (rows[features.LABEL] == 1)]
    counts = clicked["item_id"].value_counts()
    cases = holdout.assign(popularity=holdout["item_id"].map(counts).fillna(0.0))
    cases["request_id"] = ds + "/" + cases["request_id"]
    return cases[list(RANKING_COLUMNS)].reset_index(drop=True)


def _parquet_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return [p for p in path.rglob("*.parquet") if not p.name.startswith(("_", "."))]


def _predict(score, x: dict) -> np.ndarray:
    """``score(x)`` as a flat float array; no rows, no call (Keras refuses empty input)."""
    if len(x["dense"]) == 0:
        return np.empty(0, dtype=np.float32)
    return np.asarray(score(x)).ravel()


def case_users(cases, case_ids) -> np.ndarray:
    """The user of each case, in the order of ``case_ids`` (the user of its positive row)."""
    positives = cases[cases[features.LABEL] == 1].drop_duplicates("request_id")
    return positives.set_index("request_id")["user_id"].reindex(case_ids).to_numpy()


def compare_rankers(
    a: RankedCases, b: RankedCases, users, cfg: GateSettings, metric: str | None = None
) -> dict:
    """The paired bootstrap interval of ``a`` minus ``b`` (same cases) on ``metric``
    (``[gate] ranking_metric``), resampling users."""
    metric = metric or cfg.ranking_metric
    if not np.array_equal(a.case_ids, b.case_ids):
        raise ValueError("the two rankers were scored on different cases")
    ci = paired_bootstrap(
        a.per_case(metric),
        b.per_case(metric),
        users,
        samples=cfg.bootstrap_samples,
        confidence=cfg.confidence,
        seed=BOOTSTRAP_SEED,
    )
    return {"metric": metric, **ci}


def rank_cases(cases, scores: dict[str, np.ndarray]) -> dict[str, RankedCases]:
    """Each ranker's per-case results; ``popularity`` and ``random`` are added here."""
    scores = {
        **scores,
        "popularity": cases["popularity"].to_numpy(np.float64),
        # One score for all: ties are averaged, so this is exactly what a random ranking
        # scores in expectation (HR@10 = 10 / candidates), not one noisy draw of it.
        "random": np.zeros(len(cases)),
    }
    ids, y = cases["request_id"].to_numpy(), cases[features.LABEL].to_numpy()
    return {name: sampled_ranking(ids, y, s, k=10) for name, s in scores.items()}


def champion_ranking_on(cases, scorer: TFLiteScorer, metric: str) -> dict[str, float] | None:
    """The champion's (its int8 ``scorer``) and popularity's ``metric`` on ``cases``
    (:func:`read_ranking_cases`): does the serving model still rank better than popularity?
    None without cases."""
    if cases.empty:
        return None
    ranked = rank_cases(cases, {"champion": _predict(scorer.predict, ranker.to_inputs(cases))})
    champ, pop = ranked["champion"], ranked["popularity"]
    return {
        "metric": metric,
        "champion": float(champ.per_case(metric).mean()) if len(champ.case_ids) else None,
        "popularity": float(pop.per_case(metric).mean()) if len(pop.case_ids) else None,
        "cases": len(champ.case_ids),
    }


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


def int8_latency(scorer: TFLiteScorer, x: dict, candidates: int = 100, runs: int = 300):
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
    holdout = read_holdout(layout, ds)
    pre = read_summary(layout, ds, PreprocessSummary)
    shown = layout.hour is not None and pre is not None and pre.labels_from == "impressions"
    if shown:
        cases = impression_cases(layout, ds, holdout)
    else:
        cases = read_ranking_cases(layout, ds, cfg.ranking_window_days)
    x, y = ranker.to_inputs(holdout), ranker.labels(holdout)
    x_cases = x if shown else ranker.to_inputs(cases)  # impression cases: the holdout rows
    masks = segments(layout, ds, holdout)
    int8_scorer = TFLiteScorer(candidate_dir / "int8.tflite")
    keras_model = ranker.load_ranker(candidate_dir / "model.keras")
    scorers = {
        "candidate_float": lambda v: keras_model.predict(v, batch_size=8192, verbose=0),
        # The float TFLite of the same pruned model: int8 vs this is the quantization alone.
        "candidate_pruned_float": TFLiteScorer(candidate_dir / "float.tflite").predict,
        "candidate_int8": int8_scorer.predict,
    }
    if champion is not None:
        scorers["champion_int8"] = TFLiteScorer(champion["int8_tflite"]).predict
    scores = {name: _predict(score, x) for name, score in scorers.items()}
    by_model = {name: score_by_segment(holdout, y, p, masks) for name, p in scores.items()}
    candidate = {
        "float": by_model["candidate_float"]["all"],
        "pruned_float": by_model["candidate_pruned_float"]["all"],
        "int8": by_model["candidate_int8"]["all"],
    }
    champ = None
    if champion is not None:
        champ = {"version": champion["version"], "int8": by_model["champion_int8"]["all"]}

    case_scores = {
        name: scores[name] if shown else _predict(scorers[name], x_cases)
        for name in ("candidate_int8", "candidate_float", "champion_int8")
        if name in scorers
    }
    ranked = rank_cases(cases, case_scores)
    users = case_users(cases, ranked["candidate_int8"].case_ids)
    n_cases = len(ranked["candidate_int8"].case_ids)
    vs_popularity = compare_rankers(ranked["candidate_int8"], ranked["popularity"], users, cfg)
    vs_champion = None
    if champion is not None and shown:  # every shown item ranked: AUC, per row, is the test
        vs_champion = paired_auc_bootstrap(
            y, scores["candidate_int8"], scores["champion_int8"], holdout["user_id"],
            confidence=cfg.confidence, seed=BOOTSTRAP_SEED,
        )  # fmt: skip
    elif champion is not None:
        vs_champion = compare_rankers(ranked["candidate_int8"], ranked["champion_int8"], users, cfg)

    passed, reasons = gate.decide(
        {
            "auc_int8": candidate["int8"]["auc"],
            "auc_float": candidate["pruned_float"]["auc"],
            "holdout_rows": int(len(y)),
            "segments": by_model["candidate_int8"],
            "ranking_cases": n_cases,
            "vs_popularity": vs_popularity,
            "vs_champion": vs_champion,
        },
        None
        if champ is None
        else {"auc_int8": champ["int8"]["auc"], "segments": by_model["champion_int8"]},
        cfg,
    )
    timing_rows = x if len(y) else x_cases
    result = {
        "ds": ds,
        "holdout_rows": int(len(y)),
        "holdout_click_rate": float(y.mean()) if len(y) else float("nan"),
        "candidate": candidate,
        "champion": champ,
        "segments": by_model,
        "ranking_cases": n_cases,
        "ranking_cases_from": "impressions" if shown else "sampled",
        "ranking": {name: r.means() for name, r in ranked.items()},
        "ranking_vs_champion": vs_champion,
        "ranking_vs_popularity": vs_popularity,
        "latency": (
            int8_latency(int8_scorer, timing_rows)
            if measure_latency and len(timing_rows["dense"])
            else None
        ),
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
