"""Feature names and hashing rules, in one place shared by Spark, the model and serving.

Every categorical input (user, item, category, brand, query) enters the model as an integer
bucket: ``1 + pmod(xxhash64(<feature name> + ":" + value), buckets - 1)``, with 0 kept for
missing values. Spark computes it with its built-in ``xxhash64`` (seed 42); Python code
(serving, tests) uses :func:`hash_bucket`, a plain XXH64 that gives the same numbers. The
model therefore takes only integers and floats, so the int8 TFLite path needs no string ops
and new ids get a bucket on their first day.
"""

from __future__ import annotations

import math
import struct

# name -> (source column in the events/catalog, number of hash buckets)
ID_FEATURES: dict[str, tuple[str, int]] = {
    "user": ("user_id", 1 << 15),
    "item": ("item_id", 1 << 15),
    "category": ("category", 1 << 10),
    "brand": ("brand", 1 << 12),
    "query": ("query", 1 << 12),
}
# Point-in-time aggregates from the incremental feature state (jobs.feature_state), each in
# [0, 1]; the value an id gets when the state has never seen it (a new user or item).
STATE_DEFAULTS: dict[str, float] = {
    "item_ctr": 0.05,
    "item_popularity": 0.0,
    "item_purchases": 0.0,
    "item_age": 0.0,
    "user_ctr": 0.05,
    "user_activity": 0.0,
    "user_category_affinity": 0.0,
    "user_recency": 1.0,
    "user_is_new": 1.0,
    "item_is_new": 1.0,
}
STATE_FEATURES: tuple[str, ...] = tuple(STATE_DEFAULTS)
DENSE_FEATURES: tuple[str, ...] = ("log_price", "position", *STATE_FEATURES)
MAX_POSITION = 50
LABEL = "label_click"
PURCHASE_LABEL = "label_purchase"
SPARK_HASH_SEED = 42


def id_column(name: str) -> str:
    """Column holding the hashed bucket of feature ``name``."""
    return f"{name}_bucket"


ID_COLUMNS: tuple[str, ...] = tuple(id_column(n) for n in ID_FEATURES)
MODEL_INPUTS: tuple[str, ...] = ID_COLUMNS + ("dense",)


def normalize_query(query: str | None) -> str | None:
    if query is None:
        return None
    query = " ".join(query.lower().split())
    return query or None


def log_price(price: float | None) -> float:
    return math.log1p(price) if price is not None and price > 0 else 0.0


def position_feature(position: int | None) -> float:
    """Position scaled to [0, 1]; 0 means unknown (serving ranks without a position)."""
    if position is None or position <= 0:
        return 0.0
    return min(position, MAX_POSITION) / MAX_POSITION


# --- XXH64, as Spark's xxhash64 computes it ---------------------------------------------
_P1, _P2, _P3, _P4, _P5 = (
    11400714785074694791,
    14029467366897019727,
    1609587929392839161,
    9650029242287828579,
    2870177450012600261,
)
_MASK = (1 << 64) - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _MASK, 31) * _P1) & _MASK


def _merge(acc: int, val: int) -> int:
    return ((acc ^ _round(0, val)) * _P1 + _P4) & _MASK


def xxh64(data: bytes, seed: int = SPARK_HASH_SEED) -> int:
    """Signed 64-bit XXH64 of ``data``, equal to Spark's ``xxhash64`` of the same bytes."""
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _MASK, (seed + _P2) & _MASK, seed & _MASK, (seed - _P1) & _MASK]
        while i + 32 <= n:
            for j in range(4):
                v[j] = _round(v[j], struct.unpack_from("<Q", data, i + 8 * j)[0])
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _MASK
        for lane in v:
            h = _merge(h, lane)
    else:
        h = (seed + _P5) & _MASK
    h = (h + n) & _MASK
    while i + 8 <= n:
        h ^= _round(0, struct.unpack_from("<Q", data, i)[0])
        h = (_rotl(h, 27) * _P1 + _P4) & _MASK
        i += 8
    if i + 4 <= n:
        h ^= (struct.unpack_from("<I", data, i)[0] * _P1) & _MASK
        h = (_rotl(h, 23) * _P2 + _P3) & _MASK
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _MASK
        h = (_rotl(h, 11) * _P1) & _MASK
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _MASK
    h ^= h >> 29
    h = (h * _P3) & _MASK
    h ^= h >> 32
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
        value = F.lower(F.trim(F.regexp_replace(value, r"\s+", " ")))
    hashed = F.pmod(F.xxhash64(F.concat(F.lit(f"{name}:"), value)), F.lit(buckets - 1)) + 1
    return F.when(value.isNull() | (value == ""), F.lit(0)).otherwise(hashed).cast("int")


def feature_row(raw: dict) -> dict:
    """Model inputs of one raw candidate row (serving): ids hashed, dense features built.

    State features are taken from the row when the caller looked them up (a feature store
    holding ``state/``), else they get the values of a never-seen id.
    """
    row = {id_column(n): hash_bucket(n, raw.get(src)) for n, (src, _) in ID_FEATURES.items()}
    row["log_price"] = log_price(raw.get("price"))
    row["position"] = position_feature(raw.get("position"))
    for name, default in STATE_DEFAULTS.items():
        value = raw.get(name)
        row[name] = default if value is None or value != value else float(value)
    return row


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
    LABEL: "int",
    PURCHASE_LABEL: "int",
    "split": "string",  # "train" or "holdout"
}
