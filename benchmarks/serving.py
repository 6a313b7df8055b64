"""Serving benchmark: the registered champion scoring raw request rows, lookups included.

    python -m benchmarks.serving --out var/bench        # make bench-serving

Builds a simulated shop (``--days`` nights through the real pipeline: preprocess, validate,
materialize, train, compress, evaluate, register), then measures, on the champion as a
search service gets it (``mlflow.pyfunc.load_model("models:/ranker@champion")``):

* ``p50_ms_100_raw`` / ``p99_ms_100_raw``: one request of 100 raw candidates (one user, one
  query, ids only: every feature looked up in the online store), scored in process the
  documented way, ``load_model(uri).unwrap_python_model().score(df)`` (the request checked
  by our own dtype check, not MLflow's schema enforcement), in the steady state
  (``--requests`` other requests first; ``ids_from_memory_share``: the looked-up ids the
  store held in memory); ``uncached_*``: the same with every id from SQLite;
  ``pyfunc_*``: the same requests through ``load_model(uri).predict(df)`` (MLflow's
  pyfunc wrapper: schema enforcement first); each request a new frame, as a service builds;
* ``rows_per_second_raw_batched``: one ``score`` call with ``--batch-rows`` raw rows of many
  users (best of 3); ``pyfunc_rows_per_second_raw_batched``: the same through ``predict``;
* ``http_p99_ms_100_raw``: the same requests through ``mlflow models serve`` (one worker);
* ``max_abs_score_diff_vs_evaluate``: served scores of the last day's held-out rows (sent
  raw: ids, query, price, position, the item's catalog fields) against the int8 model on the
  pipeline's examples of those rows, as ``evaluate`` scores them; the store then holds the
  night before that day, whose features the examples were built with;
  ``score_equals_pyfunc_predict``: ``score`` gives those rows ``predict``'s scores, bit for
  bit;
* ``state_features_from_store``: whether those scores used looked-up features (known users
  and items were found in the store), and the ranking it buys: HR@10 of the served model on
  the day's ranking cases with the store and without it (every id new, as before);
* ``serving_env_mb``: installed size of what serving needs (the pyfunc's pip requirements
  and their dependencies, measured in this environment); ``serving_env_mb_before``: the
  same for the requirements before LiteRT (TensorFlow, the full MLflow package).

Writes ``<out>/serving.json``; ``--world`` keeps the shop for a rerun (``--reuse``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from core.layout import Layout, shift_ds
from core.settings import settings_under

log = logging.getLogger("bench.serving")
START = "2026-11-20"


def build_world(world: Path, days: int, scale: str):
    """``days`` simulated nights through the pipeline, the last one training the champion
    on all of them (promoted even if the gate, with few cases, is unsure: a throwaway
    registry); the settings of that world."""
    from models.registry import promote
    from ops import simulate
    from pipeline import nightly

    settings = settings_under(world)
    simulate.generate_days(settings.data_root, START, days, simulate.SCALES[scale])
    for k in range(days):
        ds, last = shift_ds(START, k), k == days - 1
        started = time.perf_counter()
        result = nightly.run_all(ds, settings, override="retrain" if last else None)
        log.info("night %s: %s (%.0fs)", ds, result.get("why", result.get("strategy")),
                 time.perf_counter() - started)  # fmt: skip
    if not result.get("promoted"):
        promote(settings, result["version"], "serving benchmark: the model to serve")
    return settings


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def requests_of_100(layout: Layout, ds: str, n: int, seed: int = 0) -> list[pd.DataFrame]:
    """``n`` requests: a user of the day, one of the day's queries, 100 catalog items."""
    rng = np.random.default_rng(seed)
    examples = pd.read_parquet(layout.examples(ds), columns=["user_id"])
    users = examples["user_id"].dropna().unique()
    queries = pd.read_parquet(layout.clean_events(ds), columns=["query"])["query"].dropna()
    items = pd.read_parquet(layout.item_state(ds), columns=["item_id"])["item_id"].to_numpy()
    out = []
    for _ in range(n):
        out.append(
            pd.DataFrame(
                {
                    "user_id": rng.choice(users),
                    "item_id": rng.choice(items, 100, replace=False),
                    "query": rng.choice(queries.to_numpy()),
                    "position": np.arange(1, 101, dtype=np.float64),
                }
            )
        )
    return out


def timed(predict, requests: list[pd.DataFrame], warmup: int = 20) -> list[float]:
    """Seconds per call, each on a new copy of its frame (made before the clock starts):
    pandas caches a frame's columns, and a service builds a new frame per request."""
    for df in requests[:warmup]:
        predict(df.copy())
    seconds = []
    for df in [df.copy() for df in requests]:
        started = time.perf_counter()
        predict(df)
        seconds.append(time.perf_counter() - started)
    return seconds


def ranking_with_and_without_store(layout: Layout, ds: str, model) -> dict:
    """HR@10 / NDCG@10 of the served model on the day's ranking cases (sent as raw ids),
    with the store's features and with none (every id new, as the pyfunc served before)."""
    from models.evaluate import rank_cases, read_ranking_cases
    from serving.inputs import model_inputs

    cases = read_ranking_cases(layout, ds)
    raw = cases[["user_id", "item_id"]]
    served = model.unwrap_python_model()
    scores = {
        name: served.scorer.predict(model_inputs(raw, store)[0])
        for name, store in (("with_store", served.store), ("without_store", None))
    }
    ranked = rank_cases(cases, scores)
    return {name: ranked[name].means() for name in (*scores, "popularity", "random")}


def environment_mb(requirements: list[str]) -> float:
    """Installed size (MB) of ``requirements`` and everything they depend on, here."""
    seen, todo, files = set(), [re.split(r"[=<>!~\[ ;]", r)[0] for r in requirements], {}
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        # By path: tensorflow and tensorflow-cpu install the same files (counted once).
        files.update({str(f): f.size or 0 for f in dist.files or []})
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[=<>!~\[ ;(]", req)[0])
    return round(sum(files.values()) / 2**20, 1)


def measure(settings, requests: int, batch_rows: int, tmp: Path) -> dict:
    import mlflow

    from models import ranker
    from models.registry import alias_version, fetch_version, serving_requirements
    from ops.served import invoke, model_server, request_rows
    from serving import store as online
    from serving.inputs import model_inputs
    from serving.scorer import TFLiteScorer

    layout = Layout(settings.data_root)
    day = layout.processed_days("examples")[-1]
    before = layout.processed_days("examples")[-2]
    uri = f"models:/{settings.model_name}@champion"
    version = alias_version(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    result = {"champion_version": version, "day": day, "store_night": day}

    # Equality with evaluate: the day's held-out rows, served with the night before's store.
    holdout = pd.read_parquet(layout.examples(day)).query("split == 'holdout'")
    store_before = tmp / "store-before.sqlite"
    tables = {t: pd.read_parquet(layout.online_table(t, before)) for t in online.KEYS}
    online.load(store_before, tables, before)
    os.environ[online.STORE_ENV] = str(store_before)
    try:
        model = mlflow.pyfunc.load_model(uri)
    finally:
        del os.environ[online.STORE_ENV]
    raw = request_rows(layout, day, holdout)
    champion = fetch_version(settings, version, tmp / "champion")
    expected = TFLiteScorer(champion["int8_tflite"]).predict(ranker.to_inputs(holdout))
    served = np.asarray(model.predict(raw), np.float32).ravel()
    python_model = model.unwrap_python_model()
    if not hasattr(python_model, "score"):
        raise SystemExit("the champion was logged before score(): rebuild the world (no --reuse)")
    scored = python_model.score(raw)
    _, found = model_inputs(raw, online.OnlineStore(store_before))
    result.update(
        holdout_rows=len(holdout),
        max_abs_score_diff_vs_evaluate=float(np.abs(served - expected).max()),
        score_equals_pyfunc_predict=scored.tobytes() == served.tobytes(),
        lookups=found,
        state_features_from_store=found["users_known"] > 0 and found["items_known"] > 0,
        served_ranking=ranking_with_and_without_store(layout, day, model),
    )
    log.info("served vs evaluate: max |diff| %.2g on %d rows; found %s",
             result["max_abs_score_diff_vs_evaluate"], len(holdout), found)  # fmt: skip

    # Latency and throughput: the champion with the store after the last night.
    # Steady state: the store's memory holds what earlier traffic (other requests) looked up.
    model = mlflow.pyfunc.load_model(uri)
    python_model = model.unwrap_python_model()
    for df in requests_of_100(layout, day, requests, seed=3):
        python_model.score(df)
    batch = requests_of_100(layout, day, requests)
    served_before = python_model.store.stats()
    in_process = percentiles(timed(python_model.score, batch))
    stats = {k: v - served_before[k] for k, v in python_model.store.stats().items()}
    pyfunc = percentiles(timed(model.predict, batch))
    cached = python_model.store
    python_model.store = online.OnlineStore(cached.path, cache_ids=0)  # every id from SQLite
    uncached = percentiles(timed(python_model.score, batch))
    python_model.store = cached
    big = pd.concat(requests_of_100(layout, day, batch_rows // 100, seed=1), ignore_index=True)
    big["user_id"] = big["user_id"].to_numpy()[np.random.default_rng(2).permutation(len(big))]
    model.predict(big.head(1000))

    def rows_per_second_of(call) -> float:
        """Best of 3 calls (throughput: the machine's slowest moments are not the code's)."""
        best = float("inf")
        for _ in range(3):
            frame = big.copy()
            started = time.perf_counter()
            call(frame)
            best = min(best, time.perf_counter() - started)
        return len(big) / best

    rows_per_second = rows_per_second_of(python_model.score)
    pyfunc_rows_per_second = rows_per_second_of(model.predict)
    log.info("in process: score %s, pyfunc predict %s; rows/s batched %.0f",
             in_process, pyfunc, rows_per_second)  # fmt: skip
    with model_server(uri, settings.tracking_uri, tmp / "serve.log") as url:
        http = percentiles(timed(lambda df: invoke(url, df), batch))
    log.info("over HTTP: %s", http)
    result.update(
        p50_ms_100_raw=in_process["p50"],
        p99_ms_100_raw=in_process["p99"],
        pyfunc_p50_ms_100_raw=pyfunc["p50"],
        pyfunc_p99_ms_100_raw=pyfunc["p99"],
        ids_from_memory_share=stats["from_memory"] / max(stats["looked_up"], 1),
        uncached_p50_ms_100_raw=uncached["p50"],
        uncached_p99_ms_100_raw=uncached["p99"],
        rows_per_second_raw_batched=rows_per_second,
        pyfunc_rows_per_second_raw_batched=pyfunc_rows_per_second,
        batch_rows=len(big),
        http_p50_ms_100_raw=http["p50"],
        http_p99_ms_100_raw=http["p99"],
        requests=len(batch),
        serving_requirements=serving_requirements(),
        serving_env_mb=environment_mb(serving_requirements()),
        serving_env_mb_before=environment_mb(REQUIREMENTS_BEFORE),
    )
    return result


# The pyfunc's pip requirements before: TensorFlow for tf.lite, the full MLflow package.
REQUIREMENTS_BEFORE = ["mlflow", "tensorflow-cpu", "tf-keras", "pandas", "numpy", "xxhash"]
TARGETS = {
    "p99_ms_100_raw": ("<=", 2.0),
    "rows_per_second_raw_batched": (">=", 500_000),
    "http_p99_ms_100_raw": ("<=", 20.0),
    "max_abs_score_diff_vs_evaluate": ("<=", 1e-5),
}
# Measured on a `make demo` registry before the online store (issue #16), through the
# pyfunc's predict (there was no score then).
BEFORE = {
    "pyfunc_p50_ms_100_raw": 3.0,
    "pyfunc_p99_ms_100_raw": 4.4,
    "rows_per_second_raw_batched": 56_000,
    "state_features_from_store": False,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="var/bench")
    parser.add_argument("--world", help="default: <out>/serving-world")
    parser.add_argument("--reuse", action="store_true", help="measure the existing world")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--batch-rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    world = Path(args.world or out / "serving-world")
    started = time.perf_counter()
    if args.reuse and world.exists():
        settings = settings_under(world)
    else:
        shutil.rmtree(world, ignore_errors=True)
        settings = build_world(world, args.days, args.scale)
    tmp = world / "bench"
    tmp.mkdir(exist_ok=True)
    result = measure(settings, args.requests, args.batch_rows, tmp)
    result["targets"] = {
        key: {"target": f"{op} {bound}", "value": result[key],
              "met": result[key] <= bound if op == "<=" else result[key] >= bound}
        for key, (op, bound) in TARGETS.items()
    }  # fmt: skip
    result["before"] = BEFORE
    result["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "serving.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in (*TARGETS, "p50_ms_100_raw", "pyfunc_p50_ms_100_raw",
                      "pyfunc_p99_ms_100_raw", "score_equals_pyfunc_predict",
                      "state_features_from_store", "serving_env_mb")}, indent=2))  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
