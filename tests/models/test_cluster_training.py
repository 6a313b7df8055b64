"""Distributed training as a Spark barrier stage on a real standalone cluster.

The cluster (a master and one worker offering 2 cores, from the pip package, on 127.0.0.1)
runs each training application on two 1-core executors. Training runs through the CLI in a
subprocess, as the pipeline's task process would: a process has one SparkContext, and the
test process's is a local one. The executor killed mid-training is killed for real (SIGKILL
to its JVM).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, world_env
from jobs.spark import _master_status, start_standalone_cluster
from models import ranker
from models.cluster import is_cluster, spark_conf
from models.fit import last_progress
from models.metrics import auc
from models.train import finetune
from ops.faults import kill_executor_in_epoch

from .conftest import TRAINING_DAY

D1 = TRAINING_DAY


def test_which_masters_run_training_on_a_cluster(settings):
    assert is_cluster("spark://10.0.0.5:7077") and is_cluster("yarn")
    assert is_cluster("k8s://https://api:6443")
    assert not any(map(is_cluster, ("local", "local[2]", "local[*]", "", None)))
    conf = spark_conf(dataclasses.replace(settings.train, cores_per_worker=2), workers=3)
    # One worker per executor, with all its cores; no more cores than the workers need.
    assert conf["spark.executor.cores"] == conf["spark.task.cpus"] == "2"
    assert conf["spark.cores.max"] == "6"
    assert conf["spark.stage.maxConsecutiveAttempts"] == str(settings.train.cluster_attempts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("FRESHRANK_TEST_NO_JVM") == "1":
        pytest.fail("this test starts a Spark cluster (JVM) but FRESHRANK_TEST_NO_JVM=1")
    work = tmp_path_factory.mktemp("spark-cluster")
    with start_standalone_cluster(work, cores=2, memory="2g") as running:
        yield running


def train_env(s, tmp_path: Path, master: str, **train) -> dict[str, str]:
    """The environment of ``python -m models.train`` for the world of ``s`` (the test's
    ``settings`` world) on ``master``, with ``[train]`` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHRANK__")}
    cfg = dataclasses.replace(s.train, **train)
    env.update(world_env(tmp_path), FRESHRANK__PREPROCESS__SPARK_MASTER=master)
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        value = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        env[f"FRESHRANK__TRAIN__{field.name.upper()}"] = value
    return env


def cli(strategy: str = "retrain", base: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "models.train", "--ds", D1, "--strategy", strategy]
    return argv + (["--base", base] if base else [])


def summary_of(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{\n") :])[0]


def holdout_auc(layout, model_path) -> float:
    df = ranker.read_examples([layout.examples(D1)], "holdout")
    model = ranker.load_ranker(model_path)
    return auc(ranker.labels(df), model.predict(ranker.to_inputs(df), verbose=0).ravel())


def iterations(model_path) -> int:
    return int(ranker.load_ranker(model_path).optimizer.iterations.numpy())


def executor_dirs(cluster) -> list[Path]:
    return sorted((cluster.work_dir / "worker").glob("app-*/*"))


@pytest.mark.slow
def test_two_executors_train_together_as_well_as_one_local_worker(cluster, day, tmp_path):
    s, layout = day
    one = finetune(None, layout, D1, layout.model_dir(D1) / "one", "retrain", s.train)
    before = executor_dirs(cluster)

    run = subprocess.run(
        cli(),
        cwd=REPO_ROOT,
        env=train_env(s, tmp_path, cluster.master_url, workers=2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    two = summary_of(run)

    assert (two["master"], two["workers"], two["stage_attempts"]) == (cluster.master_url, 2, 1)
    assert two["rows"] == one["rows"] and two["rows_per_worker"] == one["rows"] // 2
    assert not two["resumed"] and Path(two["model_path"]).exists()
    # It ran on the cluster's executors: one application, two executors of one core.
    apps = _master_status(cluster.web_ui_url)["completedapps"]
    assert [a["name"] for a in apps][-1] == "freshrank-train"
    assert len(set(executor_dirs(cluster)) - set(before)) == 2
    for i in (0, 1):
        assert f"worker {i}/2 at 127.0.0.1:" in Path(two["logs"][i]).read_text()
    # Each step trains on the global batch one process trains on.
    assert iterations(two["model_path"]) == iterations(one["model_path"])
    auc_one, auc_two = (
        holdout_auc(layout, one["model_path"]),
        holdout_auc(layout, two["model_path"]),
    )
    assert auc_one > 0.7 and abs(auc_two - auc_one) < 0.01, (auc_one, auc_two)
    assert not (layout.candidate_dir(D1) / "backup").exists()


@pytest.mark.slow
def test_an_executor_killed_mid_training_restarts_the_stage_which_resumes(cluster, day, tmp_path):
    s, layout = day
    epochs, every = 4, 5
    env = train_env(
        s, tmp_path, cluster.master_url, workers=2, retrain_epochs=epochs, backup_every_steps=every
    )
    out = layout.candidate_dir(D1)
    proc = subprocess.Popen(
        cli(), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Kill once a backup exists and the run is into its second epoch.
        at_kill = kill_executor_in_epoch(proc, out, epoch=1, deadline_s=240)
        assert at_kill is not None, "the run ended or hung before it could be killed"
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = summary_of(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))

    steps = done["steps_per_epoch"]
    assert done["stage_attempts"] == 2 and done["resumed"], done
    resumed_at = done["resumed_from_epoch"] * steps + done["resumed_from_step"]
    assert resumed_at >= steps  # not from the start: from the backup, in the second epoch
    # The kill cost at most one backup interval: the steps done since the last backup.
    assert 0 <= last_progress(at_kill, steps) - resumed_at <= every, (at_kill[-500:], resumed_at)
    # The optimizer did exactly the steps of one uninterrupted run: no batch twice, none lost.
    assert iterations(done["model_path"]) == epochs * steps
    assert holdout_auc(layout, done["model_path"]) > 0.7
    # Both workers started twice (one header per start) and the backup is gone.
    for i in (0, 1):
        assert Path(done["logs"][i]).read_text().count(f" worker {i}/2 at ") == 2
    assert not (out / "backup").exists()


@pytest.mark.slow
def test_more_workers_than_the_cluster_has_slots_fail_fast_and_clearly(cluster, day, tmp_path):
    s, _ = day
    env = train_env(s, tmp_path, cluster.master_url, workers=3, cluster_wait_s=5)
    started = time.monotonic()
    run = subprocess.run(cli(), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode != 0
    assert "ClusterTooSmall: [train] workers = 3 needs 3 task slots at once on" in run.stderr
    # 2 cores; fewer while a previous application's executors are still being removed.
    assert re.search(
        r"the cluster gave this application [012]\. Lower \[train\] workers", run.stderr
    )
    assert time.monotonic() - started < 60
