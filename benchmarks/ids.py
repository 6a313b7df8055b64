"""New users and items: hashed buckets or a growing table? Writes ``<out>/new_ids.json``.

Run it with::

    python -m benchmarks.ids --out var/bench
    python -m benchmarks.ids --out var/bench --quick         # a smoke run
    python -m benchmarks.ids --out var/bench --data-root DIR # reuse processed days

It needs days of examples: by default it simulates ``bootstrap_days + nights + 1`` days of
the demo shop (20,000 requests a day, clean deliveries) and preprocesses them with Spark
(:func:`pipeline.nightly.preprocess`); ``--data-root`` reuses a data root whose days are already
processed (e.g. the freshness benchmark's ``freshness-world/data``).

The same model (``[train]`` settings) is trained the same way under each way of mapping
user and item ids to embedding rows:

* ``hashing``: the production buckets (``core.features.ID_FEATURES``, 32,768 per feature):
  nothing to maintain, a new id has a row from its first event, but two ids can share one;
* ``hashing_small``: 1,024 buckets, i.e. the ids-per-bucket load of a shop with ~30x this
  world's users and items on the production tables, to show what collisions cost;
* ``growing_table``: one row per id, in order of arrival; the table grows each night by the
  day's new ids (old rows and every other weight copied), and an id never trained on reads
  row 0.

Protocol: train from scratch on the first ``bootstrap_days`` days (``retrain_epochs``),
then each night ``d`` fine-tune on day ``d`` plus the replay sample
(:func:`models.fit.load_training_frame`, strategy ``full``; a fresh optimizer at
``finetune_learning_rate`` every night, for every variant alike) and score day ``d + 1``:
AUC on all rows, on rows whose user (item) first appeared on night ``d`` (trained on once:
"useful on their first day?") and on rows whose user (item) was never trained on (cold).
Also reported: the share of the ids seen so far that share a bucket with another id.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from core import features
from core.settings import settings_under

log = logging.getLogger(__name__)
VARIANTS = ("hashing", "hashing_small", "growing_table")
SMALL_BUCKETS = 1 << 10
FULL = {"bootstrap_days": 7, "nights": 4, "requests_per_day": 20_000}
QUICK = {"bootstrap_days": 2, "nights": 2, "requests_per_day": 2_000}
GROWN = ("user", "item")  # the id features whose rows the variants map differently


class Vocabulary:
    """Ids to rows of a growing table: row 0 for an id never added, then order of arrival."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.rows) + 1  # with row 0

    def grow(self, ids) -> int:
        added = 0
        for value in dict.fromkeys(ids):
            if value not in self.rows:
                self.rows[value] = len(self.rows) + 1
                added += 1
        return added

    def lookup(self, ids) -> np.ndarray:
        import pandas as pd

        return pd.Series(ids).map(self.rows).fillna(0).to_numpy(np.int32)


def hashed(name: str, ids, buckets: int | None = None) -> np.ndarray:
    """Buckets of ``ids`` under the production hash, in a table of ``buckets`` rows (the
    feature's own size by default)."""
    import pandas as pd

    table = {v: features.hash_bucket(name, v, buckets) for v in pd.unique(ids)}
    return pd.Series(ids).map(table).to_numpy(np.int32)


def shared_share(ids, buckets) -> float:
    """Share of the distinct ids whose bucket holds another of these ids too."""
    import pandas as pd

    pairs = pd.DataFrame({"id": ids, "bucket": buckets}).drop_duplicates("id")
    per_bucket = pairs.groupby("bucket")["id"].transform("size")
    return float((per_bucket > 1).mean()) if len(pairs) else 0.0


class Variant:
    """One way of mapping ids to rows, with the model trained under it."""

    def __init__(self, name: str, cfg) -> None:
        self.name, self.cfg, self.model = name, cfg, None
        self.vocab = {n: Vocabulary() for n in GROWN}  # every variant records the ids it saw

    def rows(self, df):
        """Model inputs of ``df`` under this variant."""
        from models import ranker

        x = ranker.to_inputs(df)
        for name in GROWN:
            ids = df[features.ID_FEATURES[name][0]].to_numpy(object)
            col = features.id_column(name)
            if self.name == "hashing_small":
                x[col] = hashed(name, ids, SMALL_BUCKETS).reshape(-1, 1)
            elif self.name == "growing_table":
                x[col] = self.vocab[name].lookup(ids).reshape(-1, 1)
        return x

    def seen(self, name: str) -> set:
        """The ``name`` ids trained on so far."""
        return set(self.vocab[name].rows)

    def table_sizes(self) -> dict[str, int]:
        if self.name == "hashing_small":
            return {n: SMALL_BUCKETS for n in GROWN}
        if self.name == "growing_table":
            return {n: len(self.vocab[n]) for n in GROWN}
        return {}

    def train(self, df, epochs: int, learning_rate: float) -> float:
        """Fit on ``df`` (its new ids first get rows); returns seconds."""
        from models import ranker

        started = time.perf_counter()
        for name in GROWN:
            self.vocab[name].grow(df[features.ID_FEATURES[name][0]])
        self.model = self._grown()
        ranker.compile_ranker(self.model, learning_rate)
        self.model.fit(
            self.rows(df), ranker.labels(df), batch_size=self.cfg.batch_size, epochs=epochs,
            shuffle=True, verbose=0,
        )  # fmt: skip
        return time.perf_counter() - started

    def _grown(self):
        """The model with tables of the current sizes: every trained weight kept."""
        from models import ranker

        cfg = self.cfg
        new = ranker.build_from_settings(cfg, table_sizes=self.table_sizes())
        if self.model is None:
            return new
        for layer in new.layers:
            old = self.model.get_layer(layer.name).get_weights()
            if not old:
                continue
            weights = layer.get_weights()
            for w, o in zip(weights, old, strict=True):
                w[tuple(slice(0, n) for n in o.shape)] = o  # a grown table keeps its old rows
            layer.set_weights(weights)
        return new

    def collisions(self) -> dict[str, float | None]:
        if self.name == "growing_table":
            return {n: 0.0 for n in GROWN}
        out = {}
        for name in GROWN:
            ids = np.array(sorted(self.seen(name)), dtype=object)
            size = SMALL_BUCKETS if self.name == "hashing_small" else None
            buckets = hashed(name, ids, size)
            out[name] = round(shared_share(ids, buckets), 4)
        return out


def scored(variant: Variant, df, first_day: dict[str, set]) -> dict:
    """AUC on the eval rows: all, first-day ids (added last night) and cold ids."""
    from models import ranker
    from models.metrics import auc

    y = ranker.labels(df)
    p = variant.model.predict(variant.rows(df), batch_size=8192, verbose=0).ravel()
    out = {"all": auc(y, p), "rows": int(len(df))}
    for name in GROWN:
        ids = df[features.ID_FEATURES[name][0]]
        groups = {
            f"first_day_{name}s": ids.isin(first_day[name]).to_numpy(),
            f"cold_{name}s": (~ids.isin(variant.seen(name))).to_numpy(),
        }
        for key, mask in groups.items():
            out[key] = auc(y[mask], p[mask]) if mask.sum() >= 200 else None
            out[f"{key}_rows"] = int(mask.sum())
    return out


def prepare_days(root: Path, days: int, requests_per_day: int) -> Path:
    """Simulate and preprocess ``days`` demo days under ``root``; returns the data root."""
    from core.layout import shift_ds
    from ops import simulate
    from pipeline import nightly

    settings = settings_under(root)
    world = dataclasses.replace(simulate.SCALES["demo"], requests_per_day=requests_per_day)
    start = "2026-11-01"
    for i in range(days):
        simulate.generate_day(settings.data_root, start, i, world)
        nightly.preprocess(shift_ds(start, i), settings)
        print(f"day {i + 1}/{days} preprocessed", flush=True)
    return Path(settings.data_root)


def bench_ids(out: Path, data_root: Path | None, bootstrap_days: int, nights: int,
              requests_per_day: int) -> dict:  # fmt: skip
    import pandas as pd

    from core.layout import Layout, write_json
    from models import fit, ranker

    started = time.perf_counter()
    work = out / "ids-world"
    if data_root is None:
        shutil.rmtree(work, ignore_errors=True)
        data_root = prepare_days(work, bootstrap_days + nights + 1, requests_per_day)
    settings = settings_under(work)
    cfg = dataclasses.replace(settings.train, retrain_history_days=bootstrap_days)
    layout = Layout(data_root)
    days = layout.processed_days("examples")
    if len(days) < bootstrap_days + nights + 1:
        raise ValueError(
            f"{data_root}: {len(days)} processed days, need {bootstrap_days + nights + 1}"
        )
    bootstrap = days[bootstrap_days - 1]
    nightly_days = days[bootstrap_days : bootstrap_days + nights]
    result: dict = {
        "data_root": str(data_root),
        "bootstrap_days": days[:bootstrap_days],
        "nights": nightly_days,
        "small_buckets": SMALL_BUCKETS,
        "production_buckets": {n: features.ID_FEATURES[n][1] for n in GROWN},
        "variants": {},
    }
    for name in VARIANTS:
        variant = Variant(name, cfg)
        boot, _ = fit.load_training_frame(layout, bootstrap, "retrain", cfg)
        seconds = variant.train(boot, cfg.retrain_epochs, cfg.learning_rate)
        record = {"bootstrap_seconds": round(seconds, 1), "nights": []}
        for ds in nightly_days:
            before = {n: variant.seen(n) for n in GROWN}
            day, _ = fit.load_training_frame(layout, ds, "full", cfg)
            seconds = variant.train(day, cfg.full_epochs, cfg.finetune_learning_rate)
            first_day = {n: variant.seen(n) - before[n] for n in GROWN}
            eval_ds = days[days.index(ds) + 1]
            rows = ranker.read_examples([layout.examples(eval_ds)])
            night = {"ds": ds, "eval_ds": eval_ds, "train_seconds": round(seconds, 1)}
            night.update(scored(variant, rows, first_day))
            night["table_rows"] = {n: variant.model.get_layer(f"{n}_embedding").input_dim
                                   for n in GROWN}  # fmt: skip
            record["nights"].append(night)
            print(f"{name:14s} {ds}  AUC {_fmt(night['all'])}  first-day users "
                  f"{_fmt(night['first_day_users'])}  items {_fmt(night['first_day_items'])}  "
                  f"cold users {_fmt(night['cold_users'])}  items {_fmt(night['cold_items'])}",
                  flush=True)  # fmt: skip
        record["collision_share"] = variant.collisions()
        record["mean"] = {
            key: _mean([n[key] for n in record["nights"]])
            for key in ("all", "first_day_users", "first_day_items", "cold_users", "cold_items")
        }
        result["variants"][name] = record
        write_json(out / "new_ids.json", result)
    means = {v: r["mean"] for v, r in result["variants"].items()}
    result["summary"] = pd.DataFrame(means).round(4).to_dict()
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "new_ids.json", result)
    return result


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mean(values):
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    parser.add_argument("--data-root", type=Path, help="processed days to reuse")
    parser.add_argument("--quick", action="store_true", help="2 + 2 small days: a smoke run")
    parser.add_argument("--bootstrap-days", type=int)
    parser.add_argument("--nights", type=int)
    parser.add_argument("--requests-per-day", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    plan = QUICK if args.quick else FULL
    result = bench_ids(
        args.out,
        args.data_root,
        args.bootstrap_days or plan["bootstrap_days"],
        args.nights or plan["nights"],
        args.requests_per_day or plan["requests_per_day"],
    )
    print(result["summary"])
    print(f"wrote {args.out / 'new_ids.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
