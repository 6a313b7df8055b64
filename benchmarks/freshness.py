"""Freshness benchmark: does the nightly pipeline keep up with a drifting shop?

Writes ``<out>/freshness.json`` and ``<out>/freshness.png``. Run it with::

    python -m benchmarks.freshness --out var/bench [--quick] [--scale NAME] \
        [--bootstrap-days 7] [--nightly-days 14]

It simulates a drifting world (:mod:`ops.simulate`, clean deliveries) in a throwaway data
root and MLflow store under ``<out>/freshness-world`` and processes the days one by one, as
they come (every day is preprocessed with Spark by :func:`pipeline.nightly.preprocess`):

* bootstrap: the first ``bootstrap_days`` days; on the last of them the real pipeline runs
  (:func:`pipeline.nightly.run_all` with strategy ``retrain`` and ``retrain_history_days`` >=
  ``bootstrap_days``), so the first champion is trained from scratch on all of them and is
  registered and promoted in the throwaway store (promoted even if it fails the gate's
  absolute checks, recorded as ``bootstrap_model.forced_promotion``);
* then, for each of the ``nightly_days`` nights ``d``, four series are scored on the
  examples of day ``d + 1`` (all of them by default, ``--eval-split holdout`` for the 10%
  holdout; the same rows for every series, none of the models has seen that day):

  - ``incremental``: the real nightly pipeline for ``d`` (:func:`pipeline.nightly.run_all`: it
    picks its strategy, fine-tunes from the champion, compresses, evaluates, registers and
    promotes when the gate passes); what serves after the night is the ``champion`` alias,
    scored as int8 TFLite (what serves). Training seconds: ``runs/dt=<d>/fine_tune.json``;
  - ``full_retrain``: a model trained from scratch that night on every processed day up to
    ``d`` (:func:`models.train.finetune`, strategy ``retrain``), pruned and int8-quantized
    as the pipeline does (:func:`models.compress.compress_model`; ``--full-retrain-model
    float`` scores the float Keras model instead; the float AUC is recorded either way);
  - ``stale``: the bootstrap champion (int8 TFLite), never updated;
  - ``oracle``: the simulator's true click probability of each impression
    (``sim/truth/dt=<ds>/truth.parquet``, joined through the clean events' ``event_id``
    on ``request_id`` and ``item_id``).

Metrics: next-day AUC and log loss (:mod:`models.metrics`). Targets (issue "Incremental
learning that keeps up with the shop"): mean incremental AUC within 0.002 of full retrain's
and within 0.010 of the oracle's; on the last night the stale model >= 0.02 AUC below the
incremental one and the incremental training time <= 10% of the full retrain's.

Default world: the ``demo`` preset with 20,000 requests a day (200,000 impressions a day).
``--quick``: the ``demo`` preset with 2,000 requests a day, 2 bootstrap and 2 nightly days,
and the full retrain scored as its float model (no compression); its figures check the
plumbing, not the targets. ``--scale`` picks another preset of ``ops.simulate.SCALES`` as it
is; ``--requests-per-day`` overrides the traffic of any.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from core.settings import REPO_ROOT, settings_under

log = logging.getLogger(__name__)
SERIES = ("oracle", "stale", "incremental", "full_retrain")
DEFAULT_REQUESTS = 20_000
QUICK_REQUESTS = 2_000
QUICK_BOOTSTRAP_DAYS = 2
QUICK_NIGHTLY_DAYS = 2
# Retrain on "everything so far": more days than any run keeps (retention bounds it anyway).
ALL_HISTORY_DAYS = 10_000


def world_config(scale: str | None, quick: bool, requests_per_day: int | None, seed: int):
    """The simulated shop: a preset of ``ops.simulate.SCALES`` with the traffic asked for."""
    from ops import simulate

    if scale is None:
        scale = "demo"
        requests_per_day = requests_per_day or (QUICK_REQUESTS if quick else DEFAULT_REQUESTS)
    if scale not in simulate.SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {sorted(simulate.SCALES)}")
    config = dataclasses.replace(simulate.SCALES[scale], seed=seed)
    if requests_per_day:
        config = dataclasses.replace(config, requests_per_day=requests_per_day)
    return scale, config


def with_history(settings, days: int):
    """``settings`` whose from-scratch retrain reads at least ``days`` days."""
    train = dataclasses.replace(
        settings.train, retrain_history_days=max(settings.train.retrain_history_days, days)
    )
    return dataclasses.replace(settings, train=train)


def eval_rows(layout, ds: str, split: str):
    """Examples of ``ds`` (``split``: ``all`` or ``holdout``) with the true click probability.

    Examples are impressions keyed by ``(request_id, item_id)``; the clean events give each
    impression's ``event_id`` and the simulator's truth file its ``p_click``. Returns the
    frame of the rows the truth matched (``p_click`` column) and the number of example rows.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from models import ranker
    from ops import simulate

    examples = ranker.read_examples([layout.examples(ds)], None if split == "all" else split)
    events = pq.read_table(
        str(layout.clean_events(ds)), columns=["event_id", "event_type", "request_id", "item_id"]
    ).to_pandas()
    impressions = events[events["event_type"] == "impression"].drop(columns="event_type")
    truth = pd.read_parquet(simulate.truth_dir(layout.root, ds) / "truth.parquet")
    known = impressions.merge(truth, on="event_id", how="inner")
    known = known.drop_duplicates(["request_id", "item_id"])[["request_id", "item_id", "p_click"]]
    matched = examples.merge(known, on=["request_id", "item_id"], how="inner")
    return matched.reset_index(drop=True), len(examples)


def score_series(rows, models: dict) -> dict[str, np.ndarray]:
    """Click probabilities per series: the oracle's, and each model's on the same rows.

    ``models`` maps a series name to ``("int8", path)`` or ``("float", path)``.
    """
    from models import ranker
    from serving.scorer import TFLiteScorer

    x = ranker.to_inputs(rows)
    scores = {"oracle": rows["p_click"].to_numpy(np.float64)}
    for name, (kind, path) in models.items():
        if kind == "int8":
            scores[name] = TFLiteScorer(path).predict(x)
        else:
            scores[name] = ranker.load_ranker(path).predict(x, batch_size=8192, verbose=0).ravel()
    return scores


def night_facts(layout, ds: str) -> dict:
    """What the pipeline did on night ``ds``, from its stage summaries under ``runs/``."""
    from core.layout import read_json

    runs = layout.run_dir(ds)
    decision = read_json(runs / "choose_strategy.json") or {}
    strategy = decision.get("strategy")
    tuned = read_json(runs / "fine_tune.json") if strategy != "skip" else None
    return {
        "strategy": strategy,
        "strategy_reasons": decision.get("reasons"),
        "train_seconds": tuned["seconds"] if tuned else None,
        "promoted": bool((read_json(runs / "register.json") or {}).get("promoted")),
        "gate_reasons": (read_json(runs / "evaluate.json") or {}).get("gate_reasons"),
    }


def score_night(layout, ds: str, split: str, stale: dict, pending: dict, kind: str) -> dict:
    """AUC and log loss of last night's series on the examples of ``ds`` (the next day)."""
    from models.metrics import auc, log_loss

    rows, n_examples = eval_rows(layout, ds, split)
    full = pending["full"]
    models = {
        "stale": ("int8", stale["int8_tflite"]),
        "incremental": ("int8", pending["champion"]["int8_tflite"]),
        "full_retrain": ("int8", full["int8"]) if kind == "int8" else ("float", full["keras"]),
        "full_retrain_float": ("float", full["keras"]),
    }
    if kind == "float":
        del models["full_retrain_float"]
    scores = score_series(rows, models)
    scores.setdefault("full_retrain_float", scores["full_retrain"])
    y = rows["label_click"].to_numpy(np.float64)
    return {
        "auc": {s: auc(y, scores[s]) for s in SERIES},
        "log_loss": {s: log_loss(y, scores[s]) for s in SERIES},
        "auc_full_retrain_float": auc(y, scores["full_retrain_float"]),
        "example_rows": n_examples,
        "oracle_matched_rows": len(rows),
    }


def train_full_retrain(layout, ds: str, out_dir: Path, settings, model_kind: str) -> dict:
    """From scratch on every processed day up to ``ds``; compressed like the pipeline's."""
    from models.compress import compress_model
    from models.ranker import read_examples
    from models.train import finetune

    cfg = dataclasses.replace(settings.train, retrain_history_days=ALL_HISTORY_DAYS)
    summary = finetune(None, layout, ds, out_dir, "retrain", cfg)
    result = {
        "seconds": summary["seconds"],
        "days": summary["days"],
        "rows": summary["rows"],
        "keras": str(out_dir / "model.keras"),
        "compress_seconds": None,
        "int8": None,
    }
    if model_kind == "int8":
        train_df = read_examples([layout.examples(ds)], "train")
        comp = compress_model(
            out_dir / "model.keras", train_df, out_dir, settings.compress, settings.train
        )
        result["compress_seconds"] = comp["seconds"]
        result["int8"] = comp["int8_tflite_path"]
    return result


def run_bootstrap(ds: str, settings, bootstrap_days: int) -> dict:
    """The real pipeline on the last bootstrap day, retraining on every bootstrap day.

    The first model has no champion to beat, but the gate still checks its absolute floor
    and its int8-vs-float gap. If it fails, the benchmark promotes it anyway (in its
    throwaway store; recorded as ``forced_promotion``): the nights after it need a champion
    to fine-tune, and the stale series needs a model.
    """
    from models.registry import promote
    from pipeline import nightly

    boot = nightly.run_all(ds, with_history(settings, bootstrap_days), override="retrain")
    forced = not boot.get("promoted")
    if forced:
        log.warning("bootstrap model v%s failed the gate, promoted anyway", boot["version"])
        promote(settings, boot["version"], f"freshness benchmark bootstrap: {boot['why']}")
    return {
        "ds": ds,
        "version": boot["version"],
        "why": boot["why"],
        "forced_promotion": forced,
    }


def mean(values) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return float(np.mean(values)) if values else None


def summarise(result: dict) -> tuple[dict, dict]:
    """14-day (or ``nightly_days``) means and the issue's targets."""
    auc, loss, secs = result["auc"], result["log_loss"], result["train_seconds"]
    summary = {
        "mean_auc": {s: mean(auc[s]) for s in SERIES},
        "mean_log_loss": {s: mean(loss[s]) for s in SERIES},
        "last_day_auc": {s: auc[s][-1] for s in SERIES},
        "mean_train_seconds": {s: mean(secs[s]) for s in secs},
        # Wall time of a night: all pipeline stages vs the full retrain (with compression).
        "mean_night_seconds": {
            "incremental_pipeline": mean(result["seconds"]["pipeline"]),
            "full_retrain": mean(result["seconds"]["full_retrain"]),
        },
        "strategies": {s: result["strategy"].count(s) for s in sorted(set(result["strategy"]))},
        "promoted_nights": sum(bool(p) for p in result["promoted"]),
    }
    m = summary["mean_auc"]
    gap_full = m["full_retrain"] - m["incremental"]
    gap_oracle = m["oracle"] - m["incremental"]
    stale_gap = auc["incremental"][-1] - auc["stale"][-1]
    time_ratio = secs["incremental"][-1] / max(secs["full_retrain"][-1], 1e-9)
    summary.update(
        {
            "auc_gap_full_retrain_minus_incremental": gap_full,
            "auc_gap_oracle_minus_incremental": gap_oracle,
            "last_day_auc_gap_incremental_minus_stale": stale_gap,
            "last_day_train_time_ratio_incremental_over_full_retrain": time_ratio,
        }
    )
    targets = {
        "incremental_mean_auc_within_0.002_of_full_retrain": gap_full <= 0.002,
        "incremental_mean_auc_within_0.010_of_oracle": gap_oracle <= 0.010,
        "stale_ge_0.02_below_incremental_last_day": stale_gap >= 0.02,
        "incremental_train_time_le_10pct_of_full_retrain_last_day": time_ratio <= 0.10,
    }
    return summary, targets


def plot_auc(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    x = np.arange(len(result["days"]))
    styles = {
        "oracle": ("black", "--", "oracle (true p_click)"),
        "stale": ("tab:red", ":", "stale (bootstrap model, never updated)"),
        "incremental": ("tab:blue", "-", "incremental (nightly pipeline champion, int8)"),
        "full_retrain": (
            "tab:green",
            "-.",
            f"full retrain from scratch ({result['full_retrain_model']})",
        ),
    }
    for name, (color, line, label) in styles.items():
        values = result["auc"][name]
        label = f"{label}: mean {np.mean(values):.4f}"
        ax.plot(x, values, line, color=color, marker="o", ms=3, label=label)
    ax.set_xticks(x, [d[5:] for d in result["days"]], rotation=45)
    ax.set_xlabel("night (model trained on data up to this day, scored on the next day)")
    ax.set_ylabel(f"next-day AUC ({result['eval_split']} examples)")
    world = result["world"]
    ax.set_title(
        f"Freshness: {result['scale']} world, {world['requests_per_day']:,} requests/day, "
        f"{result['bootstrap_days']} bootstrap days"
    )
    ax.grid(alpha=0.3)
    # Below the axes: the curves use the whole height, and a legend inside would cover one.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def progress_line(night: dict) -> str:
    a = night["auc"]
    secs = night["train_seconds"]
    inc = "-" if secs["incremental"] is None else f"{secs['incremental']:.1f}"
    return (
        f"{night['ds']}  {night['strategy']:<7}  oracle {a['oracle']:.4f}  "
        f"stale {a['stale']:.4f}  incremental {a['incremental']:.4f}  "
        f"full_retrain {a['full_retrain']:.4f}  train {inc} s vs "
        f"{secs['full_retrain']:.1f} s  night {night['night_seconds']:.1f} s"
    )


def bench_freshness(
    out_dir: Path,
    quick: bool = False,
    scale: str | None = None,
    bootstrap_days: int | None = None,
    nightly_days: int | None = None,
    requests_per_day: int | None = None,
    seed: int = 7,
    start: str = "2026-11-01",
    eval_split: str = "all",
    full_retrain_model: str | None = None,
) -> dict:
    from core.layout import Layout, shift_ds
    from models.registry import fetch_champion
    from ops import simulate
    from pipeline import nightly

    started = time.perf_counter()
    bootstrap_days = bootstrap_days or (QUICK_BOOTSTRAP_DAYS if quick else 7)
    nightly_days = nightly_days or (QUICK_NIGHTLY_DAYS if quick else 14)
    if bootstrap_days < 1 or nightly_days < 1:
        raise ValueError("bootstrap_days and nightly_days must be >= 1")
    if eval_split not in ("all", "holdout"):
        raise ValueError(f"eval_split must be 'all' or 'holdout', got {eval_split!r}")
    full_retrain_model = full_retrain_model or ("float" if quick else "int8")
    if full_retrain_model not in ("int8", "float"):
        raise ValueError(f"full_retrain_model must be int8 or float, got {full_retrain_model!r}")
    scale, world = world_config(scale, quick, requests_per_day, seed)

    work = Path(out_dir) / "freshness-world"
    shutil.rmtree(work, ignore_errors=True)
    settings = settings_under(work)
    layout = Layout(settings.data_root)
    n_days = bootstrap_days + nightly_days + 1
    all_days = [shift_ds(start, i) for i in range(n_days)]
    nights = all_days[bootstrap_days : bootstrap_days + nightly_days]
    last_bootstrap = all_days[bootstrap_days - 1]

    result: dict = {
        "scale": scale,
        "world": dataclasses.asdict(world),
        "quick": quick,
        "bootstrap_days": bootstrap_days,
        "nightly_days": nightly_days,
        "bootstrap": all_days[:bootstrap_days],
        "days": nights,
        "eval_day": [shift_ds(d, 1) for d in nights],
        "eval_split": eval_split,
        "eval_rows_note": (
            "night d's models are scored on the examples of day d + 1 "
            f"({'all rows' if eval_split == 'all' else 'holdout rows only'}; none of the "
            "models trained on that day), restricted to the rows whose true p_click was "
            "found; every series on the same rows"
        ),
        "models_scored": {
            "oracle": "simulator truth p_click",
            "stale": "bootstrap champion, int8 TFLite",
            "incremental": "registry champion after the night, int8 TFLite",
            "full_retrain": f"from scratch on all days so far, {full_retrain_model}"
            + (" TFLite (pruned like the pipeline)" if full_retrain_model == "int8" else " Keras"),
        },
        "full_retrain_model": full_retrain_model,
        "settings": {
            "train": dataclasses.asdict(settings.train),
            "strategy": dataclasses.asdict(settings.strategy),
            "gate": dataclasses.asdict(settings.gate),
        },
        "impressions_per_day": {},
        "auc": {s: [] for s in SERIES},
        "log_loss": {s: [] for s in SERIES},
        "auc_full_retrain_float": [],
        "train_seconds": {"incremental": [], "full_retrain": []},
        "full_retrain_compress_seconds": [],
        "full_retrain_days": [],
        "strategy": [],
        "strategy_reasons": [],
        "promoted": [],
        "gate_reasons": [],
        "champion_version": [],
        "example_rows": [],
        "oracle_matched_rows": [],
        "seconds": {"simulate": 0.0, "bootstrap": None, "pipeline": [], "full_retrain": []},
    }
    stale = None
    pending = None  # the last night's models, scored once the next day is preprocessed

    for index, ds in enumerate(all_days):
        t = time.perf_counter()
        stats = simulate.generate_day(settings.data_root, start, index, world)
        result["seconds"]["simulate"] += time.perf_counter() - t
        result["impressions_per_day"][ds] = stats["impressions"]

        night_started = time.perf_counter()
        if index < bootstrap_days - 1 or index == n_days - 1:
            nightly.preprocess(ds, settings)
        elif ds == last_bootstrap:
            result["bootstrap_model"] = run_bootstrap(ds, settings, bootstrap_days)
            result["seconds"]["bootstrap"] = round(time.perf_counter() - night_started, 1)
            stale = fetch_champion(settings, work / "stale")
            print(
                f"{ds}  bootstrap: retrain on {bootstrap_days} day(s) -> champion "
                f"v{stale['version']} ({result['bootstrap_model']['why']})  "
                f"{result['seconds']['bootstrap']:.1f} s",
                flush=True,
            )
        else:
            nightly.run_all(ds, settings)
        pipeline_seconds = time.perf_counter() - night_started

        if pending is not None:
            t = time.perf_counter()
            scored = score_night(layout, ds, eval_split, stale, pending, full_retrain_model)
            for key in ("auc", "log_loss"):
                for s in SERIES:
                    result[key][s].append(scored[key][s])
            for key in ("auc_full_retrain_float", "example_rows", "oracle_matched_rows"):
                result[key].append(scored[key])
            night = {**pending["night"], "auc": scored["auc"]}
            night["night_seconds"] += time.perf_counter() - t
            print(progress_line(night), flush=True)
            shutil.rmtree(pending["tmp"], ignore_errors=True)
            pending = None

        if ds in nights:
            facts = night_facts(layout, ds)
            tmp = work / "served" / f"dt={ds}"
            champion = fetch_champion(settings, tmp / "champion")
            full = train_full_retrain(
                layout, ds, tmp / "full_retrain", settings, full_retrain_model
            )
            for key in ("strategy", "strategy_reasons", "promoted", "gate_reasons"):
                result[key].append(facts[key])
            result["champion_version"].append(champion["version"])
            # A skipped night trains nothing: 0 seconds.
            result["train_seconds"]["incremental"].append(facts["train_seconds"] or 0.0)
            result["train_seconds"]["full_retrain"].append(full["seconds"])
            result["full_retrain_compress_seconds"].append(full["compress_seconds"])
            result["full_retrain_days"].append(len(full["days"]))
            result["seconds"]["pipeline"].append(round(pipeline_seconds, 1))
            full_total = full["seconds"] + (full["compress_seconds"] or 0.0)
            result["seconds"]["full_retrain"].append(round(full_total, 1))
            pending = {
                "tmp": tmp,
                "champion": champion,
                "full": full,
                "night": {
                    "ds": ds,
                    "strategy": facts["strategy"],
                    "train_seconds": {
                        "incremental": facts["train_seconds"],
                        "full_retrain": full["seconds"],
                    },
                    "night_seconds": time.perf_counter() - night_started,
                },
            }

    result["seconds"]["simulate"] = round(result["seconds"]["simulate"], 1)
    impressions = list(result["impressions_per_day"].values())
    result["mean_impressions_per_day"] = float(np.mean(impressions))
    result["summary"], result["targets"] = summarise(result)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "var" / "bench"))
    parser.add_argument("--quick", action="store_true", help="small world, few days")
    parser.add_argument("--scale", help="a ops.simulate.SCALES preset, taken as it is")
    parser.add_argument("--requests-per-day", type=int, help="override the preset's traffic")
    parser.add_argument("--bootstrap-days", type=int)
    parser.add_argument("--nightly-days", type=int)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", default="2026-11-01", help="date of the first day")
    parser.add_argument("--eval-split", default="all", choices=["all", "holdout"])
    parser.add_argument(
        "--full-retrain-model",
        choices=["int8", "float"],
        help="score the full retrain pruned+int8 (default) or float (default with --quick)",
    )
    args = parser.parse_args(argv)
    for name in ("bootstrap_days", "nightly_days", "requests_per_day"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = bench_freshness(
        out,
        quick=args.quick,
        scale=args.scale,
        bootstrap_days=args.bootstrap_days,
        nightly_days=args.nightly_days,
        requests_per_day=args.requests_per_day,
        seed=args.seed,
        start=args.start,
        eval_split=args.eval_split,
        full_retrain_model=args.full_retrain_model,
    )
    plot_auc(result, out / "freshness.png")
    (out / "freshness.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("summary", "targets", "total_seconds")}, indent=2))
    print(f"wrote {out / 'freshness.json'} and {out / 'freshness.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
