"""A long soak: many simulated nights in a row through the real scheduler, watching disk and memory.

``python -m ops.soak --nights 30`` (``make soak``) starts Airflow with ``scripts/up.sh`` in a
throwaway home (``var/soak/`` by default: its own AIRFLOW_HOME, data root and MLflow store;
schedule ``none``), then acts as the upstream delivery system: each night it writes one
simulated day (with the demo's dirt), announces it with an asset event (``ops.announce``)
and waits for the run the scheduler starts on its own. Nobody touches the run in between:
no retry by hand, no clean-up. After each night it records the run's state and seconds,
the strategy and whether the champion moved, the bytes on disk of each area and the memory
(RSS) of each Airflow service's process group.

Retention runs with short windows (``SOAK_RETENTION``), so within 30 nights every
pruned area must reach its plateau: the soak checks that, over the last third of the nights,
the pruned areas never grow past the size they had at the end of the middle third
(+ ``--slack``), and that no service's memory does either. What keeps growing by design is
reported per night: the Airflow and MLflow metadata databases and the task logs (one run's
records and logs each, pruned by ``airflow db clean`` in production, not here).

Writes ``var/bench/soak.json`` (per night and summary) and exits 1 when a night failed or
something grew without bound. ``make down`` is run at the end even on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from airflow_client.client import DAGApi, DAGPatchBody, DagRunApi, DAGRunResponse
from airflow_client.client.exceptions import NotFoundException

from core.layout import shift_ds
from core.settings import REPO_ROOT, load_settings, world_env
from jobs.spark import free_port
from ops import simulate
from ops.announce import TIMEOUT, announce, api_client, login

# Short windows so the plateau comes within the soak (the defaults keep 30 days of data).
SOAK_RETENTION = {
    "FRESHRANK__RETENTION__DATA_DAYS": "8",
    "FRESHRANK__RETENTION__STATE_DAYS": "3",
    "FRESHRANK__RETENTION__MODEL_DAYS": "3",
    "FRESHRANK__RETENTION__KEEP_VERSIONS": "5",
    "FRESHRANK__RETENTION__RAW_DAYS": "10",
    "FRESHRANK__TRAIN__RETRAIN_HISTORY_DAYS": "7",
}
# Areas that retention bounds, and areas that grow by design (one run's records a night).
BOUNDED = ("raw", "clean", "quarantine", "examples", "state", "models", "artifacts")
GROWING = ("runs", "airflow_db", "airflow_logs", "mlflow_db")
SERVICES = ("airflow-api", "airflow-scheduler", "airflow-dag-processor")
DAG_ID = "freshrank_nightly"


def soak_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHRANK__")}
    env.update(
        FRESHRANK_HOME=str(REPO_ROOT),
        AIRFLOW_CONFIG=str(REPO_ROOT / "airflow.cfg"),
        AIRFLOW_HOME=str(home / "airflow"),
        **world_env(home),
        FRESHRANK_RUN_DIR=str(home / "run"),
        FRESHRANK_LOG_DIR=str(home / "log"),
        FRESHRANK_UP_MLFLOW="0",
        FRESHRANK_SCHEDULE="none",  # runs start from the asset events this driver posts
        AIRFLOW_PORT=str(port),
        # The tiny world's first models are weak; warm starts still apply, and its few dozen
        # held-out ranking cases a day are judged (as in the e2e test).
        FRESHRANK__STRATEGY__RETRAIN_BELOW_POPULARITY="0",
        FRESHRANK__GATE__MIN_RANKING_CASES="10",
        **SOAK_RETENTION,
    )
    return env


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def disk_usage(home: Path) -> dict[str, int]:
    data = home / "data"
    usage = {name: tree_bytes(data / name) for name in ("raw", "clean", "quarantine", "examples")}
    usage.update(
        state=tree_bytes(data / "state"),
        models=tree_bytes(data / "models"),
        artifacts=tree_bytes(home / "artifacts"),
        runs=tree_bytes(data / "runs"),
        airflow_db=tree_bytes(home / "airflow" / "airflow.db"),
        airflow_logs=tree_bytes(home / "airflow" / "logs") + tree_bytes(home / "log"),
        mlflow_db=tree_bytes(home / "mlflow.db"),
    )
    return usage


def group_rss(pgid: int) -> int:
    """Resident bytes of every live process in process group ``pgid``."""
    total = 0
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                total += proc.memory_info().rss
        except (psutil.Error, OSError):  # gone (or not ours to read) in between
            continue
    return total


def memory_usage(home: Path) -> dict[str, int]:
    rss = {}
    for name in SERVICES:
        pid_file = home / "run" / f"{name}.pid"
        rss[name] = group_rss(int(pid_file.read_text())) if pid_file.exists() else 0
    rss["machine_available"] = psutil.virtual_memory().available  # MemAvailable, bytes
    return rss


def find_run(runs_api: DagRunApi, seen: set[str]) -> DAGRunResponse | None:
    """The asset-triggered run not seen yet (nights run one after the other)."""
    for run in runs_api.get_dag_runs(DAG_ID, limit=100, _request_timeout=TIMEOUT).dag_runs:
        if run.dag_run_id not in seen and run.run_type == "asset_triggered":
            return run
    return None


def wait_for_night(
    runs_api: DagRunApi, ds: str, seen: set[str], timeout_s: float
) -> DAGRunResponse:
    deadline = time.time() + timeout_s
    run = None
    while time.time() < deadline:
        run = run or find_run(runs_api, seen)
        if run:
            run = runs_api.get_dag_run(DAG_ID, run.dag_run_id, _request_timeout=TIMEOUT)
            if run.state in ("success", "failed"):
                seen.add(run.dag_run_id)
                return run
        time.sleep(3)
    raise TimeoutError(f"night {ds}: no finished run after {timeout_s:.0f} s (last: {run})")


def night_summary(data_root: Path, ds: str) -> dict:
    runs = data_root / "runs" / f"dt={ds}"

    def read(stage: str) -> dict:
        path = runs / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    register = read("register")
    return {
        "strategy": read("choose_strategy").get("strategy"),
        "promoted": register.get("promoted"),
        "version": register.get("version"),
        "failure": read("failure").get("reason"),
    }


def bounded(nights: list[dict], key: str, names, slack: float) -> dict:
    """For each name: its peak over the last third vs its value at the end of the middle third."""
    third = len(nights) // 3
    verdict = {}
    for name in names:
        series = [n[key][name] for n in nights]
        reference = series[2 * third - 1]
        peak = max(series[2 * third :])
        verdict[name] = {
            "end_of_middle_third": reference,
            "peak_of_last_third": peak,
            "bounded": peak <= reference * (1 + slack) + 64 * 1024,
        }
    return verdict


def growth_per_night(nights: list[dict], names) -> dict[str, int]:
    half = len(nights) // 2
    first, last = nights[half]["disk"], nights[-1]["disk"]
    return {n: (last[n] - first[n]) // max(len(nights) - 1 - half, 1) for n in names}


def run_soak(nights: int, home: Path, start: str, scale: str, slack: float, echo=print) -> dict:
    port = free_port()
    env = soak_env(home, port)
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(env=env)
    config = simulate.SCALES[scale]
    up = subprocess.run(
        [str(REPO_ROOT / "scripts" / "up.sh")], env=env, capture_output=True, text=True
    )
    if up.returncode:
        raise RuntimeError(f"scripts/up.sh failed:\n{up.stdout}\n{up.stderr}")
    records: list[dict] = []
    started = time.time()
    try:
        password = json.loads(
            (home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text()
        )["admin"]
        token = login(base, "admin", password)
        client = api_client(base, token)
        dags_api, runs_api = DAGApi(client), DagRunApi(client)
        deadline = time.time() + 180
        while True:  # the DAG processor parses the files first
            try:
                dags_api.get_dag(DAG_ID, _request_timeout=TIMEOUT)
                break
            except NotFoundException:
                if time.time() > deadline:
                    raise
                time.sleep(3)
        dags_api.patch_dag(DAG_ID, DAGPatchBody(is_paused=False), _request_timeout=TIMEOUT)
        seen: set[str] = set()
        for night in range(nights):
            ds = shift_ds(start, night)
            t0 = time.time()
            simulate.generate_day(settings.data_root, start, night, config, simulate.DIRTY)
            announce(ds, base, token)
            run = wait_for_night(runs_api, ds, seen, timeout_s=900)
            record = {
                "night": night + 1,
                "ds": ds,
                "state": run.state.value,
                "seconds": round(time.time() - t0, 1),
                **night_summary(settings.data_root, ds),
                "disk": disk_usage(home),
                "rss": memory_usage(home),
            }
            records.append(record)
            d, m = record["disk"], record["rss"]
            echo(
                f"night {night + 1:>2} {ds} {record['state']:7} {record['seconds']:6.1f}s "
                f"{record['strategy'] or '-':8} promoted={record['promoted']} "
                f"bounded areas {sum(d[k] for k in BOUNDED) / 2**20:7.1f} MiB  "
                f"growing {sum(d[k] for k in GROWING) / 2**20:6.1f} MiB  "
                f"services {sum(m[s] for s in SERVICES) / 2**20:6.0f} MiB RSS"
            )
            if night % 10 == 9:  # a token lives an hour or less: renew it now and then
                token = client.configuration.access_token = login(base, "admin", password)
    finally:
        down = subprocess.run(
            [str(REPO_ROOT / "scripts" / "down.sh")], env=env, capture_output=True, text=True
        )
        echo(down.stdout.strip())
    disk = bounded(records, "disk", BOUNDED, slack) if nights >= 6 else {}
    memory = bounded(records, "rss", SERVICES, slack) if nights >= 6 else {}
    return {
        "nights": nights,
        "scale": scale,
        "retention": SOAK_RETENTION,
        "wall_seconds": round(time.time() - started, 1),
        "succeeded": sum(r["state"] == "success" for r in records),
        "promoted": sum(bool(r["promoted"]) for r in records),
        "disk_bounded": disk,
        "memory_bounded": memory,
        "growth_bytes_per_night": growth_per_night(records, GROWING) if nights >= 2 else {},
        "ok": bool(records)
        and all(r["state"] == "success" for r in records)
        and all(v["bounded"] for v in (*disk.values(), *memory.values())),
        "by_night": records,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--home", default="var/soak", help="throwaway home (emptied first)")
    parser.add_argument("--start", default="2026-10-01", help="the first simulated day")
    parser.add_argument("--scale", default="tiny", choices=sorted(simulate.SCALES))
    parser.add_argument("--slack", type=float, default=0.15, help="allowed growth, a fraction")
    parser.add_argument("--out", default="var/bench/soak.json")
    args = parser.parse_args(argv)
    if args.nights < 1:
        parser.error("--nights must be at least 1")
    home = Path(args.home).resolve()
    if home.exists():
        import shutil

        shutil.rmtree(home)
    home.mkdir(parents=True)
    result = run_soak(args.nights, home, args.start, args.scale, args.slack)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['succeeded']}/{args.nights} nights succeeded, {result['promoted']} promoted, "
        f"{result['wall_seconds']:.0f} s; bounded: "
        + ", ".join(
            f"{k}={v['bounded']}"
            for k, v in {**result["disk_bounded"], **result["memory_bounded"]}.items()
        )
    )
    print(f"wrote {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
