"""
### freshrank_intraday

Brings the ranking model up to the last hour between nights: for an hour `HH` of the data
day `ds` just delivered (`raw/events/dt=<ds>/hour=<HH>/` with its `_SUCCESS`), it

0. **resolve_hour**: which hour: the `ds` and `hour` Params, else the hour announced by the
   `freshrank_raw_hour` asset event that triggered the run (`python -m ops.announce --ds ...
   --hour HH`), else the hour the run's data interval starts;
1. **preprocess** / **validate**: the nightly stages on *the day so far* (every complete hour
   of `ds` through `HH`), written under `intraday/dt=<ds>/hour=<HH>/`;
2. **choose_strategy**: `light` (the champion's embeddings and output layer on the day so
   far) unless the `strategy` Param says otherwise; `skip` ends the run;
3. **fine_tune**, **compress**, **evaluate** (the gate, on the day so far's held-out
   requests and the days before), **register** (moves `champion` if the gate passed).

The nightly run then consolidates the whole day. **Training never overlaps**: `fine_tune`
and `compress` of both DAGs run in the Airflow pool `freshrank_training` (one slot; `make up`
creates it, see the Pools page) and hold the data root's training lock. A failed hour stops
only its own run: a missing hour or bad data is not retried (the next hour includes it).
**Schedule**: asset events on `freshrank_raw_hour`; `FRESHRANK_INTRADAY_SCHEDULE` (a cron
expression or preset, e.g. `@hourly`) adds a timetable. Logic lives in `pipeline/nightly.py`
(its functions take `hour`); this file only wires tasks.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronDataIntervalTimetable,
    Param,
    dag,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

from core.layout import DS_PATTERN

# A delivery announces a complete hour with extra={"ds": "YYYY-MM-DD", "hour": HH}.
RAW_HOUR = Asset("freshrank_raw_hour")
TRAINING_POOL = "freshrank_training"  # freshrank_nightly's: one training at a time


def _record_failure(context) -> None:
    """Failure callback: the failed stage and reason go to the hour's run summary and MLflow."""
    from pipeline.nightly import record_failure

    ti = context["ti"]
    hour = ti.xcom_pull(task_ids="resolve_hour") if ti.task_id != "resolve_hour" else None
    if hour:
        record_failure(
            hour["ds"], ti.task_id, repr(context.get("exception")), _settings(), hour["hour"]
        )


def _settings():
    """As freshrank_nightly's: the Spark master from `[preprocess] spark_conn_id`, if set."""
    from airflow.sdk import BaseHook

    from pipeline.nightly import settings_with_connections

    return settings_with_connections(BaseHook.get_connection)


def _schedule():
    cron = os.environ.get("FRESHRANK_INTRADAY_SCHEDULE", "none")
    if cron.lower() == "none":
        return RAW_HOUR
    timetable = CronDataIntervalTimetable(cron, timezone="UTC")
    return AssetOrTimeSchedule(timetable=timetable, assets=RAW_HOUR)


@dag(
    dag_id="freshrank_intraday",
    schedule=_schedule(),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "freshrank",
        "on_failure_callback": _record_failure,
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
    },
    doc_md=__doc__,
    tags=["freshrank", "intraday"],
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            pattern=DS_PATTERN,
            description="Data day (YYYY-MM-DD), with `hour`; empty: the announced hour.",
        ),
        "hour": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=23,
            description="Hour of the day (0-23): the day so far through it.",
        ),
        "strategy": Param(
            None,
            type=["null", "string"],
            enum=[None, "skip", "light", "full"],
            description="Force a strategy instead of `light`.",
        ),
        "dry_run": Param(False, type="boolean", description="Train and evaluate, never promote."),
    },
)
def freshrank_intraday():
    @task
    def resolve_hour(data_interval_start=None, params=None, triggering_asset_events=None):
        from pipeline.nightly import resolve_hour as pick

        params = params or {}
        announced = [
            event.extra or {}
            for events in (triggering_asset_events or {}).values()
            for event in events
        ]
        start = data_interval_start.isoformat() if data_interval_start else None
        return pick(start, params.get("ds"), params.get("hour"), announced)

    @task
    def preprocess(hour: dict) -> dict:
        from jobs.preprocess import MissingDeltaError
        from pipeline import nightly

        try:
            return nightly.preprocess(hour["ds"], _settings(), hour["hour"])
        except MissingDeltaError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(retries=0)
    def validate(hour: dict) -> dict:
        from jobs.validate import DataValidationError
        from pipeline import nightly

        try:
            return nightly.validate(hour["ds"], _settings(), hour["hour"])
        except DataValidationError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task.branch
    def choose_strategy(hour: dict, params=None):
        from pipeline import nightly

        forced = (params or {}).get("strategy")  # None: the intra-day strategy
        decision = nightly.choose_strategy(hour["ds"], _settings(), forced, hour["hour"])
        return [] if decision["strategy"] == "skip" else ["fine_tune"]

    @task(pool=TRAINING_POOL)
    def fine_tune(hour: dict) -> dict:
        from pipeline import nightly

        return nightly.fine_tune(hour["ds"], _settings(), None, hour["hour"])

    @task(pool=TRAINING_POOL)
    def compress(hour: dict) -> dict:
        from pipeline import nightly

        return nightly.compress(hour["ds"], _settings(), hour["hour"])

    @task
    def evaluate(hour: dict) -> dict:
        from pipeline import nightly

        return nightly.evaluate(hour["ds"], _settings(), hour["hour"])

    @task
    def register(hour: dict, params=None) -> dict:
        from pipeline import nightly

        dry_run = bool((params or {}).get("dry_run"))
        return nightly.register(hour["ds"], _settings(), dry_run, hour["hour"])

    hour = resolve_hour()
    (
        preprocess(hour)
        >> validate(hour)
        >> choose_strategy(hour)
        >> fine_tune(hour)
        >> compress(hour)
        >> evaluate(hour)
        >> register(hour)
    )


freshrank_intraday()
