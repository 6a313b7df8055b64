"""
### freshrank_nightly

Keeps the ranking model fresh: every night, for the data day `ds` (the logical date, i.e.
the day that just ended), it

0. **resolve_day**: which day to process: the `ds` Param, else the day announced by the
   `freshrank_raw_delta` asset event that triggered the run, else the logical date;
1. **wait_for_delta**: waits for `raw/events/dt=<ds>/` under the data root;
2. **preprocess** (PySpark): dedupes, quarantines bad rows with reasons, labels
   impressions, writes `examples/dt=<ds>/`;
3. **validate** (Great Expectations, suites in `expectations/`): stops the run on bad data
   (no retries: the data will not fix itself), records drift;
   **materialize** then loads the users' and items' features after the day into the
   online store that serving looks them up in (beside the training branch);
4. **choose_strategy**: skip / light / full fine-tune / retrain, from delta size, drift and
   the champion's AUC on the day; `skip` ends the run here;
5. **fine_tune** (TensorFlow): warm start from `models:/ranker@champion`;
6. **compress**: tfmot pruning, float and int8 TFLite (both in the pool
   `freshrank_training`, shared with `freshrank_intraday`: one training at a time);
7. **evaluate**: candidate vs champion on the day's held-out requests;
8. **register**: new MLflow model version; the `champion` alias moves only if the gate
   passed (the old champion stays reachable as `previous`);
9. **cleanup**: the retention policy (`[retention]`) keeps disk bounded.

**Schedule**: `@daily` (catchup off; backfill with `airflow backfill create --dag-id
freshrank_nightly --from-date ... --to-date ...`), *or* whenever a delivery announces a day
with an event on asset `freshrank_raw_delta` carrying `extra={"ds": "YYYY-MM-DD"}`
(`python -m ops.announce --ds ...`). `FRESHRANK_SCHEDULE` in the scheduler's environment
replaces `@daily` (a cron expression or preset; `none`: asset events and manual runs only).

**Params**: `ds` processes another day than the logical date; `strategy` forces a strategy;
`dry_run` trains and evaluates but never promotes; `workers` sets the number of training
processes (tf.distribute). Every stage writes `runs/dt=<ds>/<stage>.json` under the data
root; a failure writes `runs/dt=<ds>/failure.json` and an MLflow run tagged
`status=failed`. Logic lives in `pipeline/nightly.py`; this file only wires tasks.
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

# A delivery (importer, log shipper) announces a complete day with extra={"ds": ...}.
RAW_DELTA = Asset("freshrank_raw_delta")
# fine_tune and compress run in this pool (one slot; `make up` creates it), as those of
# freshrank_intraday do: a night and an hour never train at the same time.
TRAINING_POOL = "freshrank_training"


def _record_failure(context) -> None:
    """Failure callback: the failed stage and reason go to the run summary and MLflow."""
    from pipeline.nightly import record_failure

    ti = context["ti"]
    day = ti.xcom_pull(task_ids="resolve_day") if ti.task_id != "resolve_day" else None
    day = day or context.get("ds") or "unknown-day"
    record_failure(day, ti.task_id, repr(context.get("exception")), _settings())


DEFAULT_ARGS = {
    "owner": "freshrank",
    "on_failure_callback": _record_failure,
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=20),
}


def _schedule():
    cron = os.environ.get("FRESHRANK_SCHEDULE", "@daily")
    if cron.lower() == "none":
        return RAW_DELTA
    # Data intervals: the run for logical date D starts once day D has ended.
    timetable = CronDataIntervalTimetable(cron, timezone="UTC")
    return AssetOrTimeSchedule(timetable=timetable, assets=RAW_DELTA)


def _settings():
    """freshrank.toml + environment; the Spark master comes from the Airflow connection named
    by `[preprocess] spark_conn_id` when that is set (e.g. `spark_default`)."""
    from airflow.sdk import BaseHook

    from pipeline.nightly import settings_with_connections

    return settings_with_connections(BaseHook.get_connection)


@dag(
    dag_id="freshrank_nightly",
    schedule=_schedule(),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["freshrank", "nightly"],
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            pattern=DS_PATTERN,
            description="Data day to process (YYYY-MM-DD); empty: the logical date.",
        ),
        "strategy": Param(
            None,
            type=["null", "string"],
            enum=[None, "skip", "light", "full", "retrain"],
            description="Force an update strategy instead of the policy's choice.",
        ),
        "dry_run": Param(False, type="boolean", description="Train and evaluate, never promote."),
        "workers": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=8,
            description="Training processes (tf.distribute); empty: [train] workers.",
        ),
    },
)
def freshrank_nightly():
    @task
    def resolve_day(ds=None, params=None, triggering_asset_events=None) -> str:
        from pipeline.nightly import resolve_day as pick

        announced = [
            (event.extra or {}).get("ds")
            for events in (triggering_asset_events or {}).values()
            for event in events
        ]
        return pick(ds, (params or {}).get("ds"), announced)

    @task.sensor(poke_interval=300, timeout=6 * 3600, mode="reschedule")
    def wait_for_delta(day: str) -> bool:
        from pipeline.nightly import delta_ready

        return delta_ready(day, _settings())

    @task
    def preprocess(day: str) -> dict:
        from pipeline import nightly

        return nightly.preprocess(day, _settings())

    @task(retries=0)
    def validate(day: str) -> dict:
        from jobs.validate import DataValidationError
        from pipeline import nightly

        try:
            return nightly.validate(day, _settings())
        except DataValidationError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def materialize(day: str) -> dict:
        from pipeline import nightly

        return nightly.materialize(day, _settings())

    @task.branch
    def choose_strategy(day: str, params=None):
        from pipeline import nightly

        decision = nightly.choose_strategy(day, _settings(), (params or {}).get("strategy"))
        return [] if decision["strategy"] == "skip" else ["fine_tune"]

    @task(pool=TRAINING_POOL)
    def fine_tune(day: str, params=None) -> dict:
        from pipeline import nightly

        return nightly.fine_tune(day, _settings(), (params or {}).get("workers"))

    @task(pool=TRAINING_POOL)
    def compress(day: str) -> dict:
        from pipeline import nightly

        return nightly.compress(day, _settings())

    @task
    def evaluate(day: str) -> dict:
        from pipeline import nightly

        return nightly.evaluate(day, _settings())

    @task
    def register(day: str, params=None) -> dict:
        from pipeline import nightly

        return nightly.register(day, _settings(), bool((params or {}).get("dry_run")))

    # Also after a skipped night; never after a failed one (its outputs may be needed).
    @task(trigger_rule="none_failed")
    def cleanup(day: str) -> dict:
        from pipeline import nightly

        return nightly.cleanup(day, _settings())

    day = resolve_day()
    checked = wait_for_delta(day) >> preprocess(day) >> validate(day)
    checked >> materialize(day)
    (
        checked
        >> choose_strategy(day)
        >> fine_tune(day)
        >> compress(day)
        >> evaluate(day)
        >> register(day)
        >> cleanup(day)
    )


freshrank_nightly()
