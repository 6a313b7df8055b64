"""
### freshrank_rollback

Moves the `champion` alias of the registered model back in one step, with a reason that is
stored on the version (`promotion_reason`). Trigger it from the Airflow UI with Params:

- `version`: `previous` (the champion before the last promotion) or a version number;
- `reason`: why (required; shows up in the registry).

The same is `python -m models.registry rollback --to previous --reason "..."` without
Airflow. Logic lives in `models/registry.py`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

DEFAULT_ARGS = {"owner": "freshrank", "retries": 2, "retry_delay": dt.timedelta(seconds=30)}


@dag(
    dag_id="freshrank_rollback",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["freshrank", "registry"],
    params={
        "version": Param(
            "previous",
            type="string",
            pattern=r"^(previous|[1-9][0-9]*)$",
            description="'previous' or a version number of the registered model",
        ),
        "reason": Param(type="string", minLength=3, description="Why roll back"),
    },
)
def freshrank_rollback():
    @task
    def rollback(params=None) -> dict:
        from core.settings import load_settings
        from models.registry import rollback as move_back

        settings = load_settings()
        version = move_back(settings, params["version"], params["reason"])
        return {"champion": version, "reason": params["reason"]}

    rollback()


freshrank_rollback()
