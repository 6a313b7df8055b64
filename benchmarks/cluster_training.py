"""Cluster training benchmark: writes ``<out>/cluster_training.json``.

``python -m benchmarks.cluster_training --out var/bench [--quick]`` (``make
bench-cluster-training``) trains one day's retrain three ways on the same examples:

* ``local_1``: one worker in this process (``[train] workers = 1``, the embedded default);
* ``cluster``: ``--workers`` MWMS workers as a Spark barrier stage on a standalone cluster
  started from the pip package on 127.0.0.1 (one worker daemon offering ``--workers`` cores,
  so one 1-core executor per training worker), through the stage's CLI
  (``python -m models.train``), as the ``fine_tune`` task runs it;
* ``killed``: the same cluster run, with the executor of worker 1 SIGKILLed once a backup
  exists and the run is into its second epoch: Spark runs the stage again and the workers
  resume from the backup. ``steps_lost`` is the steps done since that backup, from the
  chief's progress log at the kill (one line per ``backup_every_steps / 10`` steps).

It reports holdout AUC and training examples/s of each (``auc_cluster``, ``auc_local_1``,
``examples_per_second_cluster``, ``examples_per_second_local_1``, ...), and
``resumed_after_executor_kill``. Targets: cluster AUC within 0.003 of one local worker; a
killed executor costs at most one backup interval of work. The full run simulates
``--days`` demo-scale days and preprocesses them with Spark (as ``bench-training``);
``--quick`` writes synthetic example days instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.training import build_world, say
from core.settings import REPO_ROOT, world_env

KILL_AFTER_EPOCH = 1  # kill once the chief logs progress in this epoch (0-based)


def holdout_auc(layout, ds: str, model_path) -> float:
    from models import ranker
    from models.metrics import auc

    holdout = ranker.read_examples([layout.examples(ds)], "holdout")
    model = ranker.load_ranker(model_path)
    scores = model.predict(ranker.to_inputs(holdout), batch_size=8192, verbose=0).ravel()
    return round(auc(ranker.labels(holdout), scores), 5)


def cli_env(world: Path, master: str, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHRANK__")}
    env.update(
        world_env(world),
        FRESHRANK__PREPROCESS__SPARK_MASTER=master,
        FRESHRANK__TRAIN__WORKERS=str(workers),
        TF_USE_LEGACY_KERAS="1",
    )
    return env


def train_on_cluster(world: Path, ds: str, master: str, workers: int, kill=None) -> dict:
    """Retrain ``ds`` through ``python -m models.train`` on ``master``; ``kill(proc)`` runs
    while it trains and returns what it did. Returns the stage's summary (+ ``kill``)."""
    argv = [sys.executable, "-m", "models.train", "--ds", ds, "--strategy", "retrain"]
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=cli_env(world, master, workers),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        killed = kill(proc) if kill else None
        stdout, stderr = proc.communicate(timeout=3600)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise RuntimeError(f"cluster training failed:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    summary = json.JSONDecoder().raw_decode(stdout[stdout.index("{\n") :])[0]
    summary["kill"] = killed
    return summary


def kill_executor_when_training(out_dir: Path):
    """A ``kill`` for :func:`train_on_cluster`: SIGKILL the executor JVM of worker 1 once a
    backup exists and the chief logs progress in epoch ``KILL_AFTER_EPOCH``; returns the
    chief's log text at that moment."""
    from ops.faults import kill_executor_in_epoch

    chief_log = Path(out_dir) / "workers" / "worker-0.log"
    # The log is appended to by every run into this directory: read this run's part only.
    since = chief_log.stat().st_size if chief_log.exists() else 0

    def kill(proc: subprocess.Popen) -> dict:
        text = kill_executor_in_epoch(proc, out_dir, KILL_AFTER_EPOCH, since)
        if text is None:
            raise RuntimeError("the run ended before its executor could be killed")
        say("killed worker 1's executor")
        return {"at": time.time(), "log": text}

    return kill


def bench(out: Path, quick: bool, days: int, workers: int) -> dict:
    from core.layout import Layout
    from jobs.spark import start_standalone_cluster
    from models.fit import last_progress
    from models.train import finetune

    started = time.perf_counter()
    world = out / "cluster-training-world"
    settings, layout, dates, source = build_world(world, quick, days, "demo", 40_000)
    ds, cfg = dates[-1], settings.train
    result: dict = {"world": source, "days": dates, "cpu_count": os.cpu_count()}

    say("retrain with 1 local worker")
    local = finetune(None, layout, ds, layout.model_dir(ds) / "local-1", "retrain", cfg)
    result.update(
        auc_local_1=holdout_auc(layout, ds, local["model_path"]),
        examples_per_second_local_1=local["examples_per_second"],
        seconds_local_1=local["seconds"],
    )
    say(f"local: AUC {result['auc_local_1']}, {local['seconds']} s")

    with start_standalone_cluster(world / "spark-cluster", cores=workers, memory="4g") as cluster:
        result.update(master=cluster.master_url, workers=workers)
        say(f"cluster {cluster.master_url}: retrain with {workers} workers")
        run = train_on_cluster(world, ds, cluster.master_url, workers)
        result.update(
            auc_cluster=holdout_auc(layout, ds, run["model_path"]),
            examples_per_second_cluster=run["examples_per_second"],
            seconds_cluster=run["seconds"],
            stage_attempts_cluster=run["stage_attempts"],
        )
        say(f"cluster: AUC {result['auc_cluster']}, {run['seconds']} s")

        say("again, killing worker 1's executor in epoch 2")
        out_dir = Layout(settings.data_root).candidate_dir(ds)
        killed = train_on_cluster(
            world, ds, cluster.master_url, workers, kill_executor_when_training(out_dir)
        )
    steps = killed["steps_per_epoch"]
    resumed_at = (
        killed["resumed_from_epoch"] * steps + killed["resumed_from_step"]
        if killed["resumed"]
        else 0
    )
    at_kill = last_progress(killed["kill"]["log"], steps)
    every = max(1, cfg.backup_every_steps // 10)
    result.update(
        resumed_after_executor_kill=bool(killed["resumed"]),
        stage_attempts_after_kill=killed["stage_attempts"],
        steps_per_epoch=steps,
        total_steps=steps * killed["epochs"],
        killed_at_step_at_least=at_kill,
        resumed_at_step=resumed_at,
        # Steps done before the kill and done again: at least the progress line's, at most
        # one progress interval more.
        steps_lost=[at_kill - resumed_at, at_kill - resumed_at + every],
        backup_every_steps=cfg.backup_every_steps,
        auc_after_kill=holdout_auc(layout, ds, killed["model_path"]),
        seconds_after_kill=killed["seconds"],
    )
    gap = abs(result["auc_cluster"] - result["auc_local_1"])
    result["auc_gap"] = round(gap, 5)
    result["targets"] = {
        "auc_cluster_within_0.003_of_local_1": gap <= 0.003,
        "kill_costs_at_most_one_backup_interval": bool(killed["resumed"])
        and at_kill - resumed_at <= cfg.backup_every_steps,
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "var" / "bench"))
    parser.add_argument("--quick", action="store_true", help="synthetic days, no Spark")
    parser.add_argument("--days", type=int, default=3, help="days of examples")
    parser.add_argument("--workers", type=int, default=2, help="training workers (cores)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = bench(out, args.quick, args.days, args.workers)
    (out / "cluster_training.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    say(f"wrote {out / 'cluster_training.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
