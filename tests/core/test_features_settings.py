"""Hashing shared by Spark and Python, feature rows and the data layout."""

from __future__ import annotations

import pytest

from core import features
from core.layout import Layout, inside


@pytest.mark.parametrize(
    "value", ["u1", "", "hello world", "x" * 31, "y" * 32, "z" * 70, "grüße", "i000123"]
)
def test_python_hash_equals_spark_xxhash64(spark, value):
    from pyspark.sql import functions as F

    row = (
        spark.createDataFrame([(value,)], "v string")
        .select(
            F.xxhash64("v").alias("h"),
            features.spark_hash_bucket("item", "v").alias("item"),
            features.spark_hash_bucket("query", "v").alias("query"),
        )
        .first()
    )
    assert row.h == features.xxh64(value.encode())
    assert row.item == features.hash_bucket("item", value)
    assert row.query == features.hash_bucket("query", value)


def test_hash_bucket_ranges_and_missing():
    assert features.hash_bucket("user", None) == 0
    assert features.hash_bucket("user", "") == 0
    buckets = {features.hash_bucket("user", f"u{i}") for i in range(5000)}
    size = features.ID_FEATURES["user"][1]
    assert min(buckets) >= 1 and max(buckets) < size
    assert len(buckets) > 4500  # few collisions among 5000 ids in 32k buckets
    # The feature name is part of the key: the same string lands elsewhere per feature.
    assert features.hash_bucket("user", "abc") != features.hash_bucket("item", "abc")
    assert features.hash_bucket("query", "  Red  Shoes ") == features.hash_bucket(
        "query", "red shoes"
    )


def test_history_keeps_the_latest_items_weighted_by_their_share_of_actions():
    items = [(f"i{k}", 1.0) for k in range(12)]
    items[0] = ("i0", 3.0)
    items.insert(1, ("gone", 0.0))  # decayed away: not history
    buckets, weights = features.history(items)
    assert buckets == [features.hash_bucket("item", f"i{k}") for k in range(10)]
    assert weights[0] == pytest.approx(3 / 12) and weights[1] == pytest.approx(1 / 12)
    assert sum(weights) == pytest.approx(1.0)
    buckets, weights = features.history([("i1", 2.0)])
    assert buckets[1:] == [0] * 9 and weights == [1.0] + [0.0] * 9


def test_layout_rejects_bad_dates_and_paths_outside_root(tmp_path):
    layout = Layout(tmp_path)
    assert layout.examples("2026-11-20") == tmp_path / "examples" / "dt=2026-11-20"
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        layout.examples("2026-11-20/../../etc")
    with pytest.raises(ValueError, match="outside the data root"):
        inside(tmp_path, tmp_path / ".." / "elsewhere")
    assert inside(tmp_path, tmp_path / "raw") == (tmp_path / "raw").resolve()
