"""Distributed training on a Spark cluster: the MWMS workers run as one barrier stage.

With ``[train] workers`` = N > 1 and a cluster master (``[preprocess] spark_master``, or the
Airflow Spark connection that also runs preprocessing: ``spark://host:7077``, ``yarn``,
``k8s://...``), :func:`models.train.finetune` calls :func:`train_on_cluster`:

1. the driver (the ``fine_tune`` task's process) starts a Spark application
   ``freshrank-train`` asking for N executors of ``[train] cores_per_worker`` cores, each
   running one task (``spark.task.cpus`` = ``spark.executor.cores``), and waits up to
   ``[train] cluster_wait_s`` for N task slots; fewer raise :class:`ClusterTooSmall` (a
   barrier stage that cannot get all its slots would otherwise wait for them);
2. it runs a barrier stage of N tasks: Spark starts all of them together or none. Task i
   picks a free port on its executor's host, the tasks exchange ``host:port`` with
   ``BarrierTaskContext.allGather`` (ordered by partition), and each starts MWMS worker i
   (``python -m models.distributed worker``, the same worker the local launcher starts) with
   the ``TF_CONFIG`` built from them. Worker i trains on its part of every global batch,
   reading the day's examples from the data root; worker 0 (the chief) writes
   ``<out dir>/model.keras`` and ``workers/worker-0.json``; logs go to
   ``<out dir>/workers/worker-<i>.log``;
3. when a worker fails or an executor is lost, Spark fails the stage, kills the other tasks
   (their workers die with them) and runs the whole stage again, at most
   ``[train] cluster_attempts`` times. The new workers resume from the
   ``BackupAndRestore`` backup under ``<out dir>/backup``, so a failure costs at most the steps
   since the last backup (``[train] backup_every_steps``).

What every host needs: the data root at the same path (shared storage: workers read the
examples and the base model from it, the chief writes the model and the backup to it), and
this repository and its virtual environment at the same paths as on the driver (executors
run ``PYSPARK_PYTHON``, which the driver sets to its own interpreter). The workers talk to
each other over TCP on ports the OS picks when the stage starts (one per worker).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import threading
import time
import uuid
from pathlib import Path

from core.layout import Layout
from core.settings import PreprocessSettings, TrainSettings, defaults
from jobs.spark import free_port, get_spark, is_local_master
from models import fit
from models.distributed import (
    WorkerFailed,
    WorkerTimeout,
    _describe,
    _tail,
    finish,
    start_worker,
    stop_workers,
    worker_dir,
    write_spec,
)

log = logging.getLogger(__name__)
APP_NAME = "freshrank-train"
POLL_S = 1.0


class ClusterTooSmall(RuntimeError):
    """The cluster did not offer a task slot to every worker in time."""


def is_cluster(master: str | None) -> bool:
    """True for a master that places work on a cluster's executors (not ``local[...]``)."""
    return bool(master) and not is_local_master(master)


def spark_conf(cfg: TrainSettings, workers: int) -> dict[str, str]:
    """The training application's Spark settings: one worker per executor, the stage
    retried at most ``cluster_attempts`` times, Spark's own slot check bounded too."""
    cores = str(cfg.cores_per_worker)
    return {
        "spark.executor.cores": cores,
        "spark.task.cpus": cores,
        "spark.executor.memory": cfg.executor_memory,
        "spark.cores.max": str(workers * cfg.cores_per_worker),  # standalone: no more
        "spark.executor.instances": str(workers),  # YARN / Kubernetes
        "spark.stage.maxConsecutiveAttempts": str(cfg.cluster_attempts),
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "1s",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": str(
            max(1, cfg.cluster_wait_s)
        ),
    }


def task_slots(sc) -> int:
    """Tasks the application's registered executors can run at once (a barrier stage of N
    tasks needs N); Spark's own count, which accounts for ``spark.task.cpus``."""
    jsc = sc._jsc.sc()
    return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))


def wait_for_slots(sc, workers: int, wait_s: float, master: str) -> int:
    """Return the slot count once it reaches ``workers``; raise :class:`ClusterTooSmall`
    after ``wait_s`` seconds (executors register a few seconds after the application)."""
    deadline = time.monotonic() + wait_s
    slots = task_slots(sc)
    while slots < workers and time.monotonic() < deadline:
        time.sleep(POLL_S)
        slots = task_slots(sc)
    if slots < workers:
        raise ClusterTooSmall(
            f"[train] workers = {workers} needs {workers} task slots at once on {master}, "
            f"but after {wait_s:.0f} s the cluster gave this application {slots}. Lower "
            "[train] workers, free or add executors, or wait longer ([train] cluster_wait_s)."
        )
    return slots


def barrier_worker(spec_path: str, timeout_s: float, _partition):
    """One task of the barrier stage (runs on an executor): start MWMS worker ``i`` and wait.

    Yields one line ``"<index> <stage id>"`` when the worker exited 0; raises (failing the
    stage, which Spark then runs again) when it did not.
    """
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    index = ctx.partitionId()
    host = ctx.getTaskInfos()[index].address.rsplit(":", 1)[0]
    addresses = ctx.allGather(f"{host}:{free_port(host)}")
    spec = Path(spec_path)
    log_path = spec.parent / f"worker-{index}.log"
    proc = start_worker(spec, addresses, index, log_path)
    try:
        code = proc.wait(timeout=timeout_s)
    except BaseException:  # the time limit, or Spark interrupting the task
        stop_workers([proc])
        raise
    if code != 0:
        raise WorkerFailed(
            f"worker {index} on {host} {_describe(code)}. Last lines of {log_path}:\n"
            + _tail(log_path),
            worker=index,
            returncode=code,
            log=log_path,
        )
    yield f"{index} {ctx.stageId()}"


def cluster_session(master: str, cfg: TrainSettings, workers: int, pre: PreprocessSettings):
    """The SparkSession of this process on ``master``; refuses one already running elsewhere
    (a process has one SparkContext: e.g. a local preprocessing session)."""
    pre = dataclasses.replace(pre, spark_master=master)
    spark = get_spark(pre, app_name=APP_NAME, conf=spark_conf(cfg, workers))
    running = spark.sparkContext.master
    if running != master:
        raise RuntimeError(
            f"this process already runs a SparkContext on {running}; cluster training on "
            f"{master} needs a process of its own (e.g. python -m models.train)"
        )
    return spark


def train_on_cluster(
    base_model: str | Path | None,
    layout: Layout,
    ds: str,
    out_dir: Path,
    strategy: str,
    cfg: TrainSettings,
    master: str,
    pre: PreprocessSettings | None = None,
    timeout_s: float | None = None,
) -> dict:
    """Train with ``cfg.workers`` MWMS workers as a barrier stage on ``master``.

    Same summary as :func:`models.train.finetune`, plus ``master``, ``stage_attempts`` and
    ``logs``. Raises :class:`ClusterTooSmall` when the cluster has fewer free slots than
    workers, :class:`~models.distributed.WorkerTimeout` past ``timeout_s`` (default
    ``cfg.worker_timeout_s``) and :class:`~models.distributed.WorkerFailed` when the last
    allowed attempt of the stage failed.
    """
    fit.check_request(strategy, base_model)
    workers = cfg.workers
    if workers < 2:
        raise ValueError(f"cluster training needs workers >= 2, got {workers}")
    timeout_s = timeout_s or cfg.worker_timeout_s
    started = time.perf_counter()
    out_dir = Path(out_dir)
    spark = cluster_session(master, cfg, workers, pre or defaults().preprocess)
    sc = spark.sparkContext
    slots = wait_for_slots(sc, workers, cfg.cluster_wait_s, master)
    # Each worker's TensorFlow gets its executor's cores (spark.task.cpus).
    threads = cfg.cores_per_worker
    spec_path = write_spec(layout, ds, strategy, base_model, out_dir, cfg, workers, threads)
    log.info(
        "train %s: %s with %d workers as a barrier stage on %s (%d slots, app %s); logs in %s",
        ds,
        strategy,
        workers,
        master,
        slots,
        sc.applicationId,
        spec_path.parent,
    )
    group = f"{APP_NAME}-{ds}-{uuid.uuid4().hex[:8]}"
    sc.setJobGroup(group, f"distributed training of {ds} ({workers} workers)", True)
    expired = threading.Event()

    def expire():
        expired.set()
        sc.cancelJobGroup(group)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    task = functools.partial(barrier_worker, str(spec_path), timeout_s)
    stage = sc.parallelize(range(workers), workers).barrier().mapPartitions(task)
    try:
        # Through a shuffle: Spark runs a failed barrier stage again only when it is a
        # shuffle-map stage ("Could not recover from a failed barrier ResultStage").
        done = stage.coalesce(1, shuffle=True).collect()
    except Exception as exc:
        what = f"distributed training of {ds} on {master} ({workers} workers)"
        if expired.is_set():
            raise WorkerTimeout(f"{what} timed out after {timeout_s:.0f} s") from exc
        raise WorkerFailed(
            f"{what} failed (at most {cfg.cluster_attempts} attempt(s) of its stage); "
            f"worker logs in {spec_path.parent}. {_first_error(exc)}"
        ) from exc
    finally:
        timer.cancel()
        sc.setLocalProperty("spark.jobGroup.id", None)
    info = sc.statusTracker().getStageInfo(int(done[0].split()[1]))
    attempts = (info.currentAttemptId + 1) if info else None
    summary = finish(ds, strategy, base_model, out_dir, workers, started, f"{spec_path.parent}")
    summary.update(
        master=master,
        stage_attempts=attempts,
        logs=[str(worker_dir(out_dir) / f"worker-{i}.log") for i in range(workers)],
    )
    log.info(
        "train %s: done on %s in %.1f s (%s stage attempt(s), resumed: %s)",
        ds,
        master,
        summary["seconds"],
        attempts,
        summary["resumed"],
    )
    return summary


def _first_error(exc: BaseException) -> str:
    """The Python error a task raised (what a worker's log said), out of Spark's trace."""
    text = str(exc)
    for pattern in (
        r"(models\.distributed\.WorkerFailed: .*?)(?:\n\s*at |\Z)",
        r"Job aborted due to stage failure: (.*?)(?:\n\s*at |\Z)",
    ):
        found = re.search(pattern, text, re.S)
        if found:
            return found.group(1).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:500] if lines else type(exc).__name__
