"""Ablation: what each part of the ranker adds, on the real log and on the simulator.

Writes ``<out>/ablation.json``. Run it after ``make bench-real`` and ``make bench-freshness``
(it reads the worlds they leave under ``<out>``)::

    python -m benchmarks.ablation --out var/bench [--nights 2] [--sim-train-days 7] \
        [--variants full,no_history,...] [--skip-real] [--skip-simulator] \
        [--real-world DIR] [--sim-world DIR]

Every variant is trained from scratch, with the same seed and rows, as float Keras models
(the int8 step is judged elsewhere: the pipeline's gate and ``bench-compression``):

* real log (``<out>/real-world``): on every day up to night D (as the benchmark's full
  retrain), scored on the benchmark's own next-day cases of D + 1 (``bench_cases``: each
  purchase of a known user among 100 candidates), HR@10 / NDCG@10 beside popularity's;
* simulator (``<out>/freshness-world``): on the ``sim_train_days`` days up to D, scored on
  D + 1's impressions, AUC beside the oracle's (the simulator's true click probability).

D is each of the last ``nights`` nights that have cases (real) or a next day (simulator).
The variants (:data:`VARIANTS`) switch one part off at a time, so each row of the table is
"the shipped model without X": a part that helps shows as a loss in its row.

Each world's ``int8`` entry gathers, from every ``runs/dt=*/evaluate.json`` the benchmark's
nights wrote, the int8 candidate's AUC drop against its pruned float model and its p99
latency for 100 candidates (the issue's int8 and latency targets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from core import features
from core.layout import Layout
from core.settings import settings_under

log = logging.getLogger(__name__)


# Every id input: the hashed ids and the history's item buckets.
ID_INPUTS = (*features.ID_COLUMNS, features.HISTORY_BUCKETS)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model of the ablation: the shipped model with some parts off."""

    description: str
    history: bool = True  # the user's history pooled through the item table, user.item term
    text: bool = True  # title and query words, query.title term
    zeroed: tuple[str, ...] = ()  # inputs fed as 0 (an id off: one row for every value)
    embedding_dropout: float | None = None  # None: the settings' rate
    epochs: int | None = None  # None: the settings' retrain epochs


VARIANTS: dict[str, Variant] = {
    "full": Variant("the shipped model: ids, history, user.item, words, dense features"),
    "no_history": Variant("without the user history and the user.item term", history=False),
    "no_text": Variant("without the title and query words", text=False),
    "no_history_no_text": Variant("ids and dense features (the stop-20 model)", False, False),
    "dense_only": Variant(
        "dense features only (every id, history, word off)", False, False, ID_INPUTS
    ),
    "no_embedding_dropout": Variant(
        "without the dropout on the id embeddings", embedding_dropout=0
    ),
    "one_epoch": Variant("the shipped model, one epoch instead of the retrain's", epochs=1),
}


def build(variant: Variant, cfg):
    """A new, compiled model of ``variant`` with the retrain's settings (``cfg``)."""
    from models import ranker

    options = {"history": variant.history, "text": variant.text}
    if variant.embedding_dropout is not None:
        options["embedding_dropout"] = variant.embedding_dropout
    model = ranker.build_from_settings(cfg, **options)
    return ranker.compile_ranker(model, cfg.learning_rate)


def train_variant(variant: Variant, x: dict, y: np.ndarray, cfg):
    """A from-scratch model of ``variant`` fitted on ``(x, y)`` with the retrain's settings."""
    model = build(variant, cfg)
    model.fit(
        masked(variant, x),
        y,
        batch_size=cfg.batch_size,
        epochs=variant.epochs or cfg.retrain_epochs,
        shuffle=True,
        verbose=0,
    )
    return model


def masked(variant: Variant, x: dict) -> dict:
    """``x`` as the variant sees it: its ``zeroed`` inputs all 0."""
    if not variant.zeroed:
        return x
    return {col: np.zeros_like(v) if col in variant.zeroed else v for col, v in x.items()}


def training_arrays(layout: Layout, ds: str, days: int, cfg):
    """Inputs and labels of every ``train`` row of the ``days`` days up to ``ds``."""
    from models.fit import read_training_arrays

    return read_training_arrays(
        layout, ds, "retrain", dataclasses.replace(cfg, retrain_history_days=days)
    )


def train_and_score(variants: dict[str, Variant], x, y, x_scored, cfg, where: str):
    """Each variant trained on ``(x, y)`` and its scores of ``x_scored``; also the training
    seconds of each, rounded. ``where`` labels the progress lines."""
    scores, seconds = {}, {}
    for name, variant in variants.items():
        started = time.perf_counter()
        model = train_variant(variant, x, y, cfg)
        seconds[name] = round(time.perf_counter() - started, 1)
        scores[name] = model.predict(masked(variant, x_scored), batch_size=8192, verbose=0).ravel()
        log.info("%s %s: trained in %.1f s", where, name, seconds[name])
    return scores, seconds


def ablate_real(world: Path, nights: int, variants: dict[str, Variant], train_days: int) -> dict:
    """HR@10 / NDCG@10 of each variant on the real benchmark's last ``nights`` case days."""
    import pandas as pd

    from models import ranker
    from models.evaluate import rank_cases

    settings = settings_under(world)
    layout = Layout(settings.data_root)
    case_days = sorted(p.name.removeprefix("dt=") for p in (world / "bench_cases").glob("dt=*"))
    if not case_days:
        raise FileNotFoundError(f"{world}/bench_cases: no cases; run make bench-real first")
    per_night = []
    for scored_on in case_days[-nights:]:
        ds = max(d for d in layout.processed_days("examples") if d < scored_on)
        cases = pd.read_parquet(world / "bench_cases" / f"dt={scored_on}")
        x, y, used = training_arrays(layout, ds, train_days, settings.train)
        xc = ranker.to_inputs(cases)
        scores, seconds = train_and_score(variants, x, y, xc, settings.train, f"real {ds}")
        ranked = rank_cases(cases, scores)
        night = {"ds": ds, "scored_on": scored_on, "train_days": len(used), "rows": len(y)}
        night["cases"] = ranked["popularity"].means()["cases"]
        for key, metric in (("hr_at_10", "hr@10"), ("ndcg_at_10", "ndcg@10")):
            night[key] = {name: round(r.means()[metric], 4) for name, r in ranked.items()}
        night["train_seconds"] = seconds
        per_night.append(night)
        log.info("real %s: HR@10 %s", ds, night["hr_at_10"])
    return {
        "per_night": per_night,
        **means(per_night, ("hr_at_10", "ndcg_at_10")),
        "int8": int8_figures(world),
    }


def ablate_simulator(
    world: Path, nights: int, variants: dict[str, Variant], train_days: int
) -> dict:
    """AUC of each variant on the simulator's next-day impressions, beside the oracle's."""
    from sklearn.metrics import roc_auc_score

    from benchmarks.freshness import eval_rows
    from models import ranker

    settings = settings_under(world)
    layout = Layout(settings.data_root)
    days = layout.processed_days("examples")
    if len(days) < 2:
        raise FileNotFoundError(f"{world}: no simulated days; run make bench-freshness first")
    per_night = []
    for ds, scored_on in list(zip(days[:-1], days[1:], strict=True))[-nights:]:
        rows, _ = eval_rows(layout, scored_on, "all")
        truth, labels = rows["p_click"].to_numpy(), rows[features.LABEL].to_numpy()
        x, y, used = training_arrays(layout, ds, train_days, settings.train)
        xe = ranker.to_inputs(rows)
        scores, seconds = train_and_score(variants, x, y, xe, settings.train, f"simulator {ds}")
        auc = {"oracle": round(roc_auc_score(labels, truth), 4)}
        auc |= {name: round(roc_auc_score(labels, s), 4) for name, s in scores.items()}
        log.info("simulator %s: AUC %s", ds, auc)
        gap = {name: round(auc["oracle"] - value, 4) for name, value in auc.items()}
        per_night.append(
            {
                "ds": ds,
                "scored_on": scored_on,
                "train_days": len(used),
                "rows": len(y),
                "impressions": len(rows),
                "auc": auc,
                "gap_oracle": gap,
                "train_seconds": seconds,
            }
        )
    return {
        "per_night": per_night,
        **means(per_night, ("auc", "gap_oracle")),
        "int8": int8_figures(world),
    }


def int8_figures(world: Path) -> dict:
    """Over the nights the benchmark ran in ``world``, from each night's ``evaluate.json``:
    the int8 candidate's holdout AUC against its pruned float model's, and its p99 latency
    for 100 candidates (one thread). The issue's targets: <= 0.002 AUC, <= 2 ms."""
    gaps, p99 = [], []
    for path in sorted((world / "data" / "runs").glob("dt=*/evaluate.json")):
        result = json.loads(path.read_text())
        candidate = result.get("candidate") or {}
        if "int8" in candidate and "pruned_float" in candidate:
            gaps.append(candidate["pruned_float"]["auc"] - candidate["int8"]["auc"])
        if (latency := result.get("latency")) and latency.get("p99_ms_100_candidates"):
            p99.append(latency["p99_ms_100_candidates"])
    if not gaps:
        return {"nights": 0}
    return {
        "nights": len(gaps),
        "max_auc_drop_int8_vs_pruned_float": round(max(gaps), 4),
        "mean_auc_drop_int8_vs_pruned_float": round(float(np.mean(gaps)), 4),
        "max_p99_ms_100_candidates": round(max(p99), 3) if p99 else None,
    }


def means(per_night: list[dict], keys) -> dict:
    """Per key, each ranker's mean over the nights."""
    out = {}
    for key in keys:
        names = per_night[0][key]
        out[key] = {
            n: round(float(np.mean([night[key][n] for night in per_night])), 4) for n in names
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="var/bench", help="where the benchmarks wrote")
    parser.add_argument("--nights", type=int, default=2)
    parser.add_argument("--real-train-days", type=int, default=10_000, help="default: all")
    parser.add_argument("--sim-train-days", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--real-world", help="default: <out>/real-world")
    parser.add_argument("--sim-world", help="default: <out>/freshness-world")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-simulator", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    out = Path(args.out)
    started = time.perf_counter()
    result = {
        "variants": {name: dataclasses.asdict(v) for name, v in variants.items()},
        "models": "float Keras, from scratch, the retrain's settings and seed",
    }
    if not args.skip_real:
        world = Path(args.real_world or out / "real-world")
        result["real"] = ablate_real(world, args.nights, variants, args.real_train_days)
    if not args.skip_simulator:
        world = Path(args.sim_world or out / "freshness-world")
        result["simulator"] = ablate_simulator(world, args.nights, variants, args.sim_train_days)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    path = out / "ablation.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("real", "simulator") if k in result}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
