"""The real-data benchmark end to end, on a small invoice log in the UCI Online Retail format.

Runs ``python -m benchmarks.real --quick`` smaller still (2 bootstrap days, 1 night) on a
log written here: guests, returns and repeat buyers included, as in the real file. It
checks that every ranker is scored on the same next-day cases and that the file and plot
are there; the figures of so small a shop say nothing about the targets.
"""

from __future__ import annotations

import csv
import gzip
import json
import random

import numpy as np
import pytest

from benchmarks import real as bench_real
from core.settings import load_settings

pytestmark = pytest.mark.slow
DAYS = ("2011-01-04", "2011-01-05", "2011-01-06", "2011-01-07")


def write_invoices(path, seed: int = 3) -> None:
    """Four trading days of invoices: 40 customers with favourite items, a third of the
    lines from guests, some returns."""
    rng = random.Random(seed)
    items = [f"2{k:04d}" for k in range(80)]
    favourites = {c: rng.sample(items[:40], 5) for c in range(12000, 12040)}
    rows, invoice = [], 540000
    for day in DAYS:
        for _ in range(60):
            invoice += 1
            guest = rng.random() < 0.3
            customer = None if guest else rng.choice(list(favourites))
            pool = items if guest else favourites[customer] + rng.sample(items, 3)
            for item in rng.sample(pool, 4):
                when = f"{day} {rng.randint(8, 18):02d}:{rng.randint(0, 59):02d}:00"
                cust = "" if guest else f"{customer}.0"
                rows.append([str(invoice), item, f"ITEM {item}", "2", when, "1.25", cust, "UK"])
            if rng.random() < 0.05:
                rows.append([f"C{invoice}", item, f"ITEM {item}", "-1", when, "1.25", cust, "UK"])
    with gzip.open(path, "wt", newline="") as fh:
        out = csv.writer(fh)
        out.writerow("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,"
                     "CustomerID,Country".split(","))  # fmt: skip
        out.writerows(rows)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    src = out / "invoices.csv.gz"
    write_invoices(src)
    argv = ["--out", str(out), "--input", str(src), "--quick"]
    assert bench_real.main([*argv, "--bootstrap-days", "2", "--nights", "1"]) == 0
    return out, json.loads((out / "real.json").read_text())


def test_every_ranker_is_scored_on_the_next_days_cases(bench):
    out, result = bench
    assert result["nights"] == 1
    (night,) = result["per_night"]
    assert night["ds"] == DAYS[2] and night["scored_on"] == DAYS[3]
    assert night["stopped"] is None  # a third of the lines from guests is a normal day
    assert night["strategy"] in {"skip", "light", "full", "retrain"}
    assert night["cases"] > 20
    for key in ("hr_at_10", "ndcg_at_10"):
        assert set(result[key]) == set(bench_real.RANKERS)
        for ranker in bench_real.RANKERS:
            value = night[key][ranker]
            assert 0 <= value <= 1, (key, ranker)
            assert result[key][ranker] == pytest.approx(value, abs=1e-4)
    hr = night["hr_at_10"]
    # Customers buy their favourite items again: popularity beats chance (a model trained
    # on two tiny days need not). Random is its exact expectation: 10 / candidates.
    assert hr["popularity"] > hr["random"] >= 0.1
    if not night["promoted"]:  # the champion is still the bootstrap model: same scores
        assert hr["incremental"] == hr["stale"]
    assert result["bootstrap"]["version"] == "1"
    assert set(result["targets"]) >= {"incremental_hr_ge_popularity", "no_stopped_night"}
    png = out / "real.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such input"):
        bench_real.bench_real(tmp_path, tmp_path / "nothing.csv.gz")


def test_the_ablation_scores_every_variant_on_the_benchmarks_cases(bench):
    """benchmarks.ablation on the world the real benchmark left: every variant trained and
    scored on the same next-day cases as the benchmark's rankers, popularity beside them."""
    from benchmarks import ablation

    out, result = bench
    variants = "full,no_history,dense_only"
    argv = ["--out", str(out), "--nights", "1", "--variants", variants, "--skip-simulator"]
    assert ablation.main(argv) == 0
    real = json.loads((out / "ablation.json").read_text())["real"]
    (night,) = real["per_night"]
    assert night["scored_on"] == DAYS[3] and night["train_days"] == 3
    assert night["cases"] == result["per_night"][0]["cases"]
    # popularity is the benchmark's own figure on the same cases
    assert night["hr_at_10"]["popularity"] == pytest.approx(
        result["per_night"][0]["hr_at_10"]["popularity"], abs=1e-4
    )
    for name in variants.split(","):
        assert 0 <= night["hr_at_10"][name] <= 1 and night["train_seconds"][name] > 0
    assert real["hr_at_10"] == night["hr_at_10"]
    # int8 against pruned float and latency, from the nights' evaluate.json
    assert real["int8"]["nights"] >= 1  # the bootstrap (and the night, unless skipped)
    assert 0 < real["int8"]["max_p99_ms_100_candidates"] < 1000


def test_an_ablation_variant_leaves_its_part_out():
    from benchmarks import ablation

    cfg = load_settings().train
    names = {
        name: {layer.name for layer in ablation.build(variant, cfg).layers}
        for name, variant in ablation.VARIANTS.items()
    }
    assert {"history_pool", "user_item_product", "word_embedding"} <= names["full"]
    assert not {"history_pool", "user_item_product"} & names["no_history"]
    assert "word_embedding" in names["no_history"] and "word_embedding" not in names["no_text"]
    x = {"user_bucket": np.ones((2, 1), np.int32), "dense": np.ones((2, 3), np.float32)}
    dense_only = ablation.masked(ablation.VARIANTS["dense_only"], x)
    assert not dense_only["user_bucket"].any() and dense_only["dense"].all()
    assert ablation.masked(ablation.VARIANTS["full"], x) is x
