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
from core.layout import Layout, check_ds
from core.settings import Settings, load_settings
from core.summaries import (
    FailureSummary,
    MaterializeSummary,
    PreprocessSummary,
    StrategyDecision,
    ValidateSummary,
    read_summary,
    write_summary,
)
from jobs.preprocess import data_files

log = logging.getLogger(__name__)
STAGES = (
    "preprocess",
    "validate",
    "materialize",
    "choose_strategy",
    "fine_tune",
    "compress",
    "evaluate",
    "register",
    "cleanup",
)


def record_failure(ds: str, stage: str, reason: str, settings: Settings) -> dict:
    """Write why a night failed where users look: ``runs/dt=<ds>/failure.json`` and an MLflow
    run tagged ``status=failed`` with ``failed_stage`` and ``failure_reason``."""
    import datetime as dt

    summary = FailureSummary(
        ds=ds,
        failed_stage=stage,
        reason=reason[:5000],
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    summary = write_summary(Layout(settings.data_root), summary)
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


@fails_clearly_on_full_disk("materialize")
def materialize(ds: str, settings: Settings) -> dict:
    """Load the features served after the night ``ds`` into the online store."""
    from serving.store import load_night

    layout = Layout(settings.data_root)
    return write_summary(layout, {"ds": ds, **load_night(layout, ds)}, MaterializeSummary)


@fails_clearly_on_full_disk("choose_strategy")
def choose_strategy(ds: str, settings: Settings, override: str | None = None) -> dict:
    """Fetch the champion, rank the day's held-out cases with it and with popularity, and
    apply the strategy policy."""
    from core.features import LABEL
    from models.evaluate import champion_ranking_on, read_ranking_cases
    from models.metrics import RANKING_METRICS
    from models.registry import fetch_champion
    from models.strategy import choose_strategy as policy
    from serving.scorer import TFLiteScorer

    started = time.perf_counter()
    gate = settings.gate
    if gate.ranking_metric not in RANKING_METRICS:  # refused before training, not after
        raise ValueError(
            f"[gate] ranking_metric {gate.ranking_metric!r}: not one of {RANKING_METRICS}"
        )
    layout = Layout(settings.data_root)
    pre = read_summary(layout, ds, PreprocessSummary, required=True)
    val = read_summary(layout, ds, ValidateSummary)
    champion = fetch_champion(settings, layout.model_dir(ds) / "champion")
    cases = read_ranking_cases(layout, ds, gate.ranking_window_days)
    n_cases = int((cases[LABEL] == 1).sum())
    scorer = TFLiteScorer(champion["int8_tflite"]) if champion else None
    ranking_today = None
    if scorer and n_cases >= gate.min_ranking_cases:
        ranking_today = champion_ranking_on(cases, scorer, gate.ranking_metric)
    strategy, reasons = policy(
        train_examples=pre.train_examples,
        ranking_cases=n_cases,
        has_champion=champion is not None,
        ranking_today=ranking_today,
        drift_psi=val.drift_psi if val else None,
        cfg=settings.strategy,
        min_ranking_cases=gate.min_ranking_cases,
        override=override,
        champion_current=scorer is None or scorer.current,
    )
    log.info("strategy %s: %s (%s)", ds, strategy, "; ".join(reasons))
    decision = StrategyDecision(
        ds=ds,
        strategy=strategy,
        reasons=reasons,
        champion=champion,
        ranking_cases=n_cases,
        ranking_today=ranking_today,
        seconds=round(time.perf_counter() - started, 2),
    )
    return write_summary(layout, decision)


def decision_of(ds: str, settings: Settings) -> StrategyDecision:
    """The day's strategy decision, as :func:`choose_strategy` recorded it."""
    return read_summary(Layout(settings.data_root), ds, StrategyDecision, required=True)


@fails_clearly_on_full_disk("fine_tune")
def fine_tune(ds: str, settings: Settings, workers: int | None = None) -> dict:
    """Warm-start (or retrain) the day's candidate; ``workers`` overrides ``[train] workers``."""
    import dataclasses

    from models.train import fine_tune_day

    if workers is not None:
        settings = dataclasses.replace(
            settings, train=dataclasses.replace(settings.train, workers=workers)
        )
    decision = decision_of(ds, settings)
    warm = decision.champion and decision.strategy != "retrain"
    base = decision.champion["keras"] if warm else None
    layout = Layout(settings.data_root)
    return fine_tune_day(base, layout, ds, decision.strategy, settings.train)


@fails_clearly_on_full_disk("compress")
def compress(ds: str, settings: Settings) -> dict:
    from models.compress import compress_day

    return compress_day(Layout(settings.data_root), ds, settings.compress, settings.train)


@fails_clearly_on_full_disk("evaluate")
def evaluate(ds: str, settings: Settings) -> dict:
    from models.evaluate import evaluate_day

    champion = decision_of(ds, settings).champion
    return evaluate_day(Layout(settings.data_root), ds, champion, settings.gate)


@fails_clearly_on_full_disk("register")
def register(ds: str, settings: Settings, dry_run: bool = False) -> dict:
    """Register the candidate with metrics and lineage; promote it if the gate passed."""
    from models.registry import register_day

    return register_day(settings, ds, dry_run)


@fails_clearly_on_full_disk("cleanup")
def cleanup(ds: str, settings: Settings) -> dict:
    """Apply the retention policy (``[retention]``), so disk stays bounded."""
    from pipeline.retention import apply_retention

    return apply_retention(ds, settings)


def run_all(ds: str, settings: Settings, override: str | None = None, dry_run: bool = False):
    """Every stage in order, without Airflow (a day from a shell, the benchmarks). A stage
    that fails stops the night, recorded as the DAG records it (:func:`record_failure`)."""
    stage = "preprocess"

    def run(name, *args):
        nonlocal stage
        stage = name
        return globals()[name](ds, settings, *args)

    try:
        run("preprocess")
        run("validate")
        run("materialize")
        result = run("choose_strategy", override)
        if result["strategy"] != "skip":
            run("fine_tune")
            run("compress")
            run("evaluate")
            result = run("register", dry_run)
        run("cleanup")
    except Exception as exc:
        record_failure(ds, stage, f"{type(exc).__name__}: {exc}", settings)
        raise
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
