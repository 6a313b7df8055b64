"""Training benchmark: writes ``<out>/training.json`` (``python -m benchmarks.training``).

``python -m benchmarks.training --out var/bench [--quick]`` measures, on one world:

* examples/s of the training loop fed the way ``models.train`` feeds it (the training
  columns read from the examples Parquet with pyarrow, then ``tf.data``; the read is timed)
  against the same rows already in memory as NumPy arrays (Keras' own array input); same
  model, batch size and epochs, the two alternated ``--repeat`` times, best of each;
* holdout AUC, wall time and examples/s of a 1-worker and a 2-worker
  (MultiWorkerMirroredStrategy) retrain on the same days, both through
  ``models.train.finetune``.

Targets: Parquet input >= 80% of the in-memory throughput; 2-worker AUC within 0.003 of the
1-worker AUC. The full run simulates ``--days`` demo-scale days (``ops.simulate``) and
preprocesses them with Spark (``pipeline.nightly.preprocess``) under ``<out>/training-world``,
then trains with the ``[train]`` settings. ``--quick`` writes two synthetic example days
straight to Parquet instead (no Spark).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from core.settings import REPO_ROOT, settings_under

START = "2026-11-20"
_T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


def synthetic_examples(n: int, seed: int, n_users: int = 3000, n_items: int = 2000):
    """An examples frame (the ``core.features.EXAMPLE_SCHEMA`` columns) with a learnable signal:
    clicks follow hidden per-user and per-item effects, price and position."""
    import pandas as pd

    from core import features

    rng = np.random.default_rng(seed)
    world = np.random.default_rng(0)  # the same hidden effects every day
    user_effect, item_effect = world.normal(0, 0.8, n_users), world.normal(0, 1.5, n_items)
    user, item = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    category, brand = item % 24, item % 80
    position = rng.integers(1, 11, n)
    price = np.exp(rng.normal(3, 0.5, n))
    logit = -2.0 + item_effect[item] + user_effect[user] - 0.3 * np.log(position)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    ids = {"user": user, "item": item, "category": category, "brand": brand, "query": category}
    df = pd.DataFrame(
        {
            "request_id": np.char.add(f"r{seed}_", (np.arange(n) // 10).astype(str)),
            "user_id": np.char.add("u", user.astype(str)),
            "item_id": np.char.add("i", item.astype(str)),
            "category": np.char.add("c", category.astype(str)),
        }
    )
    for name, (_, buckets) in features.ID_FEATURES.items():
        # A stand-in for the hash: distinct ids spread over the buckets, 0 stays "missing".
        df[features.id_column(name)] = (1 + (ids[name] * 2654435761) % (buckets - 1)).astype(
            np.int32
        )
    df["log_price"] = np.log1p(price).astype(np.float32)
    df["position"] = (position / features.MAX_POSITION).astype(np.float32)
    defaults = getattr(features, "STATE_DEFAULTS", {})
    for name in features.DENSE_FEATURES:
        if name not in df:
            df[name] = np.float32(defaults.get(name, 0.0))
    for col, empty in getattr(features, "EMPTY_ARRAYS", {}).items():  # as for new users
        df[col] = [empty] * n
    df[features.LABEL] = click
    df[features.PURCHASE_LABEL] = click * (rng.random(n) < 0.2)
    df["split"] = np.where(rng.random(n) < 0.1, "holdout", "train")
    return df[list(features.EXAMPLE_SCHEMA)]


def build_world(work: Path, quick: bool, days: int, scale: str, rows_per_day: int):
    """Settings and examples days of a fresh world under ``work``."""
    from core.layout import Layout, shift_ds

    shutil.rmtree(work, ignore_errors=True)
    settings = settings_under(work)
    layout = Layout(settings.data_root)
    dates = [shift_ds(START, i) for i in range(days)]
    if quick:
        for i, ds in enumerate(dates):
            path = layout.examples(ds)
            path.mkdir(parents=True, exist_ok=True)
            synthetic_examples(rows_per_day, seed=i + 1).to_parquet(
                path / "part-0.parquet", index=False
            )
            (path / "_SUCCESS").touch()
            say(f"synthetic examples for {ds}: {rows_per_day} rows")
        return settings, layout, dates, f"synthetic, {rows_per_day} rows/day"

    from ops import simulate
    from pipeline import nightly

    simulate.generate_days(settings.data_root, START, days, simulate.SCALES[scale])
    say(f"simulated {days} {scale}-scale day(s)")
    for ds in dates:
        summary = nightly.preprocess(ds, settings)
        say(f"preprocessed {ds}: {summary.get('examples')} examples")
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is not None:
        spark.stop()  # give the cores back to training
    return settings, layout, dates, f"simulated ({scale} scale), preprocessed with Spark"


def measure_input(layout, ds: str, cfg, repeat: int) -> dict:
    """Training examples/s: Parquet + tf.data (read timed) vs NumPy arrays in memory."""
    from models import fit

    x, y, _ = fit.read_training_arrays(layout, ds, "retrain", cfg)  # the in-memory copy
    epochs, rows = cfg.retrain_epochs, len(y)
    _, full, tail = fit.batch_plan(rows, cfg.batch_size)
    steps = full + (1 if tail else 0)
    warm = fit.prepare_model(None, "retrain", cfg)  # TensorFlow's first-use costs, once
    warm.fit({k: v[:2048] for k, v in x.items()}, y[:2048], batch_size=cfg.batch_size, verbose=0)
    warm.fit(fit.make_dataset(x, y, cfg.batch_size, 1, cfg.seed).take(4), verbose=0)
    best = {"memory": math.inf, "parquet": math.inf, "read": math.inf}
    for attempt in range(repeat):
        model = fit.prepare_model(None, "retrain", cfg)
        started = time.perf_counter()
        model.fit(x, y, batch_size=cfg.batch_size, epochs=epochs, shuffle=True, verbose=0)
        memory = time.perf_counter() - started
        best["memory"] = min(best["memory"], memory)

        model = fit.prepare_model(None, "retrain", cfg)
        started = time.perf_counter()
        xp, yp, _ = fit.read_training_arrays(layout, ds, "retrain", cfg)
        read = time.perf_counter() - started
        data = fit.make_dataset(xp, yp, cfg.batch_size, epochs, cfg.seed)
        model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0)
        parquet = time.perf_counter() - started
        best["parquet"], best["read"] = min(best["parquet"], parquet), min(best["read"], read)
        say(
            f"input run {attempt + 1}/{repeat}: in memory {rows * epochs / memory:,.0f} ex/s, "
            f"Parquet {rows * epochs / parquet:,.0f} ex/s (read {read:.2f} s)"
        )
    return {
        "train_rows": rows,
        "epochs": epochs,
        "examples_per_second_memory": round(rows * epochs / best["memory"], 1),
        "examples_per_second_parquet": round(rows * epochs / best["parquet"], 1),
        "parquet_read_seconds": round(best["read"], 3),
    }


def compare_workers(layout, ds: str, cfg, out: Path) -> dict:
    """Retrain on the same days with 1 and 2 workers; holdout AUC of each on ``ds``."""
    from models import ranker
    from models.metrics import auc
    from models.train import finetune

    holdout = ranker.read_examples([layout.examples(ds)], "holdout")
    x, y = ranker.to_inputs(holdout), ranker.labels(holdout)
    result = {"holdout_rows": int(len(y))}
    for workers in (1, 2):
        say(f"retrain with {workers} worker(s)")
        run_cfg = dataclasses.replace(cfg, workers=workers)
        summary = finetune(None, layout, ds, out / f"workers-{workers}", "retrain", run_cfg)
        model = ranker.load_ranker(summary["model_path"])
        score = auc(y, model.predict(x, batch_size=8192, verbose=0).ravel())
        name = "1_worker" if workers == 1 else f"{workers}_workers"
        result[f"auc_{name}"] = round(score, 5)
        result[f"seconds_{name}"] = summary["seconds"]
        result[f"examples_per_second_{name}"] = summary["examples_per_second"]
        say(f"{workers} worker(s): AUC {score:.4f}, {summary['seconds']} s")
    # What a 1-worker run moves by with another seed (initialisation and order): the noise
    # floor to judge the 1- vs 2-worker gap against.
    other = dataclasses.replace(cfg, workers=1, seed=cfg.seed + 1)
    summary = finetune(None, layout, ds, out / "workers-1-seed", "retrain", other)
    model = ranker.load_ranker(summary["model_path"])
    result["auc_1_worker_other_seed"] = round(
        auc(y, model.predict(x, batch_size=8192, verbose=0).ravel()), 5
    )
    say(f"1 worker, seed {other.seed}: AUC {result['auc_1_worker_other_seed']:.4f}")
    return result


def bench_training(out: Path, quick: bool, days: int, scale: str, repeat: int) -> dict:
    started = time.perf_counter()
    rows_per_day = 40_000
    settings, layout, dates, source = build_world(
        out / "training-world", quick, days, scale, rows_per_day
    )
    world_seconds = time.perf_counter() - started
    cfg = settings.train
    ds = dates[-1]
    result = {
        "mode": "quick" if quick else "full",
        "world": source,
        "days": dates,
        "cpu_count": os.cpu_count(),
        "model": {
            "embedding_dim": cfg.embedding_dim,
            "hidden_units": list(cfg.hidden_units),
            "batch_size": cfg.batch_size,
            "epochs": cfg.retrain_epochs,
        },
        "world_seconds": round(world_seconds, 1),
    }
    result.update(measure_input(layout, ds, cfg, repeat))
    result.update(compare_workers(layout, ds, cfg, out / "training-world" / "models"))
    ratio = result["examples_per_second_parquet"] / result["examples_per_second_memory"]
    gap = abs(result["auc_2_workers"] - result["auc_1_worker"])
    result["parquet_vs_memory"] = round(ratio, 3)
    result["auc_gap"] = round(gap, 5)
    result["auc_seed_noise"] = round(
        abs(result["auc_1_worker_other_seed"] - result["auc_1_worker"]), 5
    )
    result["targets"] = {
        "parquet_input_ge_80pct_of_memory": ratio >= 0.8,
        "auc_2_workers_within_0.003": gap <= 0.003,
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "var" / "bench"))
    parser.add_argument("--quick", action="store_true", help="synthetic days, no Spark")
    parser.add_argument("--days", type=int, help="days of examples (default 3, quick 2)")
    parser.add_argument("--scale", default="demo", help="simulator scale of the full run")
    parser.add_argument("--repeat", type=int, help="input runs of each kind (default 2, quick 1)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    days = args.days or (2 if args.quick else 3)
    repeat = args.repeat or (1 if args.quick else 2)
    result = bench_training(out, args.quick, days, args.scale, repeat)
    (out / "training.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    say(f"wrote {out / 'training.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
