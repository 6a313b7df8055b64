"""
### freshrank_nightly

Keeps the ranking model fresh: every night, for the logical date `ds` (the data day that
just ended), it

1. **wait_for_delta**: waits for `raw/events/dt=<ds>/` under the data root;
2. **preprocess** (PySpark): dedupes, quarantines bad rows with reasons, labels
   impressions, writes `examples/dt=<ds>/`;
3. **validate** (Great Expectations, suites in `expectations/`): stops the run on bad data
   (no retries: the data will not fix itself), records drift;
4. **choose_strategy**: skip / light / full fine-tune / retrain, from delta size, drift and
   the champion's AUC on the day; `skip` ends the run here;
5. **fine_tune** (TensorFlow): warm start from `models:/ranker@champion`;
6. **compress**: tfmot pruning, float and int8 TFLite;
7. **evaluate**: candidate vs champion on the day's held-out requests;
8. **register**: new MLflow model version; the `champion` alias moves only if the gate
   passed (the old champion stays reachable as `previous`).

Params: `strategy` forces a strategy; `dry_run` trains and evaluates but never promotes.
The schedule is `@daily` unless the environment of the DAG processor sets
`FRESHRANK_SCHEDULE` (a cron expression or preset, or `none` for manual runs only).
Every stage writes `runs/dt=<ds>/<stage>.json` under the data root. Logic lives in
`jobs/nightly.py`; this file only wires tasks.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException


def _record_failure(context) -> None:
    """Failure callback: the failed stage and reason go to the run summary and MLflow."""
    from jobs.nightly import record_failure

    ti = context["ti"]
    record_failure(context["ds"], ti.task_id, repr(context.get("exception")), _settings())


DEFAULT_ARGS = {
    "owner": "freshrank",
    "on_failure_callback": _record_failure,
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=20),
}


SCHEDULE = os.environ.get("FRESHRANK_SCHEDULE", "@daily")
SCHEDULE = None if SCHEDULE.lower() == "none" else SCHEDULE


def _settings():
    from jobs.settings import load_settings

    return load_settings()


@dag(
    dag_id="freshrank_nightly",
    schedule=SCHEDULE,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["freshrank", "nightly"],
    params={
        "strategy": Param(
            None,
            type=["null", "string"],
            enum=[None, "skip", "light", "full", "retrain"],
            description="Force an update strategy instead of the policy's choice.",
        ),
        "dry_run": Param(False, type="boolean", description="Train and evaluate, never promote."),
    },
)
def freshrank_nightly():
    @task.sensor(poke_interval=300, timeout=6 * 3600, mode="reschedule")
    def wait_for_delta(ds=None) -> bool:
        from jobs.nightly import delta_ready

        return delta_ready(ds, _settings())

    @task
    def preprocess(ds=None) -> dict:
        from jobs import nightly

        return nightly.preprocess(ds, _settings())

    @task(retries=0)
    def validate(ds=None) -> dict:
        from jobs import nightly
        from jobs.validate import DataValidationError

        try:
            return nightly.validate(ds, _settings())
        except DataValidationError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task.branch
    def choose_strategy(ds=None, params=None):
        from jobs import nightly

        decision = nightly.choose_strategy(ds, _settings(), (params or {}).get("strategy"))
        return [] if decision["strategy"] == "skip" else ["fine_tune"]

    @task
    def fine_tune(ds=None) -> dict:
        from jobs import nightly

        return nightly.fine_tune(ds, _settings())

    @task
    def compress(ds=None) -> dict:
        from jobs import nightly

        return nightly.compress(ds, _settings())

    @task
    def evaluate(ds=None) -> dict:
        from jobs import nightly

        return nightly.evaluate(ds, _settings())

    @task
    def register(ds=None, params=None) -> dict:
        from jobs import nightly

        return nightly.register(ds, _settings(), bool((params or {}).get("dry_run")))

    (
        wait_for_delta()
        >> preprocess()
        >> validate()
        >> choose_strategy()
        >> fine_tune()
        >> compress()
        >> evaluate()
        >> register()
    )


freshrank_nightly()
