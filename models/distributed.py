"""Distributed training with ``tf.distribute.MultiWorkerMirroredStrategy`` (MWMS).

Two parts:

* the launcher, :func:`train_distributed` (what ``models.train.finetune`` calls when
  ``[train] workers`` > 1; also ``python -m models.train --ds 2026-11-20 --workers 2``),
  starts N worker processes on this machine, each with its own ``TF_CONFIG`` (a cluster of
  ``127.0.0.1:<free port>`` workers, task ``worker``/``i``), and supervises them: when one
  exits non-zero or dies, the others are stopped hard (SIGTERM to each worker's own process
  group, SIGKILL after a short grace; a worker blocked in a collective waiting for a missing
  peer ignores SIGTERM) and a :class:`WorkerFailed` names the worker, its exit code or signal
  and the last lines of its log. The whole run has a time limit (``worker_timeout_s``).
  Workers also die with the launcher (``PR_SET_PDEATHSIG``). Logs go to
  ``<out dir>/workers/worker-<i>.log``.
* the worker, :func:`run_worker` (``python -m models.distributed worker ...``): creates the
  strategy from ``TF_CONFIG`` before anything else touches TensorFlow, then runs the same
  loop as a single process (:func:`models.fit.fit_ranker`): the model is built or loaded
  (warm start, optimizer state included) inside ``strategy.scope()``; each worker reads the
  training columns (same days and replay sampling as one process) and trains, in every step,
  on its own ``batch_size / N`` rows of the global batch one process would train on
  (``models.fit.batch_rows``; the input is sharded there, so tf.data auto-sharding is
  OFF); gradients are all-reduced every step, and ``BackupAndRestore`` backs up to
  ``<out dir>/backup``. Worker 0, the chief, saves ``<out dir>/model.keras``; the others
  save to scratch directories that are removed (the usual MWMS save pattern).

On a real cluster there is no launcher: start ``python -m models.distributed worker --ds
<ds> --strategy full --base <model.keras>`` on every host with ``TF_CONFIG`` set,
e.g. ``{"cluster": {"worker": ["host-a:2222", "host-b:2222"]}, "task": {"type": "worker",
"index": 0}}`` on host-a and ``"index": 1`` on host-b. Every host needs the data root and
the output directory on shared storage (the backup is read from ``<out>/backup`` by all
workers); whoever starts the workers must restart all of them when one fails: the rerun
resumes from the backup.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from core.layout import Layout, check_ds, read_json, write_json
from core.settings import REPO_ROOT, TrainSettings, load_settings
from core.summaries import TrainSummary, write_summary
from models import fit

log = logging.getLogger(__name__)
SUPERVISOR_ENV = "FRESHRANK_SUPERVISOR_PID"
KILL_GRACE_S = 1.0
POLL_S = 0.1


class WorkerFailed(RuntimeError):
    """A worker exited non-zero or died; the others were stopped.

    ``worker``, ``returncode`` (negative: killed by that signal) and ``log`` describe the
    first worker found failed (None when the run timed out).
    """

    def __init__(self, message: str, worker=None, returncode=None, log=None):
        super().__init__(message)
        self.worker, self.returncode, self.log = worker, returncode, log


class WorkerTimeout(WorkerFailed, TimeoutError):
    """The run passed its time limit; every worker was stopped."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (the OS picks them)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: list[str], index: int) -> str:
    return json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


def worker_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "workers"


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return "(no log)"


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # each worker leads its own process group
    except (ProcessLookupError, PermissionError):
        pass


def stop_workers(procs: list[subprocess.Popen], grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM every worker's process group, SIGKILL what is left after ``grace_s``; reap."""
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    for p in procs:
        _signal_group(p, signal.SIGKILL)  # also whatever a worker started in its group
    for p in procs:
        p.wait()


def supervise(procs: list[subprocess.Popen], logs: list[Path], timeout_s: float, what: str):
    """Wait for every worker to exit 0; on the first failure or at the deadline stop all.

    Raises :class:`WorkerFailed` naming the failed worker(s), how they ended and their last
    log lines.
    """
    started = time.monotonic()
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                elapsed = time.monotonic() - started
                others = [i for i, c in enumerate(codes) if c is None]
                stop_workers(procs)
                first = failed[0]
                how = "; ".join(
                    f"worker {i} (pid {procs[i].pid}) {_describe(codes[i])}" for i in failed
                )
                stopped = f"; stopped worker(s) {others}" if others else ""
                raise WorkerFailed(
                    f"{what} failed after {elapsed:.1f} s: {how}{stopped}. "
                    f"Last lines of {logs[first]}:\n{_tail(logs[first])}",
                    worker=first,
                    returncode=codes[first],
                    log=logs[first],
                )
            if all(c == 0 for c in codes):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                running = [i for i, c in enumerate(codes) if c is None]
                stop_workers(procs)
                tails = "\n".join(f"--- {logs[i]}:\n{_tail(logs[i], 5)}" for i in running)
                raise WorkerTimeout(
                    f"{what} timed out after {timeout_s:.0f} s; killed worker(s) {running}.\n"
                    + tails
                )
            time.sleep(POLL_S)
    finally:
        if any(p.poll() is None for p in procs):  # e.g. KeyboardInterrupt in the launcher
            stop_workers(procs)


def train_distributed(
    base_model: str | Path | None,
    layout: Layout,
    ds: str,
    out_dir: Path,
    strategy: str,
    cfg: TrainSettings,
    workers: int | None = None,
    timeout_s: float | None = None,
) -> dict:
    """Train with ``workers`` (default ``cfg.workers``) local MWMS worker processes.

    Same arguments and summary as :func:`models.train.finetune`, plus ``workers``; the model
    is saved to ``out_dir/model.keras`` by the chief. Raises :class:`WorkerFailed` when a
    worker fails or the run takes longer than ``timeout_s`` (default ``cfg.worker_timeout_s``).
    """
    fit.check_request(strategy, base_model)
    workers = workers or cfg.workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    timeout_s = timeout_s or cfg.worker_timeout_s
    started = time.perf_counter()
    # Local workers share this machine's cores; TF would give each of them all of them.
    threads = max(1, (os.cpu_count() or 1) // workers)
    spec_path = write_spec(layout, ds, strategy, base_model, out_dir, cfg, workers, threads)
    wdir = spec_path.parent
    addresses = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    logs = [wdir / f"worker-{i}.log" for i in range(workers)]
    procs: list[subprocess.Popen] = []
    log.info(
        "train %s: %s with %d workers at %s; logs in %s", ds, strategy, workers, addresses, wdir
    )
    try:
        for i in range(workers):
            procs.append(start_worker(spec_path, addresses, i, logs[i]))
    except BaseException:
        stop_workers(procs)
        raise
    supervise(procs, logs, timeout_s, f"distributed training of {ds} ({workers} workers)")

    summary = finish(ds, strategy, base_model, out_dir, workers, started, f"see {logs[0]}")
    summary["logs"] = [str(p) for p in logs]
    return summary


def write_spec(layout, ds, strategy, base_model, out_dir, cfg, workers, threads=0) -> Path:
    """Write ``<out dir>/workers/spec.json``, what every worker of a run reads (the workers
    directory is cleared of an earlier attempt's summaries); return its path."""
    wdir = worker_dir(out_dir)
    wdir.mkdir(parents=True, exist_ok=True)
    for stale in wdir.glob("worker-*.json"):
        stale.unlink()
    spec = {
        "data_root": str(layout.root),
        "ds": ds,
        "strategy": strategy,
        "base_model": str(base_model) if base_model else None,
        "out_dir": str(out_dir),
        "train": dataclasses.asdict(dataclasses.replace(cfg, workers=workers)),
        "threads": threads,
    }
    return write_json(wdir / "spec.json", spec)


def start_worker(
    spec_path: Path, addresses: list[str], index: int, log_path: Path
) -> subprocess.Popen:
    """Start worker ``index`` of ``addresses`` (``python -m models.distributed worker``) in its
    own process group, appending to ``log_path``; it dies with this process
    (``PR_SET_PDEATHSIG``)."""
    env = {
        **os.environ,
        "TF_CONFIG": tf_config(addresses, index),
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
        SUPERVISOR_ENV: str(os.getpid()),
    }
    argv = [sys.executable, "-m", "models.distributed", "worker", "--spec", str(spec_path)]
    with open(log_path, "a") as fh:
        fh.write(
            f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} worker {index}/{len(addresses)} "
            f"at {addresses[index]} ===\n"
        )
        fh.flush()
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(ds, strategy, base_model, out_dir: Path, workers: int, started, where: str) -> dict:
    """The run's summary from the chief's (``worker-0.json``); the backup is removed."""
    chief = read_json(worker_dir(out_dir) / "worker-0.json")
    if chief is None:
        raise WorkerFailed(f"worker 0 finished but wrote no summary; {where}")
    shutil.rmtree(fit.backup_root(out_dir), ignore_errors=True)
    return fit.summarize(ds, strategy, base_model, out_dir, workers, chief, started)


# --- the worker -------------------------------------------------------------------------
def _die_with_supervisor() -> None:
    """Ask Linux to SIGKILL this worker when the launcher dies, so none is left behind."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(supervisor):  # the launcher died before prctl took effect
        os._exit(1)


def run_worker(
    data_root: Path,
    ds: str,
    strategy: str,
    base_model,
    out_dir: Path,
    cfg: TrainSettings,
    threads: int = 0,
) -> dict:
    """One worker of a run, configured by ``TF_CONFIG`` (one worker when it is unset)."""
    tf_conf = json.loads(os.environ.get("TF_CONFIG") or "{}")
    index = int(tf_conf.get("task", {}).get("index", 0))
    num_workers = len(tf_conf.get("cluster", {}).get("worker", [])) or 1
    fit.ranker.keras()  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    # The strategy must exist before any other TensorFlow op runs in this process.
    distribution = tf.distribute.MultiWorkerMirroredStrategy()
    out_dir = Path(out_dir)
    chief = index == 0
    scratch = worker_dir(out_dir) / f"scratch-{index}"
    result = fit.fit_ranker(
        base_model,
        Layout(data_root),
        ds,
        out_dir,
        strategy,
        cfg,
        distribution=distribution,
        worker_index=index,
        num_workers=num_workers,
        save_to=out_dir / "model.keras" if chief else scratch / "model.keras",
    )
    if chief:
        # Keras already deleted the checkpoint at the end of fit; drop what is left.
        shutil.rmtree(fit.backup_root(out_dir), ignore_errors=True)
        write_json(worker_dir(out_dir) / f"worker-{index}.json", result)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _train_settings(raw: dict) -> TrainSettings:
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields}
    return TrainSettings(**values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one worker (TF_CONFIG from the environment)")
    worker.add_argument("--spec", help="JSON written by the launcher (replaces the rest)")
    worker.add_argument("--ds")
    worker.add_argument("--strategy", default="full", choices=fit.STRATEGIES[1:])
    worker.add_argument("--base", help="model.keras to warm-start from")
    worker.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s"
    )

    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # one line per collective
    if args.command == "worker" and args.spec:
        _die_with_supervisor()
        spec = json.loads(Path(args.spec).read_text())
        result = run_worker(
            Path(spec["data_root"]),
            spec["ds"],
            spec["strategy"],
            spec["base_model"],
            Path(spec["out_dir"]),
            _train_settings(spec["train"]),
            spec.get("threads", 0),
        )
        print(json.dumps(result))
        return 0
    if not args.ds:
        parser.error("--ds is required")
    settings = load_settings(args.config)
    layout = Layout(settings.data_root)
    ds = check_ds(args.ds)
    # A worker started by hand (a multi-host run): it trains the day's candidate, and the
    # chief records the stage as models.train.fine_tune_day does.
    started = time.perf_counter()
    out = layout.candidate_dir(ds)
    result = run_worker(settings.data_root, ds, args.strategy, args.base, out, settings.train)
    tf_conf = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if int(tf_conf.get("task", {}).get("index", 0)) == 0:
        workers = len(tf_conf.get("cluster", {}).get("worker", [])) or 1
        result = fit.summarize(ds, args.strategy, args.base, out, workers, result, started)
        result = write_summary(layout, result, TrainSummary)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
