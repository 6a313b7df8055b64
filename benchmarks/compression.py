"""Compression benchmark behind ``make bench``: writes ``var/bench/compression.json``.

Simulates two demo-scale days, runs the nightly stages on them without Airflow (retrain on
day 1, warm-start fine-tune on day 2) and reports, for day 2's candidate: the size of the
float model as saved for warm starts (``.keras`` with optimizer state) and as a SavedModel,
float TFLite, pruned int8 TFLite (raw and gzip), sparsity, holdout AUC float vs int8, and
the int8 model's latency on one thread. Targets (issue "Compress, judge, promote"): int8
TFLite >= 4x smaller than float TFLite; pruned int8 gzip >= 10x smaller than the float
model as saved; AUC drop float -> int8 <= 0.002; p99 <= 2 ms for 100 candidates; batched
>= 1M rows/s on one core.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from core.settings import REPO_ROOT, settings_under


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def bench_compression(out_dir: Path, scale: str = "demo") -> dict:
    from core.layout import Layout, read_json
    from ops import simulate
    from pipeline import nightly

    work = out_dir / "compression-world"
    shutil.rmtree(work, ignore_errors=True)
    settings = settings_under(work)
    days = ["2026-11-20", "2026-11-21"]
    simulate.generate_days(settings.data_root, days[0], len(days), simulate.SCALES[scale])
    started = time.perf_counter()
    for ds in days:
        nightly.run_all(ds, settings)
    layout = Layout(settings.data_root)
    runs = layout.run_dir(days[-1])
    comp, ev = read_json(runs / "compress.json"), read_json(runs / "evaluate.json")
    candidate = layout.model_dir(days[-1]) / "candidate"

    from models import ranker

    savedmodel = work / "savedmodel"
    ranker.load_ranker(candidate / "model.keras").save(str(savedmodel), save_format="tf")
    sizes = comp["sizes"]
    result = {
        "scale": scale,
        "float_keras_bytes": sizes["keras"]["bytes"],
        "float_savedmodel_bytes": dir_bytes(savedmodel),
        "float_tflite_bytes": sizes["float_tflite"]["bytes"],
        "int8_tflite_bytes": sizes["int8_tflite"]["bytes"],
        "int8_tflite_gzip_bytes": sizes["int8_tflite"]["gzip_bytes"],
        "sparsity": comp["sparsity_by_layer"]["total"],
        "sparsity_by_layer": comp["sparsity_by_layer"],
        "auc_float": ev["candidate"]["float"]["auc"],  # as trained, before pruning
        "auc_pruned_float": ev["candidate"]["pruned_float"]["auc"],
        "auc_int8": ev["candidate"]["int8"]["auc"],
        "holdout_rows": ev["holdout_rows"],
        **{k: v for k, v in ev["latency"].items()},
        "pipeline_seconds": round(time.perf_counter() - started, 1),
    }
    saved = min(result["float_keras_bytes"], result["float_savedmodel_bytes"])
    result["targets"] = {
        "int8_4x_smaller_than_float_tflite": result["float_tflite_bytes"]
        >= 4 * result["int8_tflite_bytes"],
        "int8_gzip_10x_smaller_than_float_saved": saved >= 10 * result["int8_tflite_gzip_bytes"],
        # float as trained -> pruned int8 as served: the strict reading of "float -> int8"
        "auc_drop_le_0.002": result["auc_float"] - result["auc_int8"] <= 0.002,
        "p99_le_2ms": result["p99_ms_100_candidates"] <= 2.0,
        "batched_ge_1M_rows_per_s": result["rows_per_second_batched"] >= 1e6,
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "var" / "bench"))
    parser.add_argument("--scale", default="demo")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = bench_compression(out, args.scale)
    (out / "compression.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
