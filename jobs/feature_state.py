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
def state_tables(state: FeatureState, ds: str, cfg) -> dict:
    """The state's features for examples (or requests) of day ``ds``, one table per key:

    * ``item`` (item_id): the item's STATE_FEATURES but its age, plus ``item_first_seen``
      (the age needs the catalog's launch date: :func:`item_age`);
    * ``user`` (user_id): the user's, and the history columns (not padded);
    * ``user_category`` (user_id, category): ``user_category_affinity``;
    * ``user_item`` (user_id, item_id): ``user_item_affinity``.

    A key absent from its table is new: it gets ``core.features.STATE_DEFAULTS``. Training
    (:func:`add_state_features`) and the online store (``serving.store``) both read these
    tables, so a request is scored with the features its examples were trained on.
    """
    from pyspark.sql import functions as F

    if state.as_of >= ds:
        raise ValueError(f"feature state as of {state.as_of} would leak into examples of {ds}")
    day = F.lit(ds).cast("date")
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

    def smoothed_ctr(clicks, shown):
        return (clicks * factor + m * prior) / (shown * factor + m)

    item = state.item_stats.select(
        "item_id",
        smoothed_ctr(F.col("clicks"), F.col("impressions")).alias("item_ctr"),
        _log_scaled(F.col("impressions") * factor + F.col("actions") * factor).alias(
            "item_popularity"
        ),
        _log_scaled(F.col("purchases") * factor).alias("item_purchases"),
        # recent_actions <= actions (same counts, faster decay): a share in [0, 1].
        (F.col("recent_actions") * trend_factor / (F.col("actions") * factor + 1.0)).alias(
            "item_trend"
        ),
        _log_scaled_days(F.datediff(day, F.col("last_seen")), MAX_RECENCY_DAYS).alias(
            "item_recency"
        ),
        F.lit(0.0).alias("item_is_new"),
        F.col("first_seen").alias("item_first_seen"),
    )
    user = state.user_stats.select(
        "user_id",
        smoothed_ctr(F.col("clicks"), F.col("impressions")).alias("user_ctr"),
        _log_scaled(F.col("events") * factor).alias("user_activity"),
        _log_scaled_days(F.datediff(day, F.col("last_seen")), MAX_RECENCY_DAYS).alias(
            "user_recency"
        ),
        F.lit(0.0).alias("user_is_new"),
    ).join(user_histories(state.user_item), "user_id", "full")
    totals = state.user_category.groupBy("user_id").agg(F.sum("actions").alias("_total"))
    user_category = state.user_category.join(totals, "user_id").select(
        "user_id",
        "category",
        (F.col("actions") / (F.col("_total") + 1.0)).alias("user_category_affinity"),
    )
    user_item = state.user_item.select(
        "user_id", "item_id", _log_scaled(F.col("actions") * factor).alias("user_item_affinity")
    )
    return {"item": item, "user": user, "user_category": user_category, "user_item": user_item}


def item_age(ds: str, launch, first_seen):
    """The ``item_age`` feature on day ``ds``: days since the catalog's launch date (else
    since the state first saw the item), log-scaled; null when neither is known."""
    from pyspark.sql import functions as F

    return _log_scaled_days(
        F.datediff(F.lit(ds).cast("date"), F.coalesce(launch, first_seen)), MAX_AGE_DAYS
    )


def with_defaults(df):
    """Each state feature's null (a key the state does not know) as its new-id value, the
    history columns padded (``core.features.spark_padded``)."""
    from pyspark.sql import functions as F

    for col in features.HISTORY_COLUMNS:
        if col in df.columns:
            df = df.withColumn(col, features.spark_padded(F.col(col), col))
    for name, value in features.STATE_DEFAULTS.items():
        if name in df.columns:
            df = df.withColumn(name, F.coalesce(F.col(name), F.lit(float(value))))
    return df


def add_state_features(df, state: FeatureState | None, ds: str, cfg):
    """Add the dense state features (``features.STATE_FEATURES``) and the history columns to
    examples of day ``ds``.

    ``df`` needs user_id, item_id and category (and launch_date when known); ``state`` must
    be as of a day before ``ds`` (or None on the first day: every id is new).
    """
    from pyspark.sql import functions as F

    launch = F.to_date("launch_date") if "launch_date" in df.columns else F.lit(None).cast("date")
    if state is None:
        out = df.withColumn("item_first_seen", F.lit(None).cast("date"))
        for col in features.HISTORY_COLUMNS:
            out = out.withColumn(col, F.lit(None).cast("array<int>"))  # padded: empty
        for name in features.STATE_FEATURES:
            out = out.withColumn(name, F.lit(None).cast("double"))
    else:
        out = df
        for name, table in state_tables(state, ds, cfg).items():
            out = out.join(table, list(features.ONLINE_KEYS[name]), "left")
    out = out.withColumn("item_age", item_age(ds, launch, F.col("item_first_seen")))
    return with_defaults(out).drop("item_first_seen")


def online_tables(state: FeatureState, catalog, cfg) -> dict:
    """What the online store (``serving.store``) serves after the night ``state.as_of``: the
    features of requests on the next day, one table per key (``core.features.ONLINE_KEYS``),
    from the same :func:`state_tables` the examples are built from.

    ``item`` carries the catalog's attributes as the model takes them (the item, category
    and brand buckets, title words, the log price of its catalog price) beside the item's
    state features;
    ``user`` the user bucket, state features and history. Every value is final (defaults
    applied, arrays padded): serving only looks them up.
    """
    from pyspark.sql import functions as F

    from core.layout import shift_ds

    day = shift_ds(state.as_of, 1)
    tables = state_tables(state, day, cfg)
    item = catalog.select(
        "item_id",
        "title",
        "category",
        "brand",
        F.to_date("launch_date").alias("launch_date"),
        features.spark_log_price("price").alias("catalog_log_price"),
    ).join(tables["item"], "item_id", "full")
    item = item.withColumn(
        "item_age", item_age(day, F.col("launch_date"), F.col("item_first_seen"))
    ).withColumn("catalog_log_price", F.coalesce("catalog_log_price", F.lit(0.0)))
    for name in ("item", "category", "brand"):
        source = features.ID_FEATURES[name][0]
        item = item.withColumn(features.id_column(name), features.spark_hash_bucket(name, source))
    item = item.withColumn(
        features.TITLE_TOKENS, features.spark_tokens(features.TITLE_TOKENS, "title")
    )
    user = tables["user"].withColumn(
        features.id_column("user"), features.spark_hash_bucket("user", "user_id")
    )
    out = {"item": with_defaults(item), "user": with_defaults(user)}
    out.update({k: tables[k] for k in features.PAIR_STATE})
    columns = {
        "item": [
            "item_id",
            "category",
            "catalog_log_price",
            *(features.id_column(n) for n in ("item", "category", "brand")),
            features.TITLE_TOKENS,
            *features.ITEM_STATE,
        ],
        "user": [
            "user_id",
            features.id_column("user"),
            *features.USER_STATE,
            *features.HISTORY_COLUMNS,
        ],
        **{k: [*features.ONLINE_KEYS[k], v] for k, v in features.PAIR_STATE.items()},
    }
    return {k: out[k].select(*columns[k]) for k in features.ONLINE_KEYS}


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


def write_state(state: FeatureState, layout, staged, spark) -> FeatureState:
    """Stage the state's tables (``jobs.preprocess.StagedWrites``); the state read back."""
    return FeatureState(
        state.as_of,
        **{
            name: staged.read(spark, staged.write(df, layout.feature_state(name, state.as_of), 2))
            for name, df in state.tables().items()
        },
    )
