"""DAG files import cleanly and follow the team's policy (see STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from airflow.sdk.exceptions import ParamValidationError

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = {"tensorflow", "tf_keras", "pyspark", "great_expectations", "mlflow", "pandas"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"freshrank_nightly", "freshrank_intraday", "freshrank_rollback"} <= set(dagbag.dags)


def test_policy_on_every_dag(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.max_active_runs == 1, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        assert dag.tags, dag_id
        assert dag.catchup is False, dag_id
        for t in dag.tasks:
            if t.task_id == "validate":
                assert t.retries == 0  # bad data does not fix itself
            else:
                assert t.retries >= 2, f"{dag_id}.{t.task_id}"


def test_nightly_wiring_and_params(dagbag):
    dag = dagbag.dags["freshrank_nightly"]
    order = [
        "resolve_day",
        "wait_for_delta",
        "preprocess",
        "validate",
        "choose_strategy",
        "fine_tune",
        "compress",
        "evaluate",
        "register",
        "cleanup",
    ]
    for up, down in zip(order, order[1:], strict=False):
        assert down in dag.get_task(up).downstream_task_ids
    # The online store gets the day's features once the data passed validation.
    assert dag.get_task("validate").downstream_task_ids == {"materialize", "choose_strategy"}
    assert set(dag.params.keys()) >= {"ds", "strategy", "dry_run", "workers"}
    # Nightly by the clock (logical date = the data day) or when a delivery is announced.
    assert "Data" in type(dag.timetable.timetable).__name__
    assert "freshrank_raw_delta" in repr(dag.timetable.asset_condition)
    assert dag.get_task("cleanup").trigger_rule == "none_failed"


def test_intraday_wiring_params_and_the_shared_training_pool(dagbag):
    dag = dagbag.dags["freshrank_intraday"]
    order = ["resolve_hour", "preprocess", "validate", "choose_strategy", "fine_tune",
             "compress", "evaluate", "register"]  # fmt: skip
    for up, down in zip(order, order[1:], strict=False):
        assert down in dag.get_task(up).downstream_task_ids
    assert "freshrank_raw_hour" in repr(dag.timetable.asset_condition)
    hour = dag.params.get_param("hour")
    assert hour.resolve(13) == 13
    for bad in (24, -1, "13h"):
        with pytest.raises(ParamValidationError):
            hour.resolve(bad)
    # A night and an hour never train at the same time: one pool for both DAGs' training.
    nightly = dagbag.dags["freshrank_nightly"]
    pools = {(d.dag_id, t.task_id): t.pool for d in (dag, nightly) for t in d.tasks}
    training = {k for k, pool in pools.items() if pool == "freshrank_training"}
    assert training == {
        (d, t)
        for d in ("freshrank_intraday", "freshrank_nightly")
        for t in ("fine_tune", "compress")
    }


def test_the_hour_comes_from_the_params_then_the_delivery_then_the_interval():
    from pipeline.nightly import resolve_hour

    assert resolve_hour(None, "2026-11-20", 13) == {"ds": "2026-11-20", "hour": 13}
    announced = [{"ds": "2026-11-20", "hour": 9}, {"ds": "2026-11-20", "hour": 10}, {}]
    assert resolve_hour("2026-11-20T05:00:00+00:00", None, None, announced)["hour"] == 10
    assert resolve_hour("2026-11-20T05:00:00+00:00") == {"ds": "2026-11-20", "hour": 5}
    with pytest.raises(ValueError, match="both Params"):
        resolve_hour(None, "2026-11-20", None)
    with pytest.raises(ValueError, match="hour must be an integer 0..23"):
        resolve_hour(None, None, None, [{"ds": "2026-11-20", "hour": 24}])
    with pytest.raises(ValueError, match="no hour"):
        resolve_hour(None)


def test_params_reject_bad_values(dagbag):
    version = dagbag.dags["freshrank_rollback"].params.get_param("version")
    assert version.resolve("12") == "12" and version.resolve("previous") == "previous"
    for bad in ("../etc", "0", "latest"):
        with pytest.raises(ParamValidationError):
            version.resolve(bad)
    params = dagbag.dags["freshrank_nightly"].params
    strategy = params.get_param("strategy")
    assert strategy.resolve("light") == "light"
    with pytest.raises(ParamValidationError):
        strategy.resolve("yolo")
    ds = params.get_param("ds")
    assert ds.resolve("2026-11-20") == "2026-11-20" and ds.resolve(None) is None
    for bad in ("../../etc", "2026-11-20/../x", "yesterday"):
        with pytest.raises(ParamValidationError):
            ds.resolve(bad)
    workers = params.get_param("workers")
    assert workers.resolve(2) == 2
    for bad in (0, 99, "two"):
        with pytest.raises(ParamValidationError):
            workers.resolve(bad)


def test_dag_files_import_nothing_heavy_at_parse_time():
    for path in DAGS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: task bodies may import what they need
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for name in names:
                    assert name.split(".")[0] not in HEAVY, f"{path.name} imports {name}"


def test_the_day_comes_from_the_param_then_the_delivery_then_the_logical_date():
    from pipeline.nightly import resolve_day

    assert resolve_day("2026-11-20") == "2026-11-20"
    assert resolve_day("2026-11-20", "2026-11-18") == "2026-11-18"
    assert resolve_day(None, None, ["2026-11-21", None, "2026-11-22"]) == "2026-11-22"
    assert resolve_day("2026-11-20", None, ["2026-11-22"]) == "2026-11-22"
    with pytest.raises(ValueError, match="no data day"):
        resolve_day(None, None, [])
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        resolve_day(None, None, ["../../etc"])


def test_the_spark_master_can_come_from_an_airflow_connection(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("nightly_dag", DAGS / "freshrank_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._settings().preprocess.spark_master == "local[2]"
    monkeypatch.setenv("FRESHRANK__PREPROCESS__SPARK_CONN_ID", "spark_cluster")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CLUSTER", "spark://127.0.0.1:7077")
    assert module._settings().preprocess.spark_master == "spark://127.0.0.1:7077"
    spec = importlib.util.spec_from_file_location("intraday", DAGS / "freshrank_intraday.py")
    intraday = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(intraday)
    assert intraday._settings().preprocess.spark_master == "spark://127.0.0.1:7077"
