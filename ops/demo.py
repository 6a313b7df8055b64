"""The multi-day demo behind ``make demo``: a simulated shop, run night by night through Airflow.

It generates ``--days`` days of a simulated e-commerce world (``ops.simulate``) into the
data root, initialises the Airflow metadata DB, and runs the real ``freshrank_nightly`` DAG
once per logical date with ``airflow dags test`` (a complete DAG run, recorded in Airflow's
DB). Then it prints one row per day from the stage summaries in ``runs/dt=<ds>/``.

``--reset`` (what ``make demo`` passes) first removes earlier demo state, but only when the
data root and MLflow store are the defaults under this repository's ``var/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from core.layout import Layout, read_json, shift_ds, write_json
from core.settings import REPO_ROOT, Settings, load_settings
from pipeline.nightly import STAGES

DAG_ID = "freshrank_nightly"


def airflow_env() -> dict:
    env = dict(os.environ)
    env.setdefault("FRESHRANK_HOME", str(REPO_ROOT))
    env.setdefault("AIRFLOW_HOME", str(REPO_ROOT / "var" / "airflow"))
    env.setdefault("AIRFLOW_CONFIG", str(REPO_ROOT / "airflow.cfg"))
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    return env


def airflow(*args: str, log_path: Path | None = None, env: dict | None = None) -> int:
    """Run the ``airflow`` CLI of this virtualenv; output goes to ``log_path`` if given."""
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    env = env or airflow_env()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    if log_path is None:
        return subprocess.run(cmd, env=env, check=False).returncode
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as fh:
        return subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode


def run_day(ds: str, settings: Settings, log_dir: Path, env: dict | None = None) -> dict:
    """One DAG run for ``ds`` through Airflow; returns the day's row for the table."""
    started = time.perf_counter()
    log_path = log_dir / f"{DAG_ID}-{ds}.log"
    rc = airflow("dags", "test", DAG_ID, ds, log_path=log_path, env=env)
    text = log_path.read_text(errors="replace")
    finished = re.findall(r"DagRun Finished: .*?\bstate=(?:DagRunState\.)?(\w+)", text)
    state = finished[-1].lower() if finished else ("failed" if rc else "unknown")
    return {
        **day_row(ds, settings),
        "dag_state": state,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "log": str(log_path),
    }


def day_row(ds: str, settings: Settings) -> dict:
    runs = Layout(settings.data_root).run_dir(ds)
    get = lambda stage: read_json(runs / f"{stage}.json") or {}  # noqa: E731
    pre, val, strat, comp, ev, reg = (
        get(s)
        for s in ("preprocess", "validate", "choose_strategy", "compress", "evaluate", "register")
    )
    cand = ev.get("candidate") or {}
    champ = (ev.get("champion") or {}).get("int8") or {}
    sizes = comp.get("sizes") or {}
    stage_seconds = {s: get(s).get("seconds") for s in STAGES if s != "cleanup"}
    return {
        "ds": ds,
        "rows_in": pre.get("rows_in"),
        "clean": pre.get("clean"),
        "quarantined": pre.get("quarantined"),
        "duplicates": pre.get("duplicates"),
        "examples": pre.get("examples"),
        "validation": val.get("success"),
        "strategy": strat.get("strategy"),
        "auc_float": (cand.get("float") or {}).get("auc"),
        "auc_int8": (cand.get("int8") or {}).get("auc"),
        "champion_auc_int8": champ.get("auc"),
        "log_loss_int8": (cand.get("int8") or {}).get("log_loss"),
        # Next to AUC, what the gate judges: HR@10 of each held-out positive among sampled
        # candidates, for the candidate, the champion and the popularity ranking.
        **{
            f"hr10_{name}": ((ev.get("ranking") or {}).get(key) or {}).get("hr@10")
            for name, key in (
                ("int8", "candidate_int8"),
                ("champion", "champion_int8"),
                ("popularity", "popularity"),
            )
        },
        "version": reg.get("version"),
        "promoted": reg.get("promoted"),
        "why": reg.get("why") or "; ".join(strat.get("reasons", [])),
        "keras_kb": _kb(sizes, "keras"),
        "float_tflite_kb": _kb(sizes, "float_tflite"),
        "int8_tflite_kb": _kb(sizes, "int8_tflite"),
        "stage_seconds": stage_seconds,
    }


def _kb(sizes: dict, key: str):
    return round(sizes[key]["bytes"] / 1024, 1) if key in sizes else None


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    cols = [
        ("day", "ds"),
        ("in", "rows_in"),
        ("clean", "clean"),
        ("quar", "quarantined"),
        ("dup", "duplicates"),
        ("examples", "examples"),
        ("strategy", "strategy"),
        ("auc f32", "auc_float"),
        ("auc int8", "auc_int8"),
        ("champ int8", "champion_auc_int8"),
        ("hr@10", "hr10_int8"),
        ("champ hr@10", "hr10_champion"),
        ("pop hr@10", "hr10_popularity"),
        ("ver", "version"),
        ("promoted", "promoted"),
        ("keras KB", "keras_kb"),
        ("f32 tfl KB", "float_tflite_kb"),
        ("int8 tfl KB", "int8_tflite_kb"),
        ("wall s", "wall_seconds"),
    ]
    cells = [[h for h, _ in cols]] + [[_fmt(r.get(k)) for _, k in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = ["\n".join(lines), "", "why / stage seconds:"]
    for r in rows:
        secs = ", ".join(f"{k} {v}" for k, v in r["stage_seconds"].items() if v is not None)
        out.append(f"  {r['ds']}  {r['why']}")
        out.append(f"  {'':10}  {secs}")
    return "\n".join(out)


def reset_state(settings: Settings) -> None:
    var = (REPO_ROOT / "var").resolve()
    targets = [Path(settings.data_root), Path(settings.artifact_root).parent]
    for target in targets:
        if var not in target.resolve().parents:
            raise SystemExit(f"refusing to --reset {target}: not under {var}")
        shutil.rmtree(target, ignore_errors=True)
    db = Path(REPO_ROOT / "var" / "airflow" / "airflow.db")
    db.unlink(missing_ok=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--start", default="2026-11-20", help="first logical date")
    parser.add_argument("--scale", default="demo", help="simulator scale: tiny, demo, bench")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reset", action="store_true", help="start from an empty var/")
    parser.add_argument(
        "--clean", action="store_true", help="deliver clean logs (default: a little dirt)"
    )
    args = parser.parse_args(argv)
    from ops import simulate

    settings = load_settings()
    if args.reset:
        reset_state(settings)
    t0 = time.perf_counter()
    print(f"== simulating {args.days} days ({args.scale}) into {settings.data_root}", flush=True)
    if args.scale not in simulate.SCALES:
        raise SystemExit(f"unknown scale {args.scale!r}; choose from {sorted(simulate.SCALES)}")
    config = dataclasses.replace(simulate.SCALES[args.scale], seed=args.seed)
    # Real deliveries are dirty: duplicates, late and future events, broken lines, nulls.
    dirt = simulate.DirtConfig() if args.clean else simulate.DIRTY
    for stats in simulate.generate_days(settings.data_root, args.start, args.days, config, dirt):
        print(f"   {stats}", flush=True)
    print("== initialising the Airflow DB", flush=True)
    log_dir = REPO_ROOT / "var" / "demo-logs"
    if airflow("db", "migrate", log_path=log_dir / "db-migrate.log") != 0:
        raise SystemExit(f"airflow db migrate failed: see {log_dir / 'db-migrate.log'}")
    rows = []
    for i in range(args.days):
        ds = shift_ds(args.start, i)
        print(f"== {DAG_ID} for {ds} (airflow dags test; log in {log_dir})", flush=True)
        row = run_day(ds, settings, log_dir)
        rows.append(row)
        print(
            f"   {row['dag_state']} in {row['wall_seconds']} s: strategy {row['strategy']}, "
            f"auc int8 {_fmt(row['auc_int8'])}, promoted {row['promoted']}",
            flush=True,
        )
        if row["dag_state"] != "success":
            print(format_table(rows))
            raise SystemExit(f"DAG run for {ds} did not succeed: see {row['log']}")
    write_json(Path(settings.data_root) / "runs" / "demo.json", {"days": rows})
    print()
    print(format_table(rows))
    print(
        f"\ndemo finished in {time.perf_counter() - t0:.0f} s; "
        f"MLflow store: {settings.tracking_uri}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
