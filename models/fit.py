"""The training loop of one process: read the day's rows, build or warm-start, fit with
backups, save. :mod:`models.train` runs it in this process, :mod:`models.distributed` in each
MultiWorkerMirroredStrategy worker; the same batches either way."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import time
from pathlib import Path

import numpy as np

from core import features
from core.layout import Layout, written_whole
from core.settings import TrainSettings
from core.summaries import failed_validation
from models import ranker

log = logging.getLogger(__name__)
STRATEGIES = ("skip", "light", "full", "retrain")
# The example columns training reads (ids, dense features, label); the rest stays on disk.
TRAIN_COLUMNS: tuple[str, ...] = (*features.MODEL_COLUMNS, features.LABEL)
# Test-only fault injection: "<worker index>:<n>" makes that worker (0 when training in one
# process) SIGKILL itself after n training batches, to exercise supervision and resuming.
KILL_ENV = "FRESHRANK_TEST_KILL_AFTER_BATCHES"
# [train] settings that say where and how long a run may take, not what it computes: a
# backup stays valid when they change.
OPERATIONAL = frozenset(
    {
        "worker_timeout_s",
        "cores_per_worker",
        "executor_memory",
        "cluster_wait_s",
        "cluster_attempts",
    }
)


def training_days(layout: Layout, ds: str, strategy: str, cfg: TrainSettings) -> list[str]:
    """Days of examples a strategy trains on, oldest first, always ending with ``ds``.

    A day whose ``validate.json`` records ``success: false`` is never trained on: it is
    left out of the replay or retrain window (and logged), and training ``ds`` itself is
    refused. Days without a ``validate.json`` (stages run by hand) are used.
    """
    if failed_validation(layout, ds):
        path = layout.run_dir(ds) / "validate.json"
        raise ValueError(f"{ds} failed validation ({path}): it is never trained on")
    before = [d for d in layout.processed_days("examples") if d < ds]
    if strategy == "retrain":
        window = before[-(cfg.retrain_history_days - 1) :] if cfg.retrain_history_days > 1 else []
    elif strategy == "full":
        window = before[-cfg.replay_days :] if cfg.replay_days else []
    else:
        window = []
    failed = [d for d in window if failed_validation(layout, d)]
    if failed:
        log.warning("%s: left out of %s training, failed validation: %s", ds, strategy, failed)
    return [d for d in window if d not in failed] + [ds]


def _read_train_rows(path: Path, columns, fraction: float, seed: int):
    """The day's ``train`` rows, sampled at ``fraction``, as :func:`ranker.read_examples` does.

    With ``columns`` only those are read. ``DataFrame.sample`` picks rows by position from
    the frame's length and the seed alone, so reading fewer columns selects the same rows.
    """
    if columns is None:
        return ranker.read_examples([path], "train", fraction, seed)
    import pyarrow.parquet as pq

    wanted = list(dict.fromkeys([*columns, "split"]))
    df = pq.read_table(str(path), columns=wanted).to_pandas()
    df = df[df["split"] == "train"]
    if fraction < 1.0:
        df = df.sample(frac=fraction, random_state=seed)
    return df[list(columns)]


def load_training_frame(layout: Layout, ds: str, strategy: str, cfg: TrainSettings, columns=None):
    """Training rows: the whole day, plus replayed history sampled at ``replay_fraction``.

    ``columns`` limits what is read (all example columns by default); the rows and their
    order do not depend on it.
    """
    import pandas as pd

    days = training_days(layout, ds, strategy, cfg)
    frames = []
    for day in days:
        fraction = 1.0 if (day == ds or strategy == "retrain") else cfg.replay_fraction
        frames.append(_read_train_rows(layout.examples(day), columns, fraction, cfg.seed))
    df = pd.concat(frames, ignore_index=True)
    return df.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True), days


def read_training_arrays(layout: Layout, ds: str, strategy: str, cfg: TrainSettings):
    """Model inputs, labels and days of the training rows, read column-wise from Parquet."""
    df, days = load_training_frame(layout, ds, strategy, cfg, columns=TRAIN_COLUMNS)
    return ranker.to_inputs(df), ranker.labels(df), days


def batch_plan(rows: int, batch_size: int, workers: int = 1) -> tuple[int, int, int]:
    """How ``rows`` are cut into steps: ``(per_worker, full_steps, tail)``.

    Each step trains on a global batch of ``per_worker * workers`` rows (``batch_size``
    rounded down to a multiple of ``workers``), each worker on its own ``per_worker`` of
    them; the epoch's last step trains on the ``tail * workers`` rows left (at most
    ``workers - 1`` rows stay out). Every worker gets the same number of rows in every step,
    so none waits in a collective for a peer that ran out of data.
    """
    per_worker = max(1, batch_size // workers)
    full = rows // (per_worker * workers)
    tail = (rows - full * per_worker * workers) // workers
    return per_worker, full, tail


def batch_rows(rows: int, batch_size: int, epoch: int, seed: int, worker=0, workers=1):
    """Row indices ``worker`` trains on in ``epoch``: a ``(full_steps, per_worker)`` block
    and the last, smaller batch (possibly empty).

    The epoch's order is one permutation drawn from ``(seed, epoch)`` whatever the number of
    workers, and each global batch is split between the workers, so N workers train step by
    step on exactly the rows one process would (only the sums are computed apart).
    """
    per_worker, full, tail = batch_plan(rows, batch_size, workers)
    perm = np.random.default_rng([seed, epoch]).permutation(rows)
    block = perm[: full * per_worker * workers].reshape(full, workers, per_worker)[:, worker]
    start = full * per_worker * workers + worker * tail
    return block, perm[start : start + tail]


def make_dataset(
    x: dict, y: np.ndarray, batch_size: int, epochs: int, seed: int, skip=0, worker=0, workers=1
):
    """``tf.data`` of one worker's batches over in-memory arrays, ``skip`` batches dropped.

    Batch ``k`` of a run is the same in every run (:func:`batch_rows`), so a resumed run
    that skips the batches already trained on sees exactly what an uninterrupted run would.
    Batches are gathered by index from the arrays (as Keras does for NumPy input): a few
    gathers per batch, not per row. The sharding is done here, so auto-sharding is off.
    """
    import tensorflow as tf

    order = None
    for epoch in range(epochs):
        block, tail = batch_rows(len(y), batch_size, epoch, seed, worker, workers)
        part = tf.data.Dataset.from_tensor_slices(block)
        if len(tail):
            part = part.concatenate(tf.data.Dataset.from_tensors(tail))
        order = part if order is None else order.concatenate(part)
    order = order.skip(skip)
    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()

    def gather(index, data):
        inputs, labels = data
        return {k: tf.gather(v, index) for k, v in inputs.items()}, tf.gather(labels, index)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = tf.data.Dataset.zip((order, arrays)).map(
        gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def epochs_of(strategy: str, cfg: TrainSettings) -> int:
    return {"retrain": cfg.retrain_epochs, "light": cfg.light_epochs}.get(strategy, cfg.full_epochs)


def prepare_model(base_model, strategy: str, cfg: TrainSettings):
    """Build (retrain) or load (warm start) and compile; call inside the strategy's scope."""
    if strategy == "retrain":
        return ranker.compile_ranker(ranker.build_from_settings(cfg), cfg.learning_rate)
    model = ranker.load_ranker(base_model)
    if strategy == "light":
        for layer in model.layers:
            if layer.name.startswith(("mlp_", "cross_")):
                layer.trainable = False
        # Freezing needs a recompile, which starts a fresh optimizer for the light step.
        return ranker.compile_ranker(model, cfg.finetune_learning_rate)
    # Keep Adam's moments from the champion; only the step size changes.
    model = ranker.with_lazy_adam(model)
    model.optimizer.learning_rate.assign(cfg.finetune_learning_rate)
    return model


def check_request(strategy: str, base_model) -> None:
    if strategy not in ("light", "full", "retrain"):
        raise ValueError(f"cannot train with strategy {strategy!r}; expected light/full/retrain")
    if strategy != "retrain" and base_model is None:
        raise ValueError(f"strategy {strategy!r} needs a base model to warm-start from")
    if strategy != "retrain" and not Path(base_model).is_file():
        raise FileNotFoundError(f"base model {base_model} does not exist")


def backup_root(out_dir: Path) -> Path:
    return Path(out_dir) / "backup"


def run_key(**facts) -> str:
    """Short hash of everything a backup is only valid for (data, model, sharding, sizes)."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_point(backup_dir: Path, steps_per_epoch: int, save_freq) -> tuple[int, int] | None:
    """``(epoch, step)`` a rerun continues at, from the backup in ``backup_dir``, else None.

    Mirrors how Keras reads the counters back (tf_keras ``WorkerTrainingState``), so the
    input pipeline can skip exactly the batches Keras will not run again.
    """
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(Path(backup_dir) / "chief"))
    if not latest:
        return None
    reader = tf.train.load_checkpoint(latest)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    if save_freq == "epoch":
        return (epoch + 1, 0) if epoch >= 0 else None
    if batch < 0:
        return None
    return (epoch + 1, 0) if batch == steps_per_epoch - 1 else (epoch, batch + 1)


def _callbacks(k, backup_dir: Path, save_freq, worker_index: int, started_at: dict, every: int = 0):
    class RecordStart(k.callbacks.Callback):
        """Notes where Keras actually started (epoch, step): the resume point it used."""

        _supports_tf_logs = True  # no per-batch conversion of the logs to NumPy (a sync)

        def on_epoch_begin(self, epoch, logs=None):
            started_at.setdefault("epoch", epoch)

        def on_train_batch_begin(self, batch, logs=None):
            started_at.setdefault("step", batch)

    class Progress(k.callbacks.Callback):
        """A log line every ``every`` steps: how far a run got (what a kill costs is the
        steps between the last backup and this line)."""

        _supports_tf_logs = True

        def __init__(self, every: int):
            super().__init__()
            self.every, self.epoch = every, 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % self.every == 0:
                log.info("progress: epoch %d step %d done", self.epoch, batch + 1)

    callbacks = [
        k.callbacks.BackupAndRestore(str(backup_dir), save_freq=save_freq),
        RecordStart(),
    ]
    if every:
        callbacks.append(Progress(every))
    who, _, after = os.environ.get(KILL_ENV, "").rpartition(":")
    if after and int(who or 0) == worker_index:

        class KillSelf(k.callbacks.Callback):
            _supports_tf_logs = True
            seen = 0

            def on_train_batch_end(self, batch, logs=None):
                self.seen += 1
                if self.seen >= int(after):
                    print(
                        f"{KILL_ENV}: worker {worker_index} kills itself at {time.time():.3f}",
                        flush=True,
                    )
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(KillSelf())
    return callbacks


PROGRESS = re.compile(r"progress: epoch (\d+) step (\d+) done")


def last_progress(log_text: str, steps_per_epoch: int) -> int:
    """Global step of the last progress line in a worker's log text (0 when none)."""
    found = PROGRESS.findall(log_text)
    return int(found[-1][0]) * steps_per_epoch + int(found[-1][1]) if found else 0


def progress_every(steps: int, cfg: TrainSettings) -> int:
    """Steps between two progress lines: a tenth of the backup interval (of an epoch when
    backing up after each epoch), at least 1."""
    interval = cfg.backup_every_steps if cfg.backup_every_steps > 0 else steps
    return max(1, interval // 10)


def fit_ranker(
    base_model,
    layout: Layout,
    ds: str,
    out_dir: Path,
    strategy: str,
    cfg: TrainSettings,
    *,
    distribution=None,
    worker_index: int = 0,
    num_workers: int = 1,
    save_to: Path | None = None,
) -> dict:
    """Read, build or load, fit with backups and save: one process's part of a run.

    Args:
        distribution: a ``tf.distribute`` strategy (MultiWorkerMirroredStrategy in workers),
            created before anything else touched TensorFlow; None trains in this process.
        worker_index, num_workers: which part of every global batch this process trains on.
        save_to: where this process saves ``model.keras`` (default ``out_dir/model.keras``;
            non-chief workers save to a scratch path, the usual MultiWorkerMirrored pattern).
    Returns what the run did (rows, steps, loss, AUC, whether and where it resumed).
    """
    started = time.perf_counter()
    check_request(strategy, base_model)
    x, y, days = read_training_arrays(layout, ds, strategy, cfg)
    if len(y) == 0:
        raise ValueError(f"no training rows for {ds} in {layout.examples(ds)}")
    if len(y) < num_workers:
        raise ValueError(f"{len(y)} training rows cannot be split across {num_workers} workers")
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker index {worker_index} outside 0..{num_workers - 1}")
    read_seconds = time.perf_counter() - started
    batch, full, tail = batch_plan(len(y), cfg.batch_size, num_workers)
    steps = full + (1 if tail else 0)
    rows_per_worker = batch * full + tail
    epochs = epochs_of(strategy, cfg)
    save_freq = cfg.backup_every_steps if cfg.backup_every_steps > 0 else "epoch"
    k = ranker.keras()
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        model = prepare_model(base_model, strategy, cfg)
    settings = {f: v for f, v in dataclasses.asdict(cfg).items() if f not in OPERATIONAL}
    key = run_key(
        ds=ds,
        strategy=strategy,
        base=_file_digest(base_model),
        days=days,
        rows=len(y),
        workers=num_workers,
        batch=batch,
        steps=steps,
        train=settings,
        # The variables a backup restores into: a changed model (code) never reads one.
        variables=[(w.name, list(w.shape)) for w in model.weights],
        trainable=[w.name for w in model.trainable_weights],
    )
    backup_dir = backup_root(out_dir) / key
    resume = resume_point(backup_dir, steps, save_freq)
    skip = resume[0] * steps + resume[1] if resume else 0
    log.info(
        "train %s: %s on %d rows from %s; worker %d/%d: %d rows, batch %d, %d step(s) x %d "
        "epoch(s)%s",
        ds,
        strategy,
        len(y),
        days,
        worker_index,
        num_workers,
        rows_per_worker,
        batch,
        steps,
        epochs,
        f"; resuming at epoch {resume[0]} step {resume[1]}" if resume else "",
    )

    if distribution is not None:
        if distribution.num_replicas_in_sync != num_workers:
            raise ValueError(
                f"expected one replica per worker ({num_workers}), the strategy has "
                f"{distribution.num_replicas_in_sync}: run workers on CPU"
            )
        data = distribution.distribute_datasets_from_function(
            lambda _: make_dataset(
                x, y, cfg.batch_size, epochs, cfg.seed, skip, worker_index, num_workers
            )
        )
    else:
        data = make_dataset(x, y, cfg.batch_size, epochs, cfg.seed, skip)
    started_at: dict = {}
    fit_started = time.perf_counter()
    history = model.fit(
        data,
        epochs=epochs,
        steps_per_epoch=steps,
        callbacks=_callbacks(
            k, backup_dir, save_freq, worker_index, started_at, progress_every(steps, cfg)
        ),
        verbose=2,
    )
    fit_seconds = time.perf_counter() - fit_started
    ran = (started_at.get("epoch"), started_at.get("step", 0))
    if resume and skip < epochs * steps and ran != resume:
        log.error("Keras resumed at %s, the input pipeline at %s", started_at, resume)
    for layer in model.layers:
        layer.trainable = True
    with written_whole(Path(save_to or Path(out_dir) / "model.keras")) as path:
        model.save(path)
    losses, aucs = history.history.get("loss", []), history.history.get("auc", [])
    return {
        "days": days,
        "rows": int(len(y)),
        "rows_per_worker": int(rows_per_worker),
        "click_rate": float(np.mean(y)),
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch * num_workers,
        "final_loss": float(losses[-1]) if losses else None,
        "final_auc": float(aucs[-1]) if aucs else None,
        "resumed": resume is not None,
        "resumed_from_epoch": resume[0] if resume else None,
        "resumed_from_step": resume[1] if resume else None,
        "backup_every_steps": cfg.backup_every_steps,
        "read_seconds": round(read_seconds, 3),
        "fit_seconds": round(fit_seconds, 3),
        # Rows this run trained on (all workers) per second of fit; a resumed run counts
        # only the batches it ran.
        "examples_per_second": round(
            rows_per_worker * num_workers * (epochs - skip / steps) / max(fit_seconds, 1e-9), 1
        ),
    }


def summarize(ds, strategy, base_model, out_dir: Path, workers: int, run: dict, started) -> dict:
    """What :func:`finetune` returns, from what (the chief's) :func:`fit_ranker` reported."""
    return {
        "ds": ds,
        "strategy": strategy,
        "base_model": str(base_model) if base_model else None,
        "model_path": str(Path(out_dir) / "model.keras"),
        "workers": workers,
        **run,
        "seconds": round(time.perf_counter() - started, 2),
    }
