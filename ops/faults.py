"""Faults: kill -9 at the worst moments, an unreachable registry and a full disk.

Run with ``python -m ops.faults [--only NAME] [--out var/chaos]`` (``make chaos`` runs it
after the bad deliveries of :mod:`ops.chaos`), or call :func:`run_faults` from Python (as
``tests/jobs/test_faults.py`` does). One throwaway world for all of them: a simulated
``tiny`` day, preprocessed and validated once by the real stage CLI
(``python -m pipeline.nightly --stage ...``); each fault then runs a stage in a child process and
does to it what the table says: SIGKILL to its whole process group (the Python driver and
Spark's JVM, or the training process), a dead MLflow endpoint, or a file-size limit
(``RLIMIT_FSIZE``, so every write past it fails with EFBIG exactly like a full disk fails
with ENOSPC, without filling the real one). A fault PASSes when everything in its outcome
holds; it prints a table, writes ``faults.json`` and ``faults.md`` under ``--out`` and exits
with 1 when any fails.

Documented outcomes::

    fault                   injected                          documented outcome
    ----------------------  --------------------------------  -----------------------------------
    kill9_preprocess        SIGKILL to the preprocess         the day's published outputs stay
                            process group once it writes      whole (the old examples, byte for
                            (a staging dir appears)           byte); the retry publishes the
                                                              same examples
    disk_full_preprocess    writes over 20 kB fail (EFBIG)    StorageFullError "preprocess:
                                                              cannot write ..."; nothing
                                                              published; old outputs intact
    kill9_training          SIGKILL to fine_tune once its     no model.keras; the retry resumes
                            first backup is written           from the backup (resumed=True) and
                                                              saves the model
    disk_full_training      writes over 256 kB fail (EFBIG)   StorageFullError "fine_tune:
                                                              cannot write ..."; no model.keras,
                                                              not even half of one
    kill9_promotion         SIGKILL between moving            champion still on the old version,
                            `previous` and `champion`         `previous` on it too (nothing
                                                              dangles); the retry completes the
                                                              move; a third run changes nothing
    registry_unreachable    MLflow tracking URI on a port     choose_strategy retries, then
                            nobody listens on                 fails with RegistryUnavailableError
                                                              naming the URI (never "no
                                                              champion", which would retrain)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.layout import Layout, read_json
from core.settings import REPO_ROOT, Settings, load_settings, world_env
from jobs.spark import free_port
from ops import simulate

DS = "2026-11-20"
SMALL_MODEL = {  # a quick model: the faults are about processes and files, not accuracy
    "FRESHRANK__TRAIN__EMBEDDING_DIM": "8",
    "FRESHRANK__TRAIN__HIDDEN_UNITS": "16,8",
    "FRESHRANK__TRAIN__BATCH_SIZE": "64",
    "FRESHRANK__TRAIN__RETRAIN_EPOCHS": "6",
    "FRESHRANK__TRAIN__BACKUP_EVERY_STEPS": "10",
    "FRESHRANK__TRAIN__WORKERS": "1",
    "FRESHRANK__PREPROCESS__SPARK_MASTER": "local[1]",
}


@dataclass
class World:
    """A data root with one preprocessed day, and the environment its stage CLIs run in."""

    root: Path
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return load_settings(env=self.env)

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.data_root)

    def stage_cmd(self, stage: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipeline.nightly", "--ds", DS, "--stage", stage, *args]

    def run_stage(self, stage: str, *args: str, env=None, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.stage_cmd(stage, *args), env=env or self.env, cwd=REPO_ROOT,
            capture_output=True, text=True, **kwargs,
        )  # fmt: skip

    def start_stage(self, stage: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.stage_cmd(stage, *args), env=self.env, cwd=REPO_ROOT, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip


def make_world(root: Path) -> World:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHRANK__")}
    env.update(**world_env(root), **SMALL_MODEL)
    world = World(root, env)
    simulate.generate_day(world.settings.data_root, DS, 0, simulate.SCALES["tiny"], simulate.DIRTY)
    stages = [("preprocess",), ("validate",), ("choose_strategy", "--strategy", "retrain")]
    for stage, *args in stages:
        done = world.run_stage(stage, *args)
        if done.returncode:
            raise RuntimeError(
                f"setting up the fault world: {stage} failed:\n{done.stderr[-3000:]}"
            )
    return world


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and " INFO " not in line]
    return lines[-1] if lines else ""


def kill_group_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    """SIGKILL ``proc``'s process group as soon as ``ready()``; raise if it ends first."""
    deadline = time.time() + 180
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"the stage finished before {what}: nothing to kill")
        if time.time() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def executor_of_worker(out_dir: Path, index: int):
    """The Spark executor JVM (a ``psutil.Process``) whose barrier task runs MWMS worker
    ``index`` of the cluster training writing to ``out_dir``; None while there is none."""
    import psutil

    spec = str(Path(out_dir) / "workers" / "spec.json")
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if spec not in " ".join(proc.info["cmdline"] or []):
                continue
            if f'"index": {index}' not in proc.environ().get("TF_CONFIG", ""):
                continue
            for parent in proc.parents():
                if "CoarseGrainedExecutorBackend" in " ".join(parent.cmdline()):
                    return parent
        except psutil.Error:
            continue
    return None


def kill_executor_in_epoch(
    proc: subprocess.Popen,
    out_dir: Path,
    epoch: int,
    since: int = 0,
    worker: int = 1,
    deadline_s: float = 900.0,
) -> str | None:
    """While ``proc`` trains on a Spark cluster into ``out_dir``: SIGKILL the executor JVM of
    MWMS worker ``worker`` once a backup exists and the chief logs progress in ``epoch``
    (0-based). The chief's log is read from byte ``since`` on (earlier runs into the same
    directory append to it). Returns that part of the log at the kill; None when the run
    ended, or ``deadline_s`` passed, first."""
    chief_log = Path(out_dir) / "workers" / "worker-0.log"
    mark = f"progress: epoch {epoch} "

    def this_run() -> str:
        if not chief_log.exists():
            return ""
        with open(chief_log, "rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", "replace")

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        if list((Path(out_dir) / "backup").glob("*/chief/checkpoint")) and mark in this_run():
            executor = executor_of_worker(out_dir, worker)
            if executor is not None:
                executor.send_signal(signal.SIGKILL)
                return this_run()
        time.sleep(0.05)
    return None


def with_file_size_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: writes past ``limit`` bytes fail with EFBIG (SIGXFSZ ignored)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def examples_files(world: World) -> dict[str, bytes]:
    """The published examples partition, file by file (names and bytes)."""
    path = world.layout.examples(DS)
    return {p.name: p.read_bytes() for p in sorted(path.glob("*.parquet"))}


def examples_rows(world: World):
    """The published examples as rows in a fixed order (file names change on every write)."""
    import pandas as pd

    df = pd.read_parquet(world.layout.examples(DS))
    return df.sort_values(["request_id", "item_id"]).reset_index(drop=True)


def storage_full_observed(done: subprocess.CompletedProcess) -> str:
    found = re.search(r"StorageFullError: (\w+): cannot write (.*?): ([^.]+)\.", done.stderr)
    return f"{found[1]}: StorageFullError ({found[3]})" if found else last_line(done.stderr)[:120]


def check_storage_full(done: subprocess.CompletedProcess, stage: str) -> list[str]:
    line = last_line(done.stderr)
    problems = [] if done.returncode == 1 else [f"exit code {done.returncode}, expected 1"]
    if not line.startswith("core.errors.StorageFullError") or f"{stage}: cannot write" not in line:
        problems.append(f"last error line is not a StorageFullError of {stage}: {line[:300]}")
    return problems


# --- the faults: each returns (what was observed, problems) ---------------------------------


def kill9_preprocess(world: World) -> tuple[str, list[str]]:
    before, rows = examples_files(world), examples_rows(world)
    proc = world.start_stage("preprocess")
    root = world.layout.root
    kill_group_when(proc, lambda: any(root.glob("*/**/.dt=*.staging")), "a staging dir appeared")
    problems = []
    if world.layout.processed_days("examples") != [DS] or examples_files(world) != before:
        problems.append("the published examples changed after the kill")
    retry = world.run_stage("preprocess")
    if retry.returncode or not examples_rows(world).equals(rows):
        problems.append(f"the retry did not republish the same examples: {last_line(retry.stderr)}")
    observed = f"killed (exit {proc.returncode}); examples intact; retry identical"
    return observed, problems


def disk_full_preprocess(world: World) -> tuple[str, list[str]]:
    before = examples_files(world)
    done = world.run_stage("preprocess", preexec_fn=with_file_size_limit(20_000))
    problems = check_storage_full(done, "preprocess")
    if examples_files(world) != before:
        problems.append("the published examples changed")
    return storage_full_observed(done) + "; outputs intact", problems


def kill9_training(world: World) -> tuple[str, list[str]]:
    out = world.layout.model_dir(DS) / "candidate"
    proc = world.start_stage("fine_tune")
    kill_group_when(proc, lambda: any(out.glob("backup/*/chief/checkpoint")), "the first backup")
    problems = [] if not (out / "model.keras").exists() else ["a model.keras after the kill"]
    retry = world.run_stage("fine_tune")
    summary = read_json(world.layout.run_dir(DS) / "fine_tune.json") or {}
    if retry.returncode or not summary.get("resumed") or not (out / "model.keras").exists():
        problems.append(f"the retry did not resume and save: {last_line(retry.stderr)}")
    observed = (
        f"killed (exit {proc.returncode}); retry resumed at epoch "
        f"{summary.get('resumed_from_epoch')} step {summary.get('resumed_from_step')}"
    )
    return observed, problems


def disk_full_training(world: World) -> tuple[str, list[str]]:
    out = world.layout.model_dir(DS) / "candidate"
    (out / "model.keras").unlink(missing_ok=True)
    done = world.run_stage("fine_tune", preexec_fn=with_file_size_limit(256_000))
    problems = check_storage_full(done, "fine_tune")
    if list(out.glob("*.keras")) or list(out.glob(".*.keras")):
        problems.append(f"a model file was left: {sorted(p.name for p in out.glob('*keras'))}")
    return storage_full_observed(done) + "; no model file", problems


def promote_then_die(version: str) -> None:
    """Promote ``version``, but SIGKILL this process right before ``champion`` moves."""
    from mlflow import MlflowClient

    from models import registry

    real = MlflowClient.set_registered_model_alias

    def die_at_champion(self, name, alias, v):
        if alias == registry.CHAMPION:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, name, alias, v)

    MlflowClient.set_registered_model_alias = die_at_champion
    registry.promote(load_settings(), version, reason="fault: killed mid-promotion")


def kill9_promotion(world: World) -> tuple[str, list[str]]:
    from models import registry

    settings = world.settings
    c = registry.client(settings)
    c.create_registered_model(settings.model_name)
    source = world.root / "model-source"
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n")
    for _ in range(2):
        c.create_model_version(settings.model_name, source=str(source))
    registry.promote(settings, "1", reason="first")

    def promote(version: str, die: bool) -> int:
        code = (
            "from ops import faults; faults.promote_then_die('{v}')"
            if die
            else "from core.settings import load_settings; from models import registry; "
            "registry.promote(load_settings(), '{v}', reason='retry')"
        ).format(v=version)
        return subprocess.run(
            [sys.executable, "-c", code], env=world.env, cwd=REPO_ROOT, capture_output=True
        ).returncode

    killed = promote("2", die=True)

    def aliases() -> tuple[str | None, str | None]:
        return registry.alias_version(settings), registry.alias_version(settings, registry.PREVIOUS)

    after_kill, problems = aliases(), []
    if killed != -signal.SIGKILL:
        problems.append(f"the promotion was not killed (exit {killed})")
    if after_kill != ("1", "1"):
        problems.append(f"after the kill champion/previous are {after_kill}, expected 1/1")
    retried = promote("2", die=False)
    if retried or aliases() != ("2", "1"):
        problems.append(f"the retry left champion/previous at {aliases()} (exit {retried})")
    promote("2", die=False)
    if aliases() != ("2", "1"):
        problems.append(f"a third run moved the aliases to {aliases()}")
    return f"killed: champion/previous {after_kill[0]}/{after_kill[1]}; retry 2/1", problems


def registry_unreachable(world: World) -> tuple[str, list[str]]:
    uri = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    env = {
        **world.env,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    started = time.monotonic()
    done = world.run_stage("choose_strategy", env=env)
    seconds = time.monotonic() - started
    line = last_line(done.stderr)
    problems = [] if done.returncode == 1 else [f"exit code {done.returncode}, expected 1"]
    if "RegistryUnavailableError" not in line or uri not in line:
        problems.append(f"last error line does not name the registry error and URI: {line[:300]}")
    return f"RegistryUnavailableError after {seconds:.0f} s (2 retries)", problems


@dataclass(frozen=True)
class Fault:
    name: str
    injected: str
    outcome: str
    run: Callable[[World], tuple[str, list[str]]]


FAULTS = {
    f.name: f
    for f in (
        Fault(
            "kill9_preprocess",
            "SIGKILL while Spark writes",
            "outputs whole; retry identical",
            kill9_preprocess,
        ),  # fmt: skip
        Fault(
            "disk_full_preprocess",
            "writes over 20 kB fail",
            "StorageFullError; old outputs intact",
            disk_full_preprocess,
        ),  # fmt: skip
        Fault(
            "kill9_training",
            "SIGKILL after first backup",
            "no model; retry resumes",
            kill9_training,
        ),  # fmt: skip
        Fault(
            "disk_full_training",
            "writes over 256 kB fail",
            "StorageFullError; no model file",
            disk_full_training,
        ),  # fmt: skip
        Fault(
            "kill9_promotion",
            "SIGKILL between alias moves",
            "champion unchanged; retry completes",
            kill9_promotion,
        ),  # fmt: skip
        Fault(
            "registry_unreachable",
            "MLflow URI on a dead port",
            "retries, RegistryUnavailableError",
            registry_unreachable,
        ),  # fmt: skip
    )
}


def run_faults(names: list[str], work: Path, echo=print) -> list[dict]:
    """Run the named faults in order (the training ones need the world's earlier steps)."""
    world = make_world(work)
    results = []
    for name in names:
        fault = FAULTS[name]
        started = time.monotonic()
        try:
            observed, problems = fault.run(world)
        except Exception as exc:  # noqa: BLE001 - a crashed scenario is a FAIL row, not an abort
            observed, problems = f"scenario crashed: {exc}", [repr(exc)]
        result = {
            **dataclasses.asdict(fault),
            "observed": observed,
            "problems": problems,
            "verdict": "FAIL" if problems else "PASS",
            "seconds": round(time.monotonic() - started, 1),
        }
        result.pop("run")
        echo(f"{name:22} {result['verdict']}  {observed}")
        results.append(result)
    return results


def format_table(results: list[dict]) -> str:
    head = f"{'fault':22} {'injected':30} {'documented outcome':38} {'observed':70} verdict"
    rows = [
        f"{r['name']:22} {r['injected']:30} {r['outcome']:38} {r['observed'][:70]:70} "
        + r["verdict"]
        for r in results
    ]
    problems = [f"  {r['name']}: {p}" for r in results for p in r["problems"]]
    return "\n".join([head, "-" * len(head), *rows, *problems])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="fault name (repeat, or a,b)")
    parser.add_argument("--out", default="var/chaos", help="where faults.json/.md go")
    args = parser.parse_args(argv)
    names = [n for arg in args.only or [] for n in arg.split(",") if n] or list(FAULTS)
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    with tempfile.TemporaryDirectory(prefix="freshrank-faults-") as work:
        results = run_faults(names, Path(work))
    table = format_table(results)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "faults.md").write_text("```\n" + table + "\n```\n")
    print(f"report: {out / 'faults.json'}, {out / 'faults.md'}")
    return 1 if any(r["verdict"] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
