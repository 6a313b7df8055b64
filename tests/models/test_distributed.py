"""Distributed training (MultiWorkerMirroredStrategy), supervision and resuming from backups.

Runs real worker processes on 127.0.0.1 and kills them for real: a test-only environment
hook (``models.fit.KILL_ENV``) makes one worker SIGKILL itself after some batches.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.layout import Layout
from core.settings import REPO_ROOT, world_env
from models import ranker
from models.distributed import WorkerFailed, WorkerTimeout, train_distributed
from models.fit import (
    KILL_ENV,
    batch_plan,
    load_training_frame,
    make_dataset,
    read_training_arrays,
)
from models.metrics import auc
from models.train import finetune

from .conftest import TRAINING_DAY, make_examples, write_day

pytestmark = pytest.mark.slow
D0, D1 = "2026-11-19", TRAINING_DAY
OLD_SUMMARY_KEYS = {
    "ds", "strategy", "base_model", "days", "rows", "click_rate", "epochs", "final_loss",
    "final_auc", "model_path", "seconds",
}  # fmt: skip


def _holdout_auc(layout, model_path) -> float:
    df = ranker.read_examples([layout.examples(D1)], "holdout")
    model = ranker.load_ranker(model_path)
    return auc(ranker.labels(df), model.predict(ranker.to_inputs(df), verbose=0).ravel())


def _processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def _iterations(model_path) -> int:
    return int(ranker.load_ranker(model_path).optimizer.iterations.numpy())


def test_training_rows_follow_the_replay_rule(small_train_settings):
    s = small_train_settings
    layout = Layout(s.data_root)
    write_day(layout, D0, make_examples(3000, seed=3))
    write_day(layout, D1, make_examples(3000, seed=1))
    cfg = dataclasses.replace(s.train, replay_fraction=0.3)
    x, y, days = read_training_arrays(layout, D1, "full", cfg)  # only the training columns
    frame, frame_days = load_training_frame(layout, D1, "full", cfg)  # every column
    assert days == frame_days == [D0, D1]
    assert len(y) < 0.8 * 6000  # the day before was sampled
    np.testing.assert_array_equal(y, ranker.labels(frame))
    for name, values in ranker.to_inputs(frame).items():
        np.testing.assert_array_equal(x[name], values)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_split_every_global_batch_of_one_process(workers):
    rows, batch, epochs = 1000, 64, 2
    x, y = {"row": np.arange(rows).reshape(-1, 1)}, np.arange(rows, dtype=np.float32)

    def batches(worker, count, size=batch, skip=0):
        data = make_dataset(x, y, size, epochs, seed=7, skip=skip, worker=worker, workers=count)
        return [set(features["row"].numpy().ravel()) for features, _ in data]

    per_worker, full, tail = batch_plan(rows, batch, workers)
    steps = full + (tail > 0)
    one = batches(0, 1, size=per_worker * workers)  # 64 rows, or 63 for 3 workers
    parts = [batches(w, workers) for w in range(workers)]
    assert all(len(p) == epochs * steps for p in parts)  # the same number of steps each
    for step in range(epochs * steps):
        got = [p[step] for p in parts]
        assert len({len(g) for g in got}) == 1  # the same batch size on every worker
        union = set().union(*got)
        assert sum(map(len, got)) == len(union)  # disjoint
        assert union <= one[step] and len(one[step] - union) < workers  # a global batch
    assert batches(1, workers, skip=steps + 3) == parts[1][steps + 3 :]  # resuming skips


def test_two_workers_train_as_well_as_one_and_save_the_model(day):
    s, layout = day
    one = finetune(None, layout, D1, layout.model_dir(D1) / "one", "retrain", s.train)
    two_cfg = dataclasses.replace(s.train, workers=2)
    out = layout.model_dir(D1) / "two"
    two = finetune(None, layout, D1, out, "retrain", two_cfg)

    assert OLD_SUMMARY_KEYS <= set(two) and OLD_SUMMARY_KEYS <= set(one)
    assert (one["workers"], two["workers"]) == (1, 2)
    assert two["rows"] == one["rows"] and two["rows_per_worker"] == one["rows"] // 2
    assert two["batch_size"] == one["batch_size"] == s.train.batch_size
    assert two["model_path"] == str(out / "model.keras") and not two["resumed"]
    auc_one = _holdout_auc(layout, one["model_path"])
    auc_two = _holdout_auc(layout, two["model_path"])
    assert auc_one > 0.7
    # Each step trains on the same global batch as one process would: only batch-norm
    # statistics (per worker) and summation order differ.
    assert abs(auc_two - auc_one) < 0.01, (auc_one, auc_two)
    # Both trained the same number of global steps.
    assert _iterations(two["model_path"]) == _iterations(one["model_path"])
    # Nothing left behind: no backup, no scratch model, no worker process.
    assert not (out / "backup").exists()
    assert not list((out / "workers").glob("scratch-*"))
    assert [p.name for p in sorted((out / "workers").glob("*.log"))] == [
        "worker-0.log",
        "worker-1.log",
    ]
    assert _processes_mentioning(str(out)) == []


def test_a_dead_worker_stops_the_run_fast_and_a_rerun_resumes(day, monkeypatch):
    s, layout = day
    base = finetune(None, layout, D1, layout.model_dir(D1) / "base", "retrain", s.train)
    # A time limit, so a broken failure detection fails this test instead of hanging it.
    cfg = dataclasses.replace(
        s.train, workers=2, full_epochs=3, backup_every_steps=5, worker_timeout_s=120
    )
    out = layout.model_dir(D1) / "candidate"

    # Worker 1 SIGKILLs itself after 25 batches (in epoch 2: 19 steps per epoch); worker 0
    # is then stuck in an all-reduce waiting for it and must be killed by the launcher.
    monkeypatch.setenv(KILL_ENV, "1:25")
    started = time.monotonic()
    with pytest.raises(WorkerFailed) as failure:
        finetune(base["model_path"], layout, D1, out, "full", cfg)
    raised_at = time.time()
    message = str(failure.value)
    assert "worker 1 (pid" in message and "was killed by SIGKILL" in message
    # The last lines of worker 1's log come with the error, including when it died.
    died_at = float(re.search(r"kills itself at ([0-9.]+)", message).group(1))
    assert raised_at - died_at < 5, raised_at - died_at
    assert time.monotonic() - started < 45  # TensorFlow start-up included
    assert _processes_mentioning(str(out)) == []
    assert list((out / "backup").glob("*/chief/checkpoint"))
    assert not (out / "model.keras").exists()

    monkeypatch.delenv(KILL_ENV)
    again = finetune(base["model_path"], layout, D1, out, "full", cfg)
    assert again["resumed"] and again["resumed_from_epoch"] == 1
    assert again["workers"] == 2 and again["epochs"] == 3
    # Warm start kept Adam's state, and the resumed run did exactly the missing steps.
    steps = again["steps_per_epoch"]
    assert _iterations(again["model_path"]) == _iterations(base["model_path"]) + 3 * steps
    assert _holdout_auc(layout, again["model_path"]) > 0.7
    assert not (out / "backup").exists()
    assert _processes_mentioning(str(out)) == []


def test_a_run_past_its_time_limit_is_stopped(day):
    s, layout = day
    out = layout.model_dir(D1) / "slow"
    started = time.monotonic()
    with pytest.raises(WorkerTimeout, match=r"timed out after 3 s; killed worker\(s\) \[0, 1\]"):
        train_distributed(None, layout, D1, out, "retrain", s.train, workers=2, timeout_s=3)
    assert time.monotonic() - started < 10
    assert _processes_mentioning(str(out)) == []


def test_single_process_run_killed_after_an_epoch_resumes_on_rerun(day, tmp_path):
    s, layout = day
    # Back up after each epoch. Without dropout: its masks come from a random stream that a
    # resumed run starts afresh, so only then is the resumed model bit for bit the same.
    cfg = dataclasses.replace(s.train, backup_every_steps=0, embedding_dropout=0.0)
    out = layout.candidate_dir(D1)  # where the stage's CLI trains
    steps = -(-len(load_training_frame(layout, D1, "retrain", cfg)[0]) // cfg.batch_size)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHRANK__")}
    env.update(
        **world_env(tmp_path),  # the stores of ``s`` (the ``settings`` fixture's world)
        FRESHRANK__TRAIN__EMBEDDING_DIM=str(cfg.embedding_dim),
        FRESHRANK__TRAIN__HIDDEN_UNITS=",".join(map(str, cfg.hidden_units)),
        FRESHRANK__TRAIN__BATCH_SIZE=str(cfg.batch_size),
        FRESHRANK__TRAIN__RETRAIN_EPOCHS=str(cfg.retrain_epochs),
        FRESHRANK__TRAIN__BACKUP_EVERY_STEPS="0",
        FRESHRANK__TRAIN__EMBEDDING_DROPOUT="0",
        **{KILL_ENV: f"0:{steps + 3}"},  # in the second epoch
    )
    killed = subprocess.run(
        [sys.executable, "-m", "models.train", "--ds", D1, "--strategy", "retrain"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert list((out / "backup").glob("*/chief/checkpoint"))

    summary = finetune(None, layout, D1, out, "retrain", cfg)
    assert summary["resumed"] and summary["resumed_from_epoch"] == 1
    assert summary["resumed_from_step"] == 0 and summary["workers"] == 1
    assert _iterations(summary["model_path"]) == cfg.retrain_epochs * steps
    assert not (out / "backup").exists()
    # The resumed run trained on exactly the batches the killed one had not: it ends where
    # an uninterrupted run ends (training on one CPU process is deterministic here).
    straight = finetune(None, layout, D1, layout.model_dir(D1) / "straight", "retrain", cfg)
    assert not straight["resumed"]
    got_weights = ranker.load_ranker(summary["model_path"]).get_weights()
    want_weights = ranker.load_ranker(straight["model_path"]).get_weights()
    for got, want in zip(got_weights, want_weights, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert _holdout_auc(layout, summary["model_path"]) > 0.7
