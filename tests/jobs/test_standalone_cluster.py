"""The preprocessing job gives the same outputs in local mode and on a Spark standalone cluster.

The cluster test starts a master and one worker from the pip package (127.0.0.1 only), runs
``jobs/preprocess.py`` through spark-submit against it and compares every output with a
local-mode run on a copy of the same dirty delivery.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from core.layout import Layout, read_json
from jobs.preprocess import preprocess_day
from jobs.spark import (
    _master_status,
    spark_master_from_connection,
    spark_submit_command,
    start_standalone_cluster,
    submit_env,
)
from ops import simulate

REPO = Path(__file__).resolve().parents[2]
DS = "2026-11-20"


def test_master_url_from_an_airflow_connection():
    conn = SimpleNamespace(host="spark://127.0.0.1", port=7077)
    assert spark_master_from_connection(conn) == "spark://127.0.0.1:7077"
    assert spark_master_from_connection({"host": "10.0.0.5", "port": None}) == (
        "spark://10.0.0.5:7077"
    )
    assert spark_master_from_connection({"host": "spark://h:7078/", "port": None}) == (
        "spark://h:7078"
    )
    assert spark_master_from_connection({"host": "local[2]", "port": 7077}) == "local[2]"
    assert spark_master_from_connection({"host": "yarn"}) == "yarn"
    ha = {"host": "spark://a:7077,b:7077", "port": 7077}
    assert spark_master_from_connection(ha) == "spark://a:7077,b:7077"
    for bad in ({"host": ""}, {"host": "spark://a:1", "port": 2}, {"host": "a", "port": "x"}):
        with pytest.raises(ValueError, match="Spark connection"):
            spark_master_from_connection(bad)


def outputs(root: Path) -> dict[str, pd.DataFrame]:
    """The day's clean events, quarantine and examples, in a stable row order."""
    layout = Layout(root)
    clean = pd.read_parquet(layout.clean_events(DS)).sort_values("event_id")
    bad = pd.read_parquet(layout.quarantine_events(DS))
    bad["source_file"] = bad["source_file"].map(lambda p: Path(p).name)  # roots differ
    bad = bad.sort_values(["reason", "event_id", "_corrupt_record"], na_position="first")
    examples = pd.read_parquet(layout.examples(DS)).sort_values(["request_id", "item_id"])
    return {
        "clean": clean.reset_index(drop=True),
        "quarantine": bad.reset_index(drop=True),
        "examples": examples.reset_index(drop=True),
    }


def counts(summary: dict) -> dict:
    return {
        k: v
        for k, v in summary.items()
        if not any(word in k for word in ("second", "path", "timing"))
    }


@pytest.mark.slow
def test_preprocess_on_a_standalone_cluster_equals_local_mode(spark, settings, tmp_path):
    generated = tmp_path / "generated"
    simulate.generate_day(generated, DS, 0, simulate.SCALES["tiny"], simulate.DIRTY)
    local_root, cluster_root = Path(settings.data_root), tmp_path / "cluster-data"
    for root in (local_root, cluster_root):
        shutil.copytree(generated / "raw", root / "raw")

    local = preprocess_day(spark, DS, settings)

    cluster = start_standalone_cluster(tmp_path / "spark-cluster", cores=1, memory="1g")
    try:
        cmd = spark_submit_command(
            cluster.master_url,
            REPO / "jobs" / "preprocess.py",
            ["--ds", DS],
            conf={"spark.executorEnv.PYTHONPATH": str(REPO)},
        )
        env = submit_env(
            {
                "FRESHRANK_DATA_ROOT": str(cluster_root),
                # freshrank.toml still says local[2]: under spark-submit its master wins.
                "FRESHRANK__PREPROCESS__SHUFFLE_PARTITIONS": "2",
            }
        )
        run = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=420
        )
        assert run.returncode == 0, (
            f"spark-submit failed:\n{run.stdout[-3000:]}{run.stderr[-5000:]}"
        )
        status = _master_status(cluster.web_ui_url)
    finally:
        cluster.stop()
    assert all(p.poll() is not None for p in cluster.processes.values())

    # It really ran on the cluster, not in a local master started by the job.
    assert [app["name"] for app in status["completedapps"]] == ["freshrank"]
    assert any((tmp_path / "spark-cluster" / "worker").glob("app-*"))

    remote = read_json(Layout(cluster_root).run_dir(DS) / "preprocess.json")
    assert remote["reconciled"] and local["reconciled"]
    assert counts(remote) == counts(local)
    assert local["quarantined"] > 0 and local["duplicates"] > 0  # the delivery was dirty
    mine, theirs = outputs(local_root), outputs(cluster_root)
    for name in mine:
        assert len(mine[name]) > 0, name
        pd.testing.assert_frame_equal(mine[name], theirs[name], obj=name)
