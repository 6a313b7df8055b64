"""The SparkSession every Spark stage uses, and a Spark standalone cluster on one machine.

The master comes from settings (``[preprocess] spark_master``, default ``local[2]``), so the
same job runs on a laptop or against a cluster. Under ``spark-submit`` the master given to
spark-submit always wins (settings cannot silently turn a cluster run into a local one), as
it does when ``spark_master`` is empty (``FRESHRANK__PREPROCESS__SPARK_MASTER=``)::

    python -m jobs.spark cluster-up [--state var/spark-cluster]   # prints the master URL
    PYTHONPATH=$PWD $(python -m jobs.spark home)/bin/spark-submit \
        --master spark://127.0.0.1:PORT jobs/preprocess.py --ds 2026-11-20
    python -m jobs.spark cluster-down [--state var/spark-cluster]

:func:`start_standalone_cluster` starts a master and one worker from the pip package's
``spark-class`` (bound to 127.0.0.1 only, on free ports, each in its own process group, logs
and scratch space under a work directory) and returns once the worker has registered;
:func:`stop_standalone_cluster` stops both, killing hard what does not stop in time.
:func:`spark_master_from_connection` turns an Airflow Spark connection (host
``spark://127.0.0.1``, port 7077) into a master URL without importing Airflow, and
:func:`spark_submit_command` builds the spark-submit command line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from core.settings import REPO_ROOT, PreprocessSettings, defaults

LOOPBACK = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
DEFAULT_STATE_DIR = REPO_ROOT / "var" / "spark-cluster"


def submitted() -> bool:
    """True when this Python process was started by spark-submit (or the pyspark shell)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(
    cfg: PreprocessSettings | None = None,
    app_name: str = "freshrank",
    conf: Mapping[str, str] | None = None,
):
    """The process's SparkSession (created on first use): master, memory and SQL settings
    from ``cfg``, plus ``conf``. Executors run Python with this interpreter (the same
    virtual environment path on every host) and this repository on their PYTHONPATH."""
    from pyspark.sql import SparkSession

    cfg = cfg or defaults().preprocess
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    builder = builder.config("spark.executorEnv.PYTHONPATH", str(REPO_ROOT))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    # A master set here would override spark-submit's --master: only set it when we are
    # not running under spark-submit, and settings name one.
    if cfg.spark_master and not submitted():
        builder = builder.master(cfg.spark_master)
    spark = (
        builder.config("spark.driver.memory", cfg.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # A cached frame (the day's parsed events) is built and read a few times, then
        # dropped: compressing its columns cost more time than it saved (1M events: 155 MB).
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
        # Keep the compiled code of every query of a run (default 100 entries: the
        # validation's queries pushed out the stage's, which were compiled again each day).
        .config("spark.sql.codegen.cache.maxEntries", "2000")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


# --- master URLs ------------------------------------------------------------------------
def is_local_master(master: str) -> bool:
    """``local``, ``local[2]``, ``local[*]``...: Spark in this process, no executors."""
    return re.fullmatch(r"local(\[[^\]]*\])?", master.strip()) is not None


def spark_master_from_connection(conn) -> str:
    """Master URL of an Airflow Spark connection, or of a mapping with ``host``/``port``.

    ``spark://127.0.0.1`` + port 7077 gives ``spark://127.0.0.1:7077``; a bare host gets the
    ``spark://`` scheme; ``local[2]``, ``yarn`` and URLs that carry their own port (HA lists
    ``spark://h1:7077,h2:7077`` included) are returned as they are. Pure: no Airflow import.
    """
    if isinstance(conn, Mapping):
        host, port = conn.get("host"), conn.get("port")
    else:
        host, port = getattr(conn, "host", None), getattr(conn, "port", None)
    host = (host or "").strip()
    if not host:
        raise ValueError("the Spark connection has no host (e.g. spark://127.0.0.1)")
    if host == "yarn" or is_local_master(host):
        return host
    if port in ("", None):
        port = None
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise ValueError(f"the Spark connection's port is not a number: {port!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"the Spark connection's port is out of range: {port}")
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "spark", host
    rest = rest.rstrip("/")
    if not rest or rest.endswith(":"):
        raise ValueError(f"the Spark connection's host has no address: {host!r}")
    given = re.search(r":(\d+)$", rest.split(",")[-1])
    if given:
        if port is not None and port != int(given.group(1)) and "," not in rest:
            raise ValueError(f"the Spark connection names two ports: {host} and {port}")
        return f"{scheme}://{rest}"
    if port is None and scheme == "spark":
        port = 7077  # the standalone master's default
    return f"{scheme}://{rest}" + (f":{port}" if port else "")


def spark_home() -> Path:
    """The Spark distribution inside the pip package (``bin/spark-submit``, ``jars/``)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_submit_command(
    master: str,
    app: str | os.PathLike,
    app_args: Sequence[str] = (),
    *,
    conf: Mapping[str, str] | None = None,
    py_files: Sequence[str | os.PathLike] = (),
    driver_memory: str = "1g",
    executor_memory: str = "768m",
    total_executor_cores: int | None = None,
) -> list[str]:
    """The argv of ``spark-submit`` for a Python application (client deploy mode)."""
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", master]
    cmd += ["--driver-memory", driver_memory, "--executor-memory", executor_memory]
    if total_executor_cores:
        cmd += ["--total-executor-cores", str(total_executor_cores)]
    for key, value in (conf or {}).items():
        cmd += ["--conf", f"{key}={value}"]
    if py_files:
        cmd += ["--py-files", ",".join(str(p) for p in py_files)]
    return cmd + [str(app), *map(str, app_args)]


def submit_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for spark-submit on this machine: this repository on PYTHONPATH, this
    interpreter for the driver and Python workers, Spark bound to the loopback address."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    env.update(extra or {})
    return env


# --- a standalone cluster on this machine ---------------------------------------------------
def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` (an address of this machine) right now, chosen by the OS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class StandaloneCluster:
    """A running master + worker; ``stop()`` (or leaving a ``with`` block) stops both."""

    master_url: str
    web_ui_url: str
    work_dir: Path
    pids: dict[str, int]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    def stop(self, timeout: float = 20.0) -> None:
        stop_standalone_cluster(self, timeout)

    def __enter__(self) -> StandaloneCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def state(self) -> dict:
        return {
            "master_url": self.master_url,
            "web_ui_url": self.web_ui_url,
            "work_dir": str(self.work_dir),
            "pids": self.pids,
        }


def _launch(name: str, args: list[str], work_dir: Path, env: dict) -> subprocess.Popen:
    log = open(work_dir / f"{name}.log", "ab")  # the child gets its own copy of the fd
    try:
        return subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work_dir,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    finally:
        log.close()


def _master_status(web_ui_url: str) -> dict | None:
    """The master's ``/json/`` status, or None while it does not answer (yet)."""
    return _master_answer(web_ui_url)[0]


def _master_answer(web_ui_url: str) -> tuple[dict | None, str]:
    """The master's ``/json/`` status (None while it does not answer yet) and its answer."""
    url = f"{web_ui_url}/json/"
    try:
        resp = requests.get(url, timeout=2)
    except requests.RequestException as exc:
        return None, f"GET {url}: {type(exc).__name__}"
    answer = f"GET {url}: HTTP {resp.status_code} {resp.reason}"
    if not resp.ok:
        return None, answer
    try:
        return resp.json(), answer
    except ValueError:
        return None, f"{answer}, not JSON"


def _log_tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_standalone_cluster(
    work_dir: str | os.PathLike,
    *,
    cores: int = 1,
    memory: str = "1g",
    master_port: int | None = None,
    daemon_memory: str = "512m",
    timeout: float = 120.0,
) -> StandaloneCluster:
    """Start a master and one worker on 127.0.0.1; return when the worker is registered.

    Logs (``master.log``, ``worker.log``), the worker's application directories and Spark's
    scratch space live under ``work_dir``. On failure or timeout both are killed and
    ``RuntimeError`` says why, with the end of the logs.
    """
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("worker", "local"):
        (work_dir / sub).mkdir(exist_ok=True)
    port, ui_port, worker_ui_port = master_port or free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        SPARK_LOCAL_IP=LOOPBACK,  # the web UIs bind here, not to 0.0.0.0
        SPARK_WORKER_DIR=str(work_dir / "worker"),
        SPARK_LOCAL_DIRS=str(work_dir / "local"),
        SPARK_DAEMON_MEMORY=daemon_memory,
        # No REST submission server (it would listen on the fixed port 6066).
        SPARK_MASTER_OPTS=" ".join(
            [env.get("SPARK_MASTER_OPTS", ""), "-Dspark.master.rest.enabled=false"]
        ).strip(),
        PYSPARK_PYTHON=env.get("PYSPARK_PYTHON", sys.executable),
    )
    master_url = f"spark://{LOOPBACK}:{port}"
    web_ui_url = f"http://{LOOPBACK}:{ui_port}"
    cluster = StandaloneCluster(master_url, web_ui_url, work_dir, {})
    try:
        master_args = [MASTER_CLASS, "--host", LOOPBACK, "--port", str(port)]
        master_args += ["--webui-port", str(ui_port)]
        cluster.processes["master"] = _launch("master", master_args, work_dir, env)
        cluster.pids["master"] = cluster.processes["master"].pid
        _wait(cluster, lambda s: s.get("status") == "ALIVE", "the master", timeout)
        worker_args = [WORKER_CLASS, master_url, "--host", LOOPBACK, "--cores", str(cores)]
        worker_args += ["--memory", memory, "--webui-port", str(worker_ui_port)]
        worker_args += ["--work-dir", str(work_dir / "worker")]
        cluster.processes["worker"] = _launch("worker", worker_args, work_dir, env)
        cluster.pids["worker"] = cluster.processes["worker"].pid
        _wait(cluster, lambda s: s.get("aliveworkers", 0) >= 1, "the worker", timeout)
    except BaseException:
        stop_standalone_cluster(cluster, timeout=5)
        raise
    return cluster


def _wait(cluster: StandaloneCluster, ready, what: str, timeout: float) -> None:
    deadline, answer = time.monotonic() + timeout, "no request"
    while time.monotonic() < deadline:
        for name, proc in cluster.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the Spark {name} exited with {proc.returncode} while starting:\n"
                    + _log_tail(cluster.work_dir / f"{name}.log")
                )
        status, answer = _master_answer(cluster.web_ui_url)
        if status and ready(status):
            return
        time.sleep(0.5)
    logs = "\n".join(_log_tail(cluster.work_dir / f"{n}.log") for n in cluster.processes)
    raise RuntimeError(f"{what} was not ready after {timeout:.0f}s (last {answer}):\n{logs}")


def _is_ours(pid: int, main_class: str) -> bool:
    """The pid is still the Spark daemon we started (not a reused pid) and not a zombie."""
    try:
        proc = psutil.Process(pid)
        return main_class in "\0".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):  # gone, a zombie, not ours to read, or no pid
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the daemon leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def stop_standalone_cluster(cluster: StandaloneCluster, timeout: float = 20.0) -> None:
    """Stop the worker (with its executors), then the master: SIGTERM to each process group,
    SIGKILL to the group after ``timeout`` seconds. Safe to call twice."""
    classes = {"worker": WORKER_CLASS, "master": MASTER_CLASS}
    for name in ("worker", "master"):
        pid = cluster.pids.get(name)
        if pid is None:
            continue
        proc = cluster.processes.get(name)
        if proc is not None:
            alive = proc.poll() is None
        else:
            alive = _is_ours(pid, classes[name])
        if alive:
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    break
                if proc is None and not _is_ours(pid, classes[name]):
                    break
                time.sleep(0.2)
        # Whatever is left in the group (an executor, a daemon that hung) is killed hard.
        _signal_group(pid, signal.SIGKILL)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        cluster.pids.pop(name, None)


# --- CLI --------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("cluster-up", help="start a master and one worker on 127.0.0.1")
    up.add_argument("--state", type=Path, default=DEFAULT_STATE_DIR, help="work/state dir")
    up.add_argument("--cores", type=int, default=1)
    up.add_argument("--memory", default="1g")
    up.add_argument("--port", type=int, help="master port (default: a free one)")
    down = sub.add_parser("cluster-down", help="stop the cluster started by cluster-up")
    down.add_argument("--state", type=Path, default=DEFAULT_STATE_DIR)
    sub.add_parser("home", help="print the Spark home of the pip package")
    args = parser.parse_args(argv)

    if args.command == "home":
        print(spark_home())
        return 0
    state_file = args.state / "cluster.json"
    if args.command == "cluster-up":
        if state_file.exists():
            old = json.loads(state_file.read_text())
            classes = {"master": MASTER_CLASS, "worker": WORKER_CLASS}
            if any(_is_ours(pid, classes[n]) for n, pid in old["pids"].items()):
                print(f"already running: {old['master_url']} (cluster-down first)")
                return 1
        cluster = start_standalone_cluster(
            args.state, cores=args.cores, memory=args.memory, master_port=args.port
        )
        state_file.write_text(json.dumps(cluster.state(), indent=2))
        print(cluster.master_url)
        return 0
    if not state_file.exists():
        print(f"no cluster state in {state_file}")
        return 1
    state = json.loads(state_file.read_text())
    cluster = StandaloneCluster(
        state["master_url"], state["web_ui_url"], Path(state["work_dir"]), state["pids"]
    )
    stop_standalone_cluster(cluster)
    state_file.unlink()
    print(f"stopped {state['master_url']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
