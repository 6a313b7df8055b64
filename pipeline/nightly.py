"""The nightly pipeline's stages as plain functions: what each Airflow task calls.

Each function takes the logical date and the settings, reads and writes only under the
data root and the MLflow store, records what it did in ``runs/dt=<ds>/<stage>.json`` and
returns a small JSON-able dict (it travels through XCom). The same functions run without
Airflow: ``python -m pipeline.nightly --ds 2026-11-20`` runs them all in order.
"""

from __future__ import annotations

import argparse
import logging
import time

from core.errors import fails_clearly_on_full_disk
from core.layout import (
    Layout,
    check_ds,
    json_safe,
    read_json,
    write_json,
)
from core.settings import Settings, load_settings
from jobs.preprocess import data_files

log = logging.getLogger(__name__)
STAGES = (
    "preprocess",
    "validate",
    "choose_strategy",
    "fine_tune",
    "compress",
    "evaluate",
    "register",
    "cleanup",
)


def record(settings: Settings, ds: str, stage: str, summary: dict) -> dict:
    """Write the stage's summary to ``runs/dt=<ds>/<stage>.json``; return it JSON-safe (it
    travels through XCom, which refuses NaN)."""
    write_json(Layout(settings.data_root).run_dir(ds) / f"{stage}.json", summary)
    return json_safe(summary)


def record_failure(ds: str, stage: str, reason: str, settings: Settings) -> dict:
    """Write why a night failed where users look: ``runs/dt=<ds>/failure.json`` and an MLflow
    run tagged ``status=failed`` with ``failed_stage`` and ``failure_reason``."""
    import datetime as dt

    summary = {
        "ds": ds,
        "failed_stage": stage,
        "reason": reason[:5000],
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    record(settings, ds, "failure", summary)
    try:
        import mlflow

        from models.registry import ensure_experiment

        ensure_experiment(settings)
        with mlflow.start_run(run_name=f"nightly-{ds}-failed"):
            mlflow.set_tags(
                {
                    "ds": ds,
                    "status": "failed",
                    "failed_stage": stage,
                    "failure_reason": reason[:5000],
                }
            )
    except Exception as exc:  # noqa: BLE001 - never hide the original failure behind this one
        log.warning("could not record the failure of %s in MLflow: %s", ds, exc)
    return summary


def resolve_day(
    logical_ds: str | None, param_ds: str | None = None, announced: list | tuple = ()
) -> str:
    """The data day a run processes: the ``ds`` Param if given, else the newest day announced
    by the triggering asset events (their ``extra["ds"]``), else the logical date."""
    announced = [d for d in announced if d]
    for day in (param_ds, max(announced) if announced else None, logical_ds):
        if day:
            return check_ds(day)
    raise ValueError(
        "no data day: the run has no logical date, no `ds` Param and no asset event with "
        'extra {"ds": "YYYY-MM-DD"}'
    )


def delta_ready(ds: str, settings: Settings) -> bool:
    """True when the day's event files are there (the catalog delta is optional)."""
    return bool(data_files(Layout(settings.data_root).raw_events(check_ds(ds))))


@fails_clearly_on_full_disk("preprocess")
def preprocess(ds: str, settings: Settings) -> dict:
    from jobs.preprocess import preprocess_day, require_events
    from jobs.spark import get_spark

    require_events(Layout(settings.data_root), ds)  # before Spark starts: fails in a second
    return preprocess_day(get_spark(settings.preprocess), ds, settings)


@fails_clearly_on_full_disk("validate")
def validate(ds: str, settings: Settings) -> dict:
    from jobs.spark import get_spark
    from jobs.validate import validate_day

    return validate_day(get_spark(settings.preprocess), ds, settings)


@fails_clearly_on_full_disk("choose_strategy")
def choose_strategy(ds: str, settings: Settings, override: str | None = None) -> dict:
    """Fetch the champion, score it on the day, and apply the strategy policy."""
    from models.evaluate import champion_auc_on
    from models.registry import fetch_champion
    from models.strategy import choose_strategy as policy

    started = time.perf_counter()
    layout = Layout(settings.data_root)
    pre = read_json(layout.run_dir(ds) / "preprocess.json") or {}
    val = read_json(layout.run_dir(ds) / "validate.json") or {}
    champion = fetch_champion(settings, layout.model_dir(ds) / "champion")
    champion_auc = champion_auc_on(layout, ds, champion) if champion else None
    strategy, reasons = policy(
        train_examples=int(pre.get("train_examples", 0)),
        has_champion=champion is not None,
        champion_auc_today=champion_auc,
        drift_psi=val.get("drift_psi"),
        cfg=settings.strategy,
        override=override,
    )
    summary = {
        "ds": ds,
        "strategy": strategy,
        "reasons": reasons,
        "champion": champion,
        "champion_auc_today": champion_auc,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("strategy %s: %s (%s)", ds, strategy, "; ".join(reasons))
    return record(settings, ds, "choose_strategy", summary)


def decision_of(ds: str, settings: Settings) -> dict:
    """The day's strategy decision, as :func:`choose_strategy` recorded it."""
    path = Layout(settings.data_root).run_dir(ds) / "choose_strategy.json"
    decision = read_json(path)
    if decision is None:
        raise FileNotFoundError(f"{path} is missing: run choose_strategy for {ds} first")
    return decision


@fails_clearly_on_full_disk("fine_tune")
def fine_tune(ds: str, settings: Settings, workers: int | None = None) -> dict:
    """Warm-start (or retrain) the day's candidate; ``workers`` overrides ``[train] workers``."""
    import dataclasses

    from models.train import finetune

    if workers is not None:
        settings = dataclasses.replace(
            settings, train=dataclasses.replace(settings.train, workers=workers)
        )
    layout = Layout(settings.data_root)
    decision = decision_of(ds, settings)
    champion = decision.get("champion")
    summary = finetune(
        champion["keras"] if champion and decision["strategy"] != "retrain" else None,
        layout,
        ds,
        layout.model_dir(ds) / "candidate",
        decision["strategy"],
        settings.train,
    )
    return record(settings, ds, "fine_tune", summary)


@fails_clearly_on_full_disk("compress")
def compress(ds: str, settings: Settings) -> dict:
    from models.compress import compress_model
    from models.ranker import read_examples

    layout = Layout(settings.data_root)
    out = layout.model_dir(ds) / "candidate"
    train_df = read_examples([layout.examples(ds)], "train")
    summary = compress_model(out / "model.keras", train_df, out, settings.compress, settings.train)
    return record(settings, ds, "compress", summary)


@fails_clearly_on_full_disk("evaluate")
def evaluate(ds: str, settings: Settings) -> dict:
    from models.evaluate import evaluate_candidate

    layout = Layout(settings.data_root)
    champion = decision_of(ds, settings).get("champion")
    summary = evaluate_candidate(
        layout, ds, layout.model_dir(ds) / "candidate", champion, settings.gate
    )
    return record(settings, ds, "evaluate", summary)


@fails_clearly_on_full_disk("register")
def register(ds: str, settings: Settings, dry_run: bool = False) -> dict:
    """Register the candidate with metrics and lineage; promote it if the gate passed."""
    from models.registry import register_candidate

    started = time.perf_counter()
    layout = Layout(settings.data_root)
    runs = layout.run_dir(ds)
    pre = read_json(runs / "preprocess.json") or {}
    val = read_json(runs / "validate.json") or {}
    decision = decision_of(ds, settings)
    train = read_json(runs / "fine_tune.json") or {}
    comp = read_json(runs / "compress.json") or {}
    ev = read_json(runs / "evaluate.json") or {}
    metrics = {
        "holdout_rows": ev["holdout_rows"],
        "train_rows": train.get("rows"),
        "int8_tflite_bytes": comp["sizes"]["int8_tflite"]["bytes"],
        "int8_tflite_gzip_bytes": comp["sizes"]["int8_tflite"]["gzip_bytes"],
        "float_tflite_bytes": comp["sizes"]["float_tflite"]["bytes"],
        "keras_bytes": comp["sizes"]["keras"]["bytes"],
        **{k: v for k, v in (ev.get("latency") or {}).items() if k != "threads"},
    }
    for model, by_segment in ev["segments"].items():
        for segment, values in by_segment.items():
            prefix = model if segment == "all" else f"{model}.{segment.replace('=', '_')}"
            for name in ("auc", "log_loss", "ece", "ndcg@10", "recall@10"):
                value = values.get(name)
                if value is not None and value == value:  # MLflow rejects NaN
                    metrics[f"{prefix}.{name.replace('@', '_at_')}"] = value
    params = {
        "strategy": decision.get("strategy"),
        "epochs": train.get("epochs"),
        "training_days": ",".join(train.get("days", [])),
        "target_sparsity": comp.get("target_sparsity"),
        "base_version": (decision.get("champion") or {}).get("version"),
    }
    promote = bool(ev["gate_passed"]) and not dry_run
    tags = {
        "ds": ds,
        "strategy": decision.get("strategy"),
        "strategy_reasons": "; ".join(decision.get("reasons", [])),
        "gate_passed": ev["gate_passed"],
        "gate_reasons": "; ".join(ev["gate_reasons"]),
        "dry_run": dry_run,
        "input_partitions": ",".join(str(layout.examples(d)) for d in train.get("days", [])),
        "rows_in": pre.get("rows_in"),
        "rows_clean": pre.get("clean"),
        "rows_quarantined": pre.get("quarantined"),
        "validation_success": val.get("success"),
    }
    candidate_dir = layout.model_dir(ds) / "candidate"
    reports = [runs / "validation.html", runs / "report.html"]
    reports += [runs / f"{stage}.json" for stage in STAGES[: STAGES.index("register")]]
    result = register_candidate(settings, candidate_dir, params, metrics, tags, promote, reports)
    if dry_run:
        why = "dry run: never promotes"
    elif promote and result.get("already_promoted"):
        why = (
            f"gate passed, but v{result['already_promoted']} was already promoted for {ds}: "
            "a rerun never promotes twice"
        )
    elif promote:
        why = "gate passed: " + "; ".join(ev["gate_reasons"])
    else:
        why = "gate failed: " + "; ".join(ev["gate_reasons"])
    summary = {**result, "ds": ds, "why": why, "seconds": round(time.perf_counter() - started, 2)}
    return record(settings, ds, "register", summary)


@fails_clearly_on_full_disk("cleanup")
def cleanup(ds: str, settings: Settings) -> dict:
    """Apply the retention policy (``[retention]``), so disk stays bounded."""
    from pipeline.retention import apply_retention

    return apply_retention(ds, settings)


def run_all(ds: str, settings: Settings, override: str | None = None, dry_run: bool = False):
    """Every stage in order, without Airflow (for debugging a day from a shell)."""
    preprocess(ds, settings)
    validate(ds, settings)
    result = choose_strategy(ds, settings, override)
    if result["strategy"] != "skip":
        fine_tune(ds, settings)
        compress(ds, settings)
        evaluate(ds, settings)
        result = register(ds, settings, dry_run)
    cleanup(ds, settings)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--stage", choices=STAGES, help="run only this stage (default: all)")
    parser.add_argument("--strategy", choices=["skip", "light", "full", "retrain"])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ds, settings = check_ds(args.ds), load_settings(args.config)
    if args.stage is None:
        print(run_all(ds, settings, args.strategy, args.dry_run))
        return 0
    extra = {"choose_strategy": (args.strategy,), "register": (args.dry_run,)}
    print(globals()[args.stage](ds, settings, *extra.get(args.stage, ())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
