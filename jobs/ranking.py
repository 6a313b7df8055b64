"""Ranking cases: each held-out positive ranked among sampled candidates.

A click or purchase of a known user in a held-out request is one *case*: the item the user
chose and ``candidates - 1`` items drawn uniformly (seeded hash) from a pool of known items,
never one the user acted on that day. How high a ranker puts the chosen item among them
(HR@10, NDCG@10; ``models.metrics``) is what the evaluation, the gate and the benchmarks
judge: it can fail (unlike recall@10 over a result page of at most 10 items), it works the
same for logs with and without impressions, and popularity is a ranker to compare with.

Candidate rows are built by the same code as training examples
(:func:`jobs.preprocess.build_examples`: catalog attributes, point-in-time feature state
as of the day before, hashed ids), so they carry exactly the features a model saw in
training, plus ``popularity``: the item's clicks, carts and purchases in the
``popularity_days`` before the day (the reference ranker's score). ``request_id`` holds the
case id; ``label_click`` is 1 on the chosen item's row only.
"""

from __future__ import annotations

from core import features
from core.contract import POSITIVE_TYPES
from core.layout import Layout

# Columns of ranking/dt=<ds>/: the examples' columns and the reference ranker's score.
RANKING_COLUMNS = (*features.EXAMPLE_SCHEMA, "popularity")


def case_rows(positives, pool, exclude, candidates: int, seed: int):
    """The rows of every case, one per candidate: ids, query and labels (the features are
    joined by :func:`jobs.preprocess.build_ranking`).

    ``positives``: ``request_id``, ``user_id``, ``item_id``, ``query`` and the labels, one
    row per case. ``pool``: distinct ``item_id`` of the items to draw from
    (:func:`jobs.preprocess.known_items`). ``exclude``: ``user_id``,
    ``item_id`` pairs never drawn for that user (what the user acted on that day).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cases = positives.select(
        F.concat_ws("|", "request_id", "item_id").alias("case_id"),
        "user_id",
        "item_id",
        "query",
        features.LABEL,
        features.PURCHASE_LABEL,
    )
    by_id = Window.orderBy("item_id")
    indexed = pool.select("item_id").withColumn("_idx", F.row_number().over(by_id) - 1)
    n_pool = indexed.count()
    wanted = candidates - 1
    # Twice as many draws as needed: repeats and excluded items are dropped afterwards.
    draws = (
        cases.select("case_id", "user_id", "query")
        .withColumn("_j", F.explode(F.sequence(F.lit(1), F.lit(2 * wanted))))
        .withColumn("_idx", F.pmod(F.xxhash64(F.lit(seed), "case_id", "_j"), F.lit(max(n_pool, 1))))
        .join(indexed, "_idx")
        .join(exclude.select("user_id", "item_id").distinct(), ["user_id", "item_id"], "left_anti")
        .groupBy("case_id", "user_id", "query", "item_id")
        .agg(F.min("_j").alias("_j"))
    )
    first = Window.partitionBy("case_id").orderBy("_j", "item_id")
    sampled = (
        draws.withColumn("_rank", F.row_number().over(first))
        .filter(F.col("_rank") <= wanted)
        .select(
            "case_id",
            "user_id",
            "item_id",
            "query",
            F.lit(0).alias(features.LABEL),
            F.lit(0).alias(features.PURCHASE_LABEL),
        )
    )
    rows = cases.unionByName(sampled)
    # The catalog's price for every candidate (build_examples fills a null price from it)
    # and no position: the item the user chose must not stand out by what it cost them.
    return (
        rows.withColumnRenamed("case_id", "request_id")
        .withColumn("price", F.lit(None).cast("double"))
        .withColumn("position", F.lit(None).cast("long"))
    )


def popularity(spark, layout: Layout, ds: str, days: int):
    """``item_id``, ``popularity``: clicks, carts and purchases of each item in the ``days``
    processed days before ``ds`` (held-out requests included: it only reads the past); None
    when there is no such day."""
    from pyspark.sql import functions as F

    paths = [str(layout.clean_events(d)) for d in layout.days_before("clean/events", ds, days)]
    if not paths:
        return None
    events = spark.read.parquet(*paths)
    return (
        events.filter(F.col("event_type").isin(*POSITIVE_TYPES))
        .groupBy("item_id")
        .agg(F.count("*").cast("double").alias("popularity"))
    )


def with_popularity(rows, counts):
    """``rows`` with the ``popularity`` column (0 for an item without actions)."""
    from pyspark.sql import functions as F

    if counts is None:
        return rows.withColumn("popularity", F.lit(0.0))
    joined = rows.join(counts, "item_id", "left")
    return joined.withColumn("popularity", F.coalesce("popularity", F.lit(0.0)))
