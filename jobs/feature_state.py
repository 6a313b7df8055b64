"""Incremental feature state: user and item aggregates carried from day to day.

Every night the state is *updated*, never recomputed over history: the state after day
``ds`` is the state after the previous processed day, decayed by the days between them,
plus the counts of day ``ds``'s clean events (held-out requests excluded: evaluation data
never feeds the state). Four tables, each a Parquet partition ``state/<table>/dt=<ds>/``
under the data root (``as_of`` = the last day they include):

* ``item_stats``: item_id, impressions, clicks, purchases, actions (clicks, carts and
  purchases), recent_actions (time-decayed counts), first_seen, last_seen;
* ``user_stats``: user_id, events, impressions, clicks (time-decayed), last_seen;
* ``user_category``: user_id, category, actions (time-decayed clicks, carts, purchases);
* ``user_item``: user_id, item_id, actions (what the user bought or clicked before: repeat
  purchases are common in real shops), last_action (time of the latest of them).

Counts decay with a half-life of ``feature_half_life_days``, so a trend from last month
weighs less than yesterday's; ``recent_actions`` with :data:`TREND_HALF_LIFE_DAYS`, so its
ratio to ``actions`` shows an item taking off. Events without a user id (guest orders) count
for the item tables only.

**Point in time**: the examples of day ``ds`` are joined with the state as of the latest
processed day *before* ``ds`` (decayed to the start of ``ds``), never with ``ds``'s own
state: a day's examples only see what was known before the day began, as at serving time.
An id absent from that state is new: its features take the neutral values in
``core.features.STATE_DEFAULTS`` and the ``*_is_new`` flags are 1.

The dense features built from it (all scaled into [0, 1], names in ``core.features``):
smoothed item CTR, item popularity (all its events) and purchases (log-scaled), item trend
(recent / all actions), item age, days since the item was last seen, smoothed user CTR, user
activity, the user's affinity to the item's category and to the item itself (earlier
actions on it), days since the user was last seen, and the two new-id flags. And the
user's history (``core.features.HISTORY_COLUMNS``): the items of their latest actions in
``user_item``, as item buckets weighted by their share of the decayed actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core import features
from core.contract import POSITIVE_TYPES

TABLES = ("item_stats", "user_stats", "user_category", "user_item")
LOG_SCALE = math.log1p(10_000.0)  # log1p(count) / LOG_SCALE is about 1 for 10k events
MAX_RECENCY_DAYS = 30
MAX_AGE_DAYS = 365
# Half-life of ``recent_actions``: a day, so item_trend reacts to this week's news.
TREND_HALF_LIFE_DAYS = 1.0


@dataclass
class FeatureState:
    """The three state tables (Spark DataFrames) and the last day they include."""

    as_of: str
    item_stats: object
    user_stats: object
    user_category: object
    user_item: object

    def tables(self) -> dict:
        return {name: getattr(self, name) for name in TABLES}


def decay_factor(days: int, half_life_days: float) -> float:
    return 0.5 ** (days / half_life_days) if days > 0 else 1.0


def _days_between(a: str, b: str) -> int:
    import datetime as dt

    return (dt.date.fromisoformat(b) - dt.date.fromisoformat(a)).days


# --- the day's counts -------------------------------------------------------------------
def day_counts(clean, catalog, ds: str) -> FeatureState:
    """Per item, user, (user, category) and (user, item): the day's counts from its clean
    events. Events without a user id count for items only."""
    from pyspark.sql import functions as F

    is_type = lambda t: (F.col("event_type") == t).cast("double")  # noqa: E731
    positive = F.col("event_type").isin(*POSITIVE_TYPES).cast("double")
    day = F.lit(ds).cast("date")
    items = clean.groupBy("item_id").agg(
        F.sum(is_type("impression")).alias("impressions"),
        F.sum(is_type("click")).alias("clicks"),
        F.sum(is_type("purchase")).alias("purchases"),
        F.sum(positive).alias("actions"),
    )
    items = (
        items.withColumn("recent_actions", F.col("actions"))
        .withColumn("first_seen", day)
        .withColumn("last_seen", day)
    )
    known = clean.filter(F.col("user_id").isNotNull())
    users = known.groupBy("user_id").agg(
        F.count("*").cast("double").alias("events"),
        F.sum(is_type("impression")).alias("impressions"),
        F.sum(is_type("click")).alias("clicks"),
    )
    users = users.withColumn("last_seen", day)
    acts = known.filter(positive > 0)
    with_category = acts.join(
        catalog.select("item_id", "category").filter(F.col("category").isNotNull()), "item_id"
    )
    user_category = with_category.groupBy("user_id", "category").agg(
        F.count("*").cast("double").alias("actions")
    )
    user_item = acts.groupBy("user_id", "item_id").agg(
        F.count("*").cast("double").alias("actions"),
        F.max("event_time").alias("last_action"),
    )
    return FeatureState(ds, items, users, user_category, user_item)


# --- the update -------------------------------------------------------------------------
_KEYS = {
    "item_stats": ["item_id"],
    "user_stats": ["user_id"],
    "user_category": ["user_id", "category"],
    "user_item": ["user_id", "item_id"],
}
_COUNTS = {
    "item_stats": ["impressions", "clicks", "purchases", "actions", "recent_actions"],
    "user_stats": ["events", "impressions", "clicks"],
    "user_category": ["actions"],
    "user_item": ["actions"],
}


def half_life_of(column: str, half_life_days: float) -> float:
    """Each count decays with the state's half-life, ``recent_actions`` with its own."""
    return TREND_HALF_LIFE_DAYS if column == "recent_actions" else half_life_days


def update_state(previous: FeatureState | None, today: FeatureState, half_life_days: float):
    """State after ``today.as_of``: ``previous`` decayed to that day plus today's counts."""
    from pyspark.sql import functions as F

    if previous is None:
        return today
    days = _days_between(previous.as_of, today.as_of)
    out = {}
    for name in TABLES:
        keys, counts = _KEYS[name], _COUNTS[name]
        old, new = getattr(previous, name).alias("o"), getattr(today, name).alias("n")
        joined = old.join(new, keys, "full_outer")
        cols = [F.col(k) for k in keys]
        cols += [
            (
                F.coalesce(F.col(f"o.{c}"), F.lit(0.0))
                * decay_factor(days, half_life_of(c, half_life_days))
                + F.coalesce(F.col(f"n.{c}"), F.lit(0.0))
            ).alias(c)
            for c in counts
        ]
        if name == "item_stats":
            cols.append(F.coalesce("o.first_seen", "n.first_seen").alias("first_seen"))
        if name in ("item_stats", "user_stats"):
            cols.append(F.coalesce("n.last_seen", "o.last_seen").alias("last_seen"))
        if name == "user_item":
            cols.append(F.greatest("o.last_action", "n.last_action").alias("last_action"))
        # Forget what decayed to (almost) nothing, so the state does not grow without bound.
        alive = F.greatest(*[F.col(c) for c in counts], F.lit(0.0)) >= F.lit(0.01)
        out[name] = joined.select(*cols).filter(alive)
    return FeatureState(today.as_of, **out)


# --- point-in-time features -------------------------------------------------------------
def add_state_features(df, state: FeatureState | None, ds: str, cfg):
    """Add the dense state features (``features.STATE_FEATURES``) to examples of day ``ds``.

    ``df`` needs user_id, item_id and category (and launch_date when known); ``state`` must
    be as of a day before ``ds`` (or None on the first day: every id is new).
    """
    from pyspark.sql import functions as F

    if state is not None and state.as_of >= ds:
        raise ValueError(f"feature state as of {state.as_of} would leak into examples of {ds}")
    day = F.lit(ds).cast("date")
    launch = F.to_date("launch_date") if "launch_date" in df.columns else F.lit(None).cast("date")
    if state is None:
        out = df.withColumn("_u_new", F.lit(1.0)).withColumn("_i_new", F.lit(1.0))
        for col in features.HISTORY_COLUMNS:
            out = out.withColumn(col, features.spark_padded(F.array(), col))
        for name, value in features.STATE_DEFAULTS.items():
            out = out.withColumn(name, F.lit(float(value)))
        age = F.datediff(day, launch)
        out = out.withColumn(
            "item_age", F.coalesce(_log_scaled_days(age, MAX_AGE_DAYS), F.lit(0.0))
        )
        return out.drop("_u_new", "_i_new")

    # Decay to the start of ``ds``: the state's last day is a full day before it.
    gap = _days_between(state.as_of, ds) - 1
    factor = decay_factor(gap, cfg.feature_half_life_days)
    trend_factor = decay_factor(gap, TREND_HALF_LIFE_DAYS)
    prior = (
        state.item_stats.agg(
            (F.sum("clicks") / F.greatest(F.sum("impressions"), F.lit(1.0))).alias("p")
        ).first()["p"]
        or features.STATE_DEFAULTS["item_ctr"]
    )
    m = cfg.ctr_prior_strength
    items = state.item_stats.select(
        "item_id",
        (F.col("impressions") * factor).alias("_i_imp"),
        (F.col("clicks") * factor).alias("_i_clk"),
        (F.col("purchases") * factor).alias("_i_buy"),
        (F.col("actions") * factor).alias("_i_act"),
        (F.col("recent_actions") * trend_factor).alias("_i_recent"),
        F.col("first_seen").alias("_i_first"),
        F.col("last_seen").alias("_i_last"),
        F.lit(0.0).alias("_i_new"),
    )
    users = state.user_stats.select(
        "user_id",
        (F.col("events") * factor).alias("_u_evt"),
        (F.col("impressions") * factor).alias("_u_imp"),
        (F.col("clicks") * factor).alias("_u_clk"),
        F.col("last_seen").alias("_u_last"),
        F.lit(0.0).alias("_u_new"),
    )
    totals = state.user_category.groupBy("user_id").agg(F.sum("actions").alias("_u_act"))
    affinity = state.user_category.join(totals, "user_id").select(
        "user_id", "category", (F.col("actions") / (F.col("_u_act") + 1.0)).alias("_uc_aff")
    )
    bought = state.user_item.select(
        "user_id", "item_id", (F.col("actions") * factor).alias("_ui_act")
    )
    out = (
        df.join(items, "item_id", "left")
        .join(users, "user_id", "left")
        .join(affinity, ["user_id", "category"], "left")
        .join(bought, ["user_id", "item_id"], "left")
        .join(user_histories(state.user_item), "user_id", "left")
    )
    for col in features.HISTORY_COLUMNS:
        out = out.withColumn(col, features.spark_padded(F.col(col), col))
    age = F.datediff(day, F.coalesce(launch, F.col("_i_first")))
    since = F.datediff(day, F.col("_u_last"))
    smoothed_ctr = lambda clicks, shown: (F.col(clicks) + m * prior) / (F.col(shown) + m)  # noqa: E731
    values = {
        "item_ctr": smoothed_ctr("_i_clk", "_i_imp"),
        "item_popularity": _log_scaled(F.col("_i_imp") + F.col("_i_act")),
        "item_purchases": _log_scaled("_i_buy"),
        # recent_actions <= actions (same counts, faster decay): a share in [0, 1].
        "item_trend": F.col("_i_recent") / (F.col("_i_act") + 1.0),
        "item_age": _log_scaled_days(age, MAX_AGE_DAYS),
        "item_recency": _log_scaled_days(F.datediff(day, F.col("_i_last")), MAX_RECENCY_DAYS),
        "user_ctr": smoothed_ctr("_u_clk", "_u_imp"),
        "user_activity": _log_scaled("_u_evt"),
        "user_category_affinity": F.col("_uc_aff"),
        "user_item_affinity": _log_scaled("_ui_act"),
        "user_recency": _log_scaled_days(since, MAX_RECENCY_DAYS),
        "user_is_new": F.col("_u_new"),
        "item_is_new": F.col("_i_new"),
    }
    # Whatever the state does not know (a new id, no affinity yet) takes the new-id value.
    for name, value in values.items():
        out = out.withColumn(name, F.coalesce(value, F.lit(features.STATE_DEFAULTS[name])))
    return out.drop(*[c for c in out.columns if c.startswith("_")])


def user_histories(user_item):
    """``user_id`` and the history columns (``core.features.history`` as Spark does it):
    the user's :data:`core.features.HISTORY_LENGTH` items with the latest actions (then the
    most actions, then the item id), as item buckets and shares of those items' actions. Not
    padded (``core.features.spark_padded``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = Window.partitionBy("user_id").orderBy(
        F.col("last_action").desc_nulls_last(), F.col("actions").desc(), "item_id"
    )
    top = (
        user_item.filter(F.col("actions") > 0)
        .withColumn("_rank", F.row_number().over(latest))
        .filter(F.col("_rank") <= features.HISTORY_LENGTH)
        .withColumn("_total", F.sum("actions").over(Window.partitionBy("user_id")))
    )
    entry = F.struct(
        "_rank",
        features.spark_hash_bucket("item", "item_id").alias("bucket"),
        (F.col("actions") / F.col("_total")).cast("float").alias("weight"),
    )
    ordered = F.array_sort(F.collect_list(entry))
    return top.groupBy("user_id").agg(
        F.transform(ordered, lambda e: e["bucket"]).alias(features.HISTORY_BUCKETS),
        F.transform(ordered, lambda e: e["weight"]).alias(features.HISTORY_WEIGHTS),
    )


def _log_scaled(count):
    """log1p of a count (a column or its name) over :data:`LOG_SCALE`, at most 1; null
    stays null (the caller's default applies)."""
    from pyspark.sql import functions as F

    count = F.col(count) if isinstance(count, str) else count
    value = F.least(F.log1p(F.greatest(count, F.lit(0.0))) / LOG_SCALE, F.lit(1.0))
    return F.when(count.isNotNull(), value)


def _log_scaled_days(days, cap: int):
    from pyspark.sql import functions as F

    # least/greatest skip nulls: keep an unknown day count null (the caller's default applies)
    clipped = F.least(F.greatest(days, F.lit(0)), F.lit(cap)).cast("double")
    return F.when(days.isNotNull(), F.log1p(clipped) / math.log1p(cap))


# --- I/O --------------------------------------------------------------------------------
def read_state(spark, layout, before_ds: str) -> FeatureState | None:
    """The state as of the latest day before ``before_ds`` that has all three tables."""
    days = set.intersection(*(set(layout.processed_days(f"state/{t}")) for t in TABLES))
    earlier = sorted(d for d in days if d < before_ds)
    if not earlier:
        return None
    as_of = earlier[-1]
    tables = {t: spark.read.parquet(str(layout.feature_state(t, as_of))) for t in TABLES}
    if "last_action" not in tables["user_item"].columns:  # a state written before it existed
        from pyspark.sql import functions as F

        tables["user_item"] = tables["user_item"].withColumn(
            "last_action", F.lit(None).cast("timestamp")
        )
    return FeatureState(as_of, **tables)


def write_state(state: FeatureState, layout, write_parquet) -> None:
    for name, df in state.tables().items():
        write_parquet(df, layout.feature_state(name, state.as_of), 2)
