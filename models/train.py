"""Train the ranker for one logical date: warm-start fine-tune or retrain from scratch.

Entry point: :func:`finetune` (also ``python -m models.train --ds 2026-11-20 --strategy full
[--base path/to/model.keras] [--workers 2]``; with a cluster master in ``[preprocess]
spark_master`` the workers run on the cluster). Strategies:

* ``retrain``: a new model trained for ``retrain_epochs`` on up to ``retrain_history_days``
  days of examples (used when there is no champion, or the policy says so);
* ``full``: the champion's ``model.keras`` (weights *and* optimizer state) fine-tuned for
  ``full_epochs`` on the day's training rows plus a replay sample (``replay_fraction``) of
  the ``replay_days`` before it, which bounds forgetting;
* ``light``: the same warm start on the day's rows only, with the cross layers and the MLP
  frozen, so only the embeddings touched by the day, the normalisation and the output
  layer move.

Hashed ids mean a new user or item already has an embedding row on its first day; training
on the day moves exactly the embedding rows its training rows look up: the optimizer is
:func:`models.ranker.lazy_adam_class` (Adam that leaves a row, and its moments, alone on a
step that does not look it up).

One training loop, :func:`fit_ranker`, serves both ways of running: in this process
(``[train] workers = 1``) and in each worker of a ``tf.distribute.MultiWorkerMirroredStrategy``
run (``workers > 1``; :mod:`models.distributed` starts and supervises them on this machine,
:mod:`models.cluster` runs them as a Spark barrier stage on a cluster). It reads
the model's columns of the training partitions from Parquet (pyarrow), feeds each worker its
part of every global batch through ``tf.data`` and fits with ``BackupAndRestore``: the training
state is backed up every ``backup_every_steps`` steps under ``<out dir>/backup/<run key>``,
and a run killed part-way resumes from there on a rerun with the same inputs (the input
pipeline skips exactly the batches already trained on). The backup is removed on success.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from core.layout import Layout, check_ds
from core.settings import PreprocessSettings, Settings, TrainSettings, load_settings
from core.summaries import TrainSummary, write_summary
from models.fit import STRATEGIES, backup_root, check_request, fit_ranker, summarize

log = logging.getLogger(__name__)


def finetune(
    base_model: str | Path | None,
    layout: Layout,
    ds: str,
    out_dir: Path,
    strategy: str,
    cfg: TrainSettings,
    spark: PreprocessSettings | None = None,
) -> dict:
    """Train and save ``out_dir/model.keras``; return a summary (rows, epochs, loss, seconds).

    With ``cfg.workers > 1`` the run is distributed over that many workers: a barrier stage
    on the cluster when ``spark.spark_master`` is a cluster's
    (:func:`models.cluster.train_on_cluster`), else local worker processes
    (:func:`models.distributed.train_distributed`). The summary has the same keys either way.
    """
    check_request(strategy, base_model)
    if cfg.workers > 1:
        from models.cluster import is_cluster, train_on_cluster
        from models.distributed import train_distributed

        if spark is not None and is_cluster(spark.spark_master):
            master = spark.spark_master
            return train_on_cluster(base_model, layout, ds, out_dir, strategy, cfg, master, spark)
        return train_distributed(base_model, layout, ds, out_dir, strategy, cfg)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    run = fit_ranker(base_model, layout, ds, out_dir, strategy, cfg)
    shutil.rmtree(backup_root(out_dir), ignore_errors=True)
    return summarize(ds, strategy, base_model, out_dir, 1, run, started)


def fine_tune_day(
    base_model,
    layout: Layout,
    ds: str,
    strategy: str,
    cfg: TrainSettings,
    spark: PreprocessSettings | None = None,
) -> dict:
    """The pipeline's stage: train the day's candidate (``layout.candidate_dir``) and record
    ``runs/dt=<ds>/fine_tune.json``."""
    summary = finetune(base_model, layout, ds, layout.candidate_dir(ds), strategy, cfg, spark)
    return write_summary(layout, summary, TrainSummary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--strategy", default="full", choices=STRATEGIES[1:])
    parser.add_argument("--base", help="model.keras to warm-start from")
    parser.add_argument("--workers", type=int, help="training processes (default: [train])")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    settings: Settings = load_settings(args.config)
    layout = Layout(settings.data_root)
    cfg = settings.train
    if args.workers is not None:
        if args.workers < 1:
            parser.error("--workers must be >= 1")
        cfg = dataclasses.replace(cfg, workers=args.workers)
    ds = check_ds(args.ds)
    summary = fine_tune_day(args.base, layout, ds, args.strategy, cfg, settings.preprocess)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
