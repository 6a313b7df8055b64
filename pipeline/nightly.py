"""The nightly pipeline's stages as plain functions: what each Airflow task calls.

Each function takes the logical date and the settings, reads and writes only under the
data root and the MLflow store, records what it did in ``runs/dt=<ds>/<stage>.json`` and
returns a small JSON-able dict (it travels through XCom). The same functions run without
Airflow: ``python -m pipeline.nightly --ds 2026-11-20`` runs them all in order.

With ``hour``, a stage runs on the day so far (its delivered hours through ``hour``,
:class:`core.layout.HourLayout`), recording under ``intraday/dt=<ds>/hour=<HH>/``: the intra-day
update (the ``freshrank_intraday`` DAG, ``--hour``) is these stages, not a copy of them. It
fine-tunes ``light`` (:data:`INTRADAY_STRATEGY`); the night then consolidates the whole day.
Training (``fine_tune``, ``compress``) holds :func:`training_lock`, so an hour and a night
never train at the same time (the DAGs also share the Airflow pool ``freshrank_training``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import time

from core.errors import fails_clearly_on_full_disk
from core.layout import Layout, check_ds, check_hour, day_layout
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
from jobs.preprocess import data_files, delivered_files

log = logging.getLogger(__name__)
INTRADAY_STRATEGY = "light"  # an hour fine-tunes the champion's embeddings on the day so far
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


@contextlib.contextmanager
def training_lock(settings: Settings, what: str):
    """Hold the data root's training lock (``runs/training.lock``, an ``flock``) while
    ``what`` trains: a night's and an hour's training wait for each other, even when run by
    hand or by two schedulers. Released when the process ends, however it ends."""
    import fcntl

    path = Layout(settings.data_root).root / "runs" / "training.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            log.info("%s: waiting for the training lock (held by %s)", what, fh.read().strip())
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{what} (pid {os.getpid()})")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_failure(
    ds: str, stage: str, reason: str, settings: Settings, hour: int | None = None
) -> dict:
    """Write why a night (an hour) failed where users look: ``runs/dt=<ds>/failure.json``
    (``intraday/dt=<ds>/hour=<HH>/runs/...``) and an MLflow run tagged ``status=failed`` with
    ``failed_stage`` and ``failure_reason``."""
    summary = FailureSummary(
        ds=ds,
        failed_stage=stage,
        reason=reason[:5000],
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    layout = day_layout(settings, ds, hour)
    summary = write_summary(layout, summary)
    key = layout.run_key(ds)
    try:
        import mlflow

        from models.registry import ensure_experiment

        ensure_experiment(settings)
        with mlflow.start_run(run_name=f"nightly-{key}-failed"):
            mlflow.set_tags(
                {
                    "ds": key,
                    "status": "failed",
                    "failed_stage": stage,
                    "failure_reason": reason[:5000],
                }
            )
    except Exception as exc:  # noqa: BLE001 - never hide the original failure behind this one
        log.warning("could not record the failure of %s in MLflow: %s", ds, exc)
    return summary


def settings_with_connections(get_connection) -> Settings:
    """The settings (freshrank.toml + environment) with the Spark master of the Airflow
    connection named by ``[preprocess] spark_conn_id``, when that is set; ``get_connection``
    is Airflow's ``BaseHook.get_connection`` (the DAGs pass it)."""
    import dataclasses

    from jobs.spark import spark_master_from_connection

    settings = load_settings()
    conn_id = settings.preprocess.spark_conn_id
    if not conn_id:
        return settings
    master = spark_master_from_connection(get_connection(conn_id))
    pre = dataclasses.replace(settings.preprocess, spark_master=master)
    return dataclasses.replace(settings, preprocess=pre)


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


def resolve_hour(
    interval_start: str | None,
    param_ds: str | None = None,
    param_hour: int | None = None,
    announced: list | tuple = (),
) -> dict:
    """The hour an intra-day run processes, ``{"ds", "hour"}``: the ``ds`` and ``hour``
    Params if given, else the newest hour announced by the triggering asset events (their
    ``extra`` ``{"ds", "hour"}``), else the hour the run's data interval starts (``@hourly``:
    the hour that just ended; an ISO timestamp)."""
    if param_ds is not None or param_hour is not None:
        if param_ds is None or param_hour is None:
            raise ValueError("give both Params `ds` and `hour`, or neither")
        return {"ds": check_ds(param_ds), "hour": check_hour(param_hour)}
    hours = [(e["ds"], int(e["hour"])) for e in announced if e and "ds" in e and "hour" in e]
    if hours:
        ds, hour = max(hours)
        return {"ds": check_ds(ds), "hour": check_hour(hour)}
    if interval_start:
        start = dt.datetime.fromisoformat(str(interval_start))
        return {"ds": start.date().isoformat(), "hour": start.hour}
    raise ValueError(
        "no hour: the run has no data interval, no `ds`/`hour` Params and no asset event with "
        'extra {"ds": "YYYY-MM-DD", "hour": HH}'
    )


def hour_ready(ds: str, hour: int, settings: Settings) -> bool:
    """True when the hour's event files are complete (its ``_SUCCESS`` is written)."""
    path = Layout(settings.data_root).raw_events_hour(check_ds(ds), hour)
    return (path / "_SUCCESS").exists() and bool(data_files(path))


def delta_ready(ds: str, settings: Settings) -> bool:
    """True when the day's event files are there (the catalog delta is optional): the whole
    day, or its hours once the day's ``_SUCCESS`` says the last one is in."""
    path = Layout(settings.data_root).raw_events(check_ds(ds))
    return bool(data_files(path)) or ((path / "_SUCCESS").exists() and bool(delivered_files(path)))


@fails_clearly_on_full_disk("preprocess")
def preprocess(ds: str, settings: Settings, hour: int | None = None) -> dict:
    from jobs.preprocess import preprocess_day, require_events
    from jobs.spark import get_spark

    require_events(day_layout(settings, ds, hour), ds)  # before Spark starts: fails at once
    return preprocess_day(get_spark(settings.preprocess), ds, settings, hour)


@fails_clearly_on_full_disk("validate")
def validate(ds: str, settings: Settings, hour: int | None = None) -> dict:
    from jobs.spark import get_spark
    from jobs.validate import validate_day

    return validate_day(get_spark(settings.preprocess), ds, settings, hour)


@fails_clearly_on_full_disk("materialize")
def materialize(ds: str, settings: Settings) -> dict:
    """Load the features served after the night ``ds`` into the online store."""
    from serving.store import load_night

    layout = Layout(settings.data_root)
    return write_summary(layout, {"ds": ds, **load_night(layout, ds)}, MaterializeSummary)


@fails_clearly_on_full_disk("choose_strategy")
def choose_strategy(
    ds: str, settings: Settings, override: str | None = None, hour: int | None = None
) -> dict:
    """Fetch the champion, rank the day's held-out cases with it and with popularity, and
    apply the strategy policy (an hour: :data:`INTRADAY_STRATEGY` unless ``override``)."""
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
    if hour is not None:
        override = override or INTRADAY_STRATEGY
    layout = day_layout(settings, ds, hour)
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


def decision_of(ds: str, settings: Settings, hour: int | None = None) -> StrategyDecision:
    """The day's strategy decision, as :func:`choose_strategy` recorded it."""
    return read_summary(day_layout(settings, ds, hour), ds, StrategyDecision, required=True)


@fails_clearly_on_full_disk("fine_tune")
def fine_tune(
    ds: str, settings: Settings, workers: int | None = None, hour: int | None = None
) -> dict:
    """Warm-start (or retrain) the day's candidate; ``workers`` overrides ``[train] workers``."""
    import dataclasses

    from models.train import fine_tune_day

    if workers is not None:
        settings = dataclasses.replace(
            settings, train=dataclasses.replace(settings.train, workers=workers)
        )
    decision = decision_of(ds, settings, hour)
    warm = decision.champion and decision.strategy != "retrain"
    base = decision.champion["keras"] if warm else None
    layout = day_layout(settings, ds, hour)
    with training_lock(settings, f"fine_tune {layout.run_key(ds)}"):
        return fine_tune_day(
            base, layout, ds, decision.strategy, settings.train, settings.preprocess
        )


@fails_clearly_on_full_disk("compress")
def compress(ds: str, settings: Settings, hour: int | None = None) -> dict:
    from models.compress import compress_day

    layout = day_layout(settings, ds, hour)
    with training_lock(settings, f"compress {layout.run_key(ds)}"):
        return compress_day(layout, ds, settings.compress, settings.train)


@fails_clearly_on_full_disk("evaluate")
def evaluate(ds: str, settings: Settings, hour: int | None = None) -> dict:
    from models.evaluate import evaluate_day

    champion = decision_of(ds, settings, hour).champion
    return evaluate_day(day_layout(settings, ds, hour), ds, champion, settings.gate)


@fails_clearly_on_full_disk("register")
def register(ds: str, settings: Settings, dry_run: bool = False, hour: int | None = None) -> dict:
    """Register the candidate with metrics and lineage; promote it if the gate passed."""
    from models.registry import register_day

    return register_day(settings, ds, dry_run, hour)


@fails_clearly_on_full_disk("cleanup")
def cleanup(ds: str, settings: Settings) -> dict:
    """Apply the retention policy (``[retention]``), so disk stays bounded."""
    from pipeline.retention import apply_retention

    return apply_retention(ds, settings)


def run_all(
    ds: str,
    settings: Settings,
    override: str | None = None,
    dry_run: bool = False,
    hour: int | None = None,
):
    """Every stage in order, without Airflow (a day from a shell, the benchmarks). A stage
    that fails stops the night, recorded as the DAG records it (:func:`record_failure`).
    With ``hour``: the intra-day update of the day so far (``light`` unless ``override``;
    the online store and retention are left to the night)."""
    stage = "preprocess"
    nightly = hour is None

    def run(name, *args):
        nonlocal stage
        stage = name
        return globals()[name](ds, settings, *args, **({} if nightly else {"hour": hour}))

    try:
        run("preprocess")
        run("validate")
        if nightly:
            run("materialize")
        result = run("choose_strategy", override)
        if result["strategy"] != "skip":
            run("fine_tune", None)
            run("compress")
            run("evaluate")
            result = run("register", dry_run)
        if nightly:
            run("cleanup")
    except Exception as exc:
        record_failure(ds, stage, f"{type(exc).__name__}: {exc}", settings, hour)
        raise
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--stage", choices=STAGES, help="run only this stage (default: all)")
    parser.add_argument("--strategy", choices=["skip", "light", "full", "retrain"])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument(
        "--hour", type=int, help="the day so far through this hour (0-23): an intra-day update"
    )
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ds, settings = check_ds(args.ds), load_settings(args.config)
    hour = None if args.hour is None else check_hour(args.hour)
    if args.stage is None:
        print(run_all(ds, settings, args.strategy, args.dry_run, hour))
        return 0
    extra = {"choose_strategy": (args.strategy,), "register": (args.dry_run,)}
    if hour is not None and args.stage in ("materialize", "cleanup"):
        parser.error(f"--stage {args.stage} is the night's: it takes no --hour")
    kwargs = {} if hour is None else {"hour": hour}
    print(globals()[args.stage](ds, settings, *extra.get(args.stage, ()), **kwargs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
