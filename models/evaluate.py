"""Evaluate a candidate against the champion on the day's held-out requests.

The holdout is the ``split == "holdout"`` rows of ``examples/dt=<ds>`` (requests chosen by a
hash of their id, never trained on). Scores: the candidate's float Keras model, the
candidate's int8 TFLite model (what would serve), and the champion's int8 TFLite model
(what serves now). Metrics are AUC and log loss; the gate (``models.gate``) decides.
"""

from __future__ import annotations

import time
from pathlib import Path

from jobs.layout import Layout, write_json
from jobs.settings import GateSettings
from models import gate, ranker
from models.metrics import score_metrics


def evaluate_candidate(
    layout: Layout, ds: str, candidate_dir: Path, champion: dict | None, cfg: GateSettings
) -> dict:
    started = time.perf_counter()
    holdout = ranker.read_examples([layout.examples(ds)], "holdout")
    if holdout.empty:
        raise ValueError(f"no holdout rows in {layout.examples(ds)}: cannot evaluate")
    x, y = ranker.to_inputs(holdout), ranker.labels(holdout)
    float_scores = ranker.load_ranker(candidate_dir / "model.keras").predict(
        x, batch_size=8192, verbose=0
    )
    candidate = {
        "float": score_metrics(y, float_scores),
        "int8": score_metrics(y, ranker.TFLiteScorer(candidate_dir / "int8.tflite").predict(x)),
    }
    champ = None
    if champion is not None:
        champ_scores = ranker.TFLiteScorer(champion["int8_tflite"]).predict(x)
        champ = {"version": champion["version"], "int8": score_metrics(y, champ_scores)}
    passed, reasons = gate.decide(
        {"auc_int8": candidate["int8"]["auc"], "auc_float": candidate["float"]["auc"]},
        None if champ is None else {"auc_int8": champ["int8"]["auc"]},
        cfg,
    )
    result = {
        "ds": ds,
        "holdout_rows": int(len(y)),
        "holdout_click_rate": float(y.mean()),
        "candidate": candidate,
        "champion": champ,
        "gate_passed": passed,
        "gate_reasons": reasons,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(candidate_dir / "eval.json", result)
    return result


def champion_auc_on(layout: Layout, ds: str, champion: dict, max_rows: int = 50_000) -> float:
    """The champion's int8 AUC on (a sample of) the day's training rows: is it still good?"""
    df = ranker.read_examples([layout.examples(ds)], "train")
    if len(df) > max_rows:
        df = df.sample(n=max_rows, random_state=0)
    scores = ranker.TFLiteScorer(champion["int8_tflite"]).predict(ranker.to_inputs(df))
    return score_metrics(ranker.labels(df), scores)["auc"]
