"""Train the ranker for one logical date: warm-start fine-tune or retrain from scratch.

Entry point: :func:`finetune` (also ``python -m models.train --ds 2026-11-20 --strategy full
[--base path/to/model.keras]``). Strategies:

* ``retrain``: a new model trained for ``retrain_epochs`` on up to ``retrain_history_days``
  days of examples (used when there is no champion, or the policy says so);
* ``full``: the champion's ``model.keras`` (weights *and* optimizer state) fine-tuned for
  ``full_epochs`` on the day's training rows plus a replay sample (``replay_fraction``) of
  the ``replay_days`` before it, which bounds forgetting;
* ``light``: the same warm start on the day's rows only, with the MLP frozen, so only the
  embeddings touched by the day and the output layer move.

Hashed ids mean a new user or item already has an embedding row on its first day; training
on the day moves exactly the rows the day touched (embedding gradients are sparse).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from jobs.layout import Layout, check_ds, write_json
from jobs.settings import Settings, TrainSettings, load_settings
from models import ranker

log = logging.getLogger(__name__)
STRATEGIES = ("skip", "light", "full", "retrain")


def training_days(layout: Layout, ds: str, strategy: str, cfg: TrainSettings) -> list[str]:
    """Days of examples a strategy trains on, oldest first, always ending with ``ds``."""
    before = [d for d in layout.processed_days("examples") if d < ds]
    if strategy == "retrain":
        return (
            before[-(cfg.retrain_history_days - 1) :] + [ds]
            if cfg.retrain_history_days > 1
            else [ds]
        )
    if strategy == "full":
        return (before[-cfg.replay_days :] if cfg.replay_days else []) + [ds]
    return [ds]


def load_training_frame(layout: Layout, ds: str, strategy: str, cfg: TrainSettings):
    """Training rows: the whole day, plus replayed history sampled at ``replay_fraction``."""
    import pandas as pd

    days = training_days(layout, ds, strategy, cfg)
    frames = []
    for day in days:
        fraction = 1.0 if (day == ds or strategy == "retrain") else cfg.replay_fraction
        frames.append(ranker.read_examples([layout.examples(day)], "train", fraction, cfg.seed))
    df = pd.concat(frames, ignore_index=True)
    return df.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True), days


def finetune(
    base_model: str | Path | None,
    layout: Layout,
    ds: str,
    out_dir: Path,
    strategy: str,
    cfg: TrainSettings,
) -> dict:
    """Train and save ``out_dir/model.keras``; return a summary (rows, epochs, loss, seconds)."""
    if strategy not in ("light", "full", "retrain"):
        raise ValueError(f"cannot train with strategy {strategy!r}; expected light/full/retrain")
    if strategy != "retrain" and base_model is None:
        raise ValueError(f"strategy {strategy!r} needs a base model to warm-start from")
    started = time.perf_counter()
    df, days = load_training_frame(layout, ds, strategy, cfg)
    if df.empty:
        raise ValueError(f"no training rows for {ds} in {layout.examples(ds)}")
    x, y = ranker.to_inputs(df), ranker.labels(df)

    if strategy == "retrain":
        model = ranker.build_ranker(cfg.embedding_dim, cfg.hidden_units, cfg.seed)
        ranker.compile_ranker(model, cfg.learning_rate)
        epochs = cfg.retrain_epochs
    else:
        model = ranker.load_ranker(base_model)
        if strategy == "light":
            for layer in model.layers:
                if layer.name.startswith("mlp_"):
                    layer.trainable = False
            # Freezing needs a recompile, which starts a fresh optimizer for the light step.
            ranker.compile_ranker(model, cfg.finetune_learning_rate)
            epochs = cfg.light_epochs
        else:
            # Keep Adam's moments from the champion; only the step size changes.
            model.optimizer.learning_rate.assign(cfg.finetune_learning_rate)
            epochs = cfg.full_epochs

    log.info("train %s: %s on %d rows from %s, %d epoch(s)", ds, strategy, len(df), days, epochs)
    history = model.fit(x, y, batch_size=cfg.batch_size, epochs=epochs, shuffle=True, verbose=2)
    for layer in model.layers:
        layer.trainable = True
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.keras"
    model.save(model_path)
    summary = {
        "ds": ds,
        "strategy": strategy,
        "base_model": str(base_model) if base_model else None,
        "days": days,
        "rows": int(len(df)),
        "click_rate": float(np.mean(y)),
        "epochs": epochs,
        "final_loss": float(history.history["loss"][-1]),
        "final_auc": float(history.history["auc"][-1]),
        "model_path": str(model_path),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(out_dir / "train.json", summary)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--strategy", default="full", choices=STRATEGIES[1:])
    parser.add_argument("--base", help="model.keras to warm-start from")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings: Settings = load_settings(args.config)
    layout = Layout(settings.data_root)
    summary = finetune(
        args.base,
        layout,
        check_ds(args.ds),
        layout.model_dir(args.ds),
        args.strategy,
        settings.train,
    )
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
