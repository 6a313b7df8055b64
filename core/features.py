"""Feature names and hashing rules, in one place shared by Spark, the model and serving.

Every categorical input (user, item, category, brand, query) enters the model as an integer
bucket: ``1 + pmod(xxhash64(<feature name> + ":" + value), buckets - 1)``, with 0 kept for
missing values. Spark computes it with its built-in ``xxhash64`` (seed 42); Python code
(serving, tests) uses :func:`hash_bucket`, the same XXH64 from the ``xxhash`` package. The
model therefore takes only integers and floats, so the int8 TFLite path needs no string ops
and new ids get a bucket on their first day.

Each feature is defined twice, side by side: a Python function (serving) and its Spark column
expression (``spark_*``, training). They must give the same value for every input;
tests/core/test_feature_definitions.py checks it on generated and exhaustive inputs.
"""

from __future__ import annotations

import math
import re

import numpy as np
import xxhash

# name -> (source column in the events/catalog, number of hash buckets)
ID_FEATURES: dict[str, tuple[str, int]] = {
    "user": ("user_id", 1 << 15),
    "item": ("item_id", 1 << 15),
    "category": ("category", 1 << 10),
    "brand": ("brand", 1 << 12),
    "query": ("query", 1 << 12),
}
# Point-in-time aggregates from the incremental feature state (jobs.feature_state), each in
# [0, 1]; the value an id gets when the state has never seen it (a new user or item). Rates
# from impressions (the CTRs) are constant on logs without impressions; the others carry
# signal on purchase-only logs too.
STATE_DEFAULTS: dict[str, float] = {
    "item_ctr": 0.05,
    "item_popularity": 0.0,
    "item_purchases": 0.0,
    "item_trend": 0.0,
    "item_age": 0.0,
    "item_recency": 1.0,
    "user_ctr": 0.05,
    "user_activity": 0.0,
    "user_category_affinity": 0.0,
    "user_item_affinity": 0.0,
    "user_recency": 1.0,
    "user_is_new": 1.0,
    "item_is_new": 1.0,
}
STATE_FEATURES: tuple[str, ...] = tuple(STATE_DEFAULTS)
# The key each state feature is looked up by (the tables of jobs.feature_state.state_tables
# and of the online store, serving.store): the item, the user, or a (user, item category) or
# (user, item) pair.
ITEM_STATE: tuple[str, ...] = tuple(n for n in STATE_FEATURES if n.startswith("item_"))
USER_STATE: tuple[str, ...] = ("user_ctr", "user_activity", "user_recency", "user_is_new")
PAIR_STATE: dict[str, str] = {
    "user_category": "user_category_affinity",
    "user_item": "user_item_affinity",
}
# The key of each of those tables.
ONLINE_KEYS: dict[str, tuple[str, ...]] = {
    "item": ("item_id",),
    "user": ("user_id",),
    "user_category": ("user_id", "category"),
    "user_item": ("user_id", "item_id"),
}
DENSE_FEATURES: tuple[str, ...] = ("log_price", "position", *STATE_FEATURES)
# The user's history: the items of their HISTORY_LENGTH most recent actions in the feature
# state (most recent first), as item buckets (the item feature's hashing, so the model pools
# them through the same embedding table as the candidate item), with weights summing to 1
# (each item's share of the user's time-decayed actions on them); 0 pads both. A new user
# has an empty history (all zeros).
HISTORY_LENGTH = 10
HISTORY_BUCKETS = "history_buckets"
HISTORY_WEIGHTS = "history_weights"
HISTORY_COLUMNS: tuple[str, ...] = (HISTORY_BUCKETS, HISTORY_WEIGHTS)
# Text: the first distinct words of the item's title and of the query (normalized as the
# query is, split on its separators), hashed into one shared word table (bucket 0 pads), so
# an item launched today starts from its title's words and a query meets a title in the
# model (a query.title match term).
WORD_BUCKETS = 1 << 14
TITLE_TOKENS = "title_tokens"
QUERY_TOKENS = "query_tokens"
TEXT_LENGTHS: dict[str, int] = {TITLE_TOKENS: 8, QUERY_TOKENS: 4}
TEXT_SOURCES: dict[str, str] = {TITLE_TOKENS: "title", QUERY_TOKENS: "query"}
MAX_POSITION = 50
LABEL = "label_click"
PURCHASE_LABEL = "label_purchase"
SPARK_HASH_SEED = 42


def id_column(name: str) -> str:
    """Column holding the hashed bucket of feature ``name``."""
    return f"{name}_bucket"


ID_COLUMNS: tuple[str, ...] = tuple(id_column(n) for n in ID_FEATURES)
MODEL_INPUTS: tuple[str, ...] = (*ID_COLUMNS, "dense", *HISTORY_COLUMNS, *TEXT_LENGTHS)
# The example columns a model reads (model inputs are built from them by models.ranker).
MODEL_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, *DENSE_FEATURES, *HISTORY_COLUMNS, *TEXT_LENGTHS)
# Width of each array input (the others are one value per row, "dense" is DENSE_FEATURES).
ARRAY_WIDTHS: dict[str, int] = {
    HISTORY_BUCKETS: HISTORY_LENGTH,
    HISTORY_WEIGHTS: HISTORY_LENGTH,
    **TEXT_LENGTHS,
}


def array_dtype(column: str) -> str:
    """Element type of an array input: the history weights are floats, the rest buckets."""
    return "float32" if column == HISTORY_WEIGHTS else "int32"


# Their values for a new user, an item without a title, a request without a query.
EMPTY_ARRAYS: dict[str, list] = {
    col: [0.0 if array_dtype(col) == "float32" else 0] * width
    for col, width in ARRAY_WIDTHS.items()
}


def spark_padded(values, column: str):
    """The Spark array ``values`` (null: empty) as array input ``column``: cast to its
    element type and padded with 0 to its width (:data:`ARRAY_WIDTHS`)."""
    from pyspark.sql import functions as F

    kind = "float" if array_dtype(column) == "float32" else "int"
    values = F.coalesce(values, F.array()).cast(f"array<{kind}>")
    pad = F.array_repeat(F.lit(0).cast(kind), ARRAY_WIDTHS[column] - F.size(values))
    return F.concat(values, pad)


def _spark_col(column):
    from pyspark.sql import functions as F

    return F.col(column) if isinstance(column, str) else column


# --- query text -------------------------------------------------------------------------
# Separators: what Python's str.split() splits on (Unicode White_Space plus the ASCII
# information separators 0x1C-0x1F), spelt out since Java's \s is ASCII-only (no NBSP). The
# same pattern text is valid in Python's re and Java's regex.
QUERY_SEPARATORS = (
    r"[\t\n\x0B\f\r\x1C-\x20\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+"
)
_SEPARATORS = re.compile(QUERY_SEPARATORS)
# Spark lowercases with ICU (Unicode 17 in pyspark 4.3), Python 3.11 with Unicode 14 tables:
# the letters given a lowercase since then, mapped as ICU does.
_NEWER_LOWERCASE: dict[int, int] = {
    0x1C89: 0x1C8A,
    0xA7CB: 0x0264,
    0xA7CC: 0xA7CD,
    0xA7CE: 0xA7CF,
    0xA7D2: 0xA7D3,
    0xA7D4: 0xA7D5,
    0xA7DA: 0xA7DB,
    0xA7DC: 0x019B,
    **{c: c + 0x20 for c in range(0x10D50, 0x10D66)},
    **{c: c + 0x1B for c in range(0x16EA0, 0x16EB9)},
}


def normalize_query(query: str | None) -> str | None:
    """Separator runs become one space, ends trimmed, lowercased; None when empty."""
    if query is None:
        return None
    query = _SEPARATORS.sub(" ", query).strip(" ").lower()
    if not query.isascii():
        query = query.translate(_NEWER_LOWERCASE)
    return query or None


def spark_normalize_query(column):
    """:func:`normalize_query` as a Spark column expression."""
    from pyspark.sql import functions as F

    value = _spark_query_text(column)
    return F.when(value != "", value)


def _spark_query_text(column):
    """The normalized query, "" where :func:`normalize_query` gives None. Hashing tests for
    "" itself: wrapping this in another condition would run the regex once more per row."""
    from pyspark.sql import functions as F

    return F.lower(F.trim(F.regexp_replace(_spark_col(column), QUERY_SEPARATORS, " ")))


def tokens(column: str, text: str | None) -> list[int]:
    """Word buckets of ``text`` for the array ``column`` (:data:`TEXT_LENGTHS`): its first
    distinct words (after :func:`normalize_query`), hashed, padded with 0."""
    words = list(dict.fromkeys((normalize_query(text) or "").split(" ")))
    buckets = [_word_bucket(w) for w in words if w][: TEXT_LENGTHS[column]]
    return buckets + [0] * (TEXT_LENGTHS[column] - len(buckets))


def _word_bucket(word: str) -> int:
    return 1 + xxh64(f"word:{word}".encode()) % (WORD_BUCKETS - 1)


def spark_tokens(column: str, source):
    """:func:`tokens` as a Spark column expression of the text column ``source``."""
    from pyspark.sql import functions as F

    words = F.array_distinct(F.split(_spark_query_text(_spark_col(source)), " "))
    hashed = F.transform(
        F.filter(words, lambda w: w != ""),
        lambda w: F.pmod(F.xxhash64(F.concat(F.lit("word:"), w)), F.lit(WORD_BUCKETS - 1)) + 1,
    )
    return spark_padded(F.slice(hashed, 1, TEXT_LENGTHS[column]), column)


# --- dense features ---------------------------------------------------------------------
def log_price(price):
    """log1p of a positive price, else 0 (missing, zero, negative or NaN); a number or an
    array of them (serving builds a request's column at once)."""
    price = np.asarray(price, np.float64)  # None: NaN
    positive = price > 0  # NaN > 0 is false
    return np.where(positive, np.log1p(np.where(positive, price, 0.0)), 0.0)


def spark_log_price(column):
    """:func:`log_price` as a Spark column expression (Spark's NaN > 0 is true: excluded)."""
    from pyspark.sql import functions as F

    price = _spark_col(column).cast("double")
    return F.when((price > 0) & ~F.isnan(price), F.log1p(price)).otherwise(F.lit(0.0))


def position_feature(position):
    """Position scaled to [0, 1]; 0 means unknown (serving ranks without a position). A
    number or an array of them."""
    position = np.nan_to_num(np.asarray(position, np.float64))  # None: NaN: unknown
    return np.clip(position, 0, MAX_POSITION) / MAX_POSITION


def spark_position_feature(column):
    """:func:`position_feature` as a Spark column expression."""
    from pyspark.sql import functions as F

    position = _spark_col(column)
    capped = F.least(position, F.lit(MAX_POSITION)).cast("double")
    return F.when(position > 0, capped / MAX_POSITION).otherwise(F.lit(0.0))


# --- ids --------------------------------------------------------------------------------
def xxh64(data: bytes, seed: int = SPARK_HASH_SEED) -> int:
    """Signed 64-bit XXH64 of ``data``, equal to Spark's ``xxhash64`` of the same bytes."""
    h = xxhash.xxh64_intdigest(data, seed)
    return h - (1 << 64) if h >= 1 << 63 else h


def hash_bucket(name: str, value, buckets: int | None = None) -> int:
    """Bucket of ``value`` for feature ``name``; 0 for a missing value. ``buckets``: the
    table size, when not the feature's own (``ID_FEATURES``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    value = normalize_query(value) if name == "query" else str(value)
    if not value:
        return 0
    buckets = buckets or ID_FEATURES[name][1]
    return 1 + xxh64(f"{name}:{value}".encode()) % (buckets - 1)


def spark_hash_bucket(name: str, column):
    """The same bucket as :func:`hash_bucket`, as a Spark column expression."""
    from pyspark.sql import functions as F

    buckets = ID_FEATURES[name][1]
    value = F.col(column).cast("string")
    if name == "query":
        value = _spark_query_text(value)
    hashed = F.pmod(F.xxhash64(F.concat(F.lit(f"{name}:"), value)), F.lit(buckets - 1)) + 1
    return F.when(value.isNull() | (value == ""), F.lit(0)).otherwise(hashed).cast("int")


def history(items) -> tuple[list[int], list[float]]:
    """The history columns of a user from ``items``: ``(item_id, actions)`` pairs, most
    recent first (the state's ``user_item`` rows of the user, decayed counts). Only the
    first :data:`HISTORY_LENGTH` count; weights are their shares of those actions."""
    items = [(i, a) for i, a in items if a and a > 0][:HISTORY_LENGTH]
    total = sum(a for _, a in items)
    pad = HISTORY_LENGTH - len(items)
    buckets = [hash_bucket("item", i) for i, _ in items] + [0] * pad
    weights = [a / total for _, a in items] + [0.0] * pad
    return buckets, weights


# Columns of examples/dt=<ds>/ (Parquet), written by jobs.preprocess and read by training,
# evaluation and validation. Types are Spark SQL types.
EXAMPLE_SCHEMA: dict[str, str] = {
    "request_id": "string",
    "user_id": "string",
    "item_id": "string",
    "category": "string",
    **{id_column(n): "int" for n in ID_FEATURES},
    "log_price": "float",
    "position": "float",
    **{name: "float" for name in STATE_FEATURES},
    HISTORY_BUCKETS: "array<int>",
    HISTORY_WEIGHTS: "array<float>",
    **{column: "array<int>" for column in TEXT_LENGTHS},
    LABEL: "int",
    PURCHASE_LABEL: "int",
    "split": "string",  # "train" or "holdout"
}
