"""Prune the trained model with tfmot and convert it to float and full-integer int8 TFLite.

Run with ``python -m models.compress --ds 2026-11-20`` (after training) or from the DAG.
Steps: ``prune_low_magnitude`` with a polynomial schedule to ``target_sparsity`` during a
short fine-tune on the day's rows, ``strip_pruning``, then two TFLite conversions of the
pruned model: float (for comparison) and int8 with a representative dataset drawn from the
day's real examples (``TFLITE_BUILTINS_INT8`` only, float input/output kept at the edges).
Writes ``pruned.keras``, ``float.tflite`` and ``int8.tflite`` next to the trained model; the
stage records sizes (raw and gzipped) and sparsity per layer in ``runs/dt=<ds>/compress.json``.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import time
from pathlib import Path

import numpy as np

from core.layout import Layout, check_ds, written_whole
from core.settings import CompressSettings, TrainSettings, load_settings
from core.summaries import CompressSummary, write_summary
from models import ranker

log = logging.getLogger(__name__)


def file_sizes(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9))}


def layer_sparsity(model) -> dict[str, float]:
    """Share of exactly-zero weights in each prunable kernel/embedding, and ``total``."""
    out, zeros, count = {}, 0, 0
    for layer in model.layers:
        for w in layer.weights:
            if "kernel" in w.name or "embeddings" in w.name:
                values = w.numpy()
                out[layer.name] = round(float(np.mean(values == 0)), 4)
                zeros += int(np.sum(values == 0))
                count += values.size
    out["total"] = round(zeros / max(count, 1), 4)
    return out


def prune(model, x, y, cfg: CompressSettings, train_cfg: TrainSettings):
    """Magnitude pruning to ``target_sparsity`` while fine-tuning, then strip the wrappers."""
    import tensorflow_model_optimization as tfmot

    k = ranker.keras()
    steps_per_epoch = max(1, int(np.ceil(len(y) / train_cfg.batch_size)))
    # Masks update every `frequency` steps; the last update must land on end_step, or the
    # target sparsity is never reached on a short fine-tune.
    last_step = max(1, steps_per_epoch * cfg.prune_epochs - 1)
    frequency = max(1, last_step // 10)
    end_step = frequency * (last_step // frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=cfg.target_sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=frequency,
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(
        optimizer=k.optimizers.Adam(train_cfg.finetune_learning_rate),
        loss="binary_crossentropy",
    )
    pruned.fit(
        x,
        y,
        batch_size=train_cfg.batch_size,
        epochs=cfg.prune_epochs,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=0,
    )
    return tfmot.sparsity.keras.strip_pruning(pruned)


def to_tflite(model, representative: dict[str, np.ndarray] | None = None) -> bytes:
    """Float TFLite, or full-integer int8 when ``representative`` rows are given."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        n = len(representative["dense"])

        def rows():
            for i in range(n):
                yield {k: v[i : i + 1] for k, v in representative.items()}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = rows
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def compress_model(
    model_path: Path, train_df, out_dir: Path, cfg: CompressSettings, train_cfg: TrainSettings
) -> dict:
    started = time.perf_counter()
    sample = train_df.sample(n=min(len(train_df), cfg.prune_max_rows), random_state=train_cfg.seed)
    x, y = ranker.to_inputs(sample), ranker.labels(sample)
    model = ranker.load_ranker(model_path)
    stripped = prune(model, x, y, cfg, train_cfg)
    with written_whole(out_dir / "pruned.keras") as path:
        stripped.save(path)

    float_path = out_dir / "float.tflite"
    with written_whole(float_path) as path:
        path.write_bytes(to_tflite(stripped))
    rep = sample.sample(n=min(len(sample), cfg.representative_rows), random_state=1)
    int8_path = out_dir / "int8.tflite"
    with written_whole(int8_path) as path:
        path.write_bytes(to_tflite(stripped, ranker.to_inputs(rep)))

    sizes = {
        "keras": file_sizes(model_path),
        "pruned_keras": file_sizes(out_dir / "pruned.keras"),
        "float_tflite": file_sizes(float_path),
        "int8_tflite": file_sizes(int8_path),
    }
    sparsity = layer_sparsity(stripped)
    summary = {
        "sizes": sizes,
        "sparsity_by_layer": sparsity,
        "target_sparsity": cfg.target_sparsity,
        "float_tflite_path": str(float_path),
        "int8_tflite_path": str(int8_path),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info(
        "compress: keras %.0f KB -> int8 %.0f KB (gzip %.0f KB)",
        sizes["keras"]["bytes"] / 1024,
        sizes["int8_tflite"]["bytes"] / 1024,
        sizes["int8_tflite"]["gzip_bytes"] / 1024,
    )
    return summary


def compress_day(layout: Layout, ds: str, cfg: CompressSettings, train_cfg: TrainSettings):
    """The pipeline's stage: compress the day's candidate (``layout.candidate_dir``),
    calibrated on the day's training rows; record ``runs/dt=<ds>/compress.json``."""
    out = layout.candidate_dir(ds)
    train_df = ranker.read_examples([layout.examples(ds)], "train")
    summary = compress_model(out / "model.keras", train_df, out, cfg, train_cfg)
    return write_summary(layout, {"ds": ds, **summary}, CompressSummary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = load_settings(args.config)
    layout = Layout(settings.data_root)
    ds = check_ds(args.ds)
    print(compress_day(layout, ds, settings.compress, settings.train))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
