"""Model inputs from raw candidate rows, column by column, with the online store's features.

A request is a frame of candidate rows (:data:`RAW_COLUMNS`): ``item_id`` (required),
``user_id`` (missing: a guest), ``query``, ``price`` (missing: the catalog's), ``position``
(missing or 0: unknown, as when ranking), and optionally the item's ``category``, ``brand``
and ``title`` (a value given wins over the store's: an item launched today is in the
caller's catalog before it is in the store); other columns are ignored.

The frame is checked as its columns are read, by their dtypes (no new frame, nothing per row
in Python): ``item_id`` must be there and have a value in every row; the id and text columns
hold strings (object or pandas string dtype, None or NaN for a missing one); ``price`` and
``position`` numbers (int or float; an object column is parsed, and a value in it that is
not a number is refused). A ``ValueError`` names the column (and the row).

Each distinct user and item is looked up once (:class:`serving.store.OnlineStore`); an id
the store does not know (a new user or item, a guest) gets what training gave it: a new
id's state values (``core.features.STATE_DEFAULTS``), an empty history, its id hashed as
Spark hashed it. Hashing runs once per distinct value, never per row; the rest is numpy: a
table's vectors are taken per row in one step and the model's columns sliced from them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from core import features
from serving.store import VECTORS, OnlineStore

# column -> type of the request rows (the MLflow signature: :func:`signature`).
RAW_COLUMNS: dict[str, str] = {
    "user_id": "string",
    "item_id": "string",
    "query": "string",
    "price": "double",
    "position": "double",  # a rank; double so that a missing one (NaN) passes the signature
    "category": "string",
    "brand": "string",
    "title": "string",
}
DISTINCT_CHECK = 1024  # rows up to which a column is first checked for distinct strings


def _strings(name: str, values) -> np.ndarray:
    dtype = values.dtype
    if dtype == np.dtype(object):
        return values
    if isinstance(dtype, pd.StringDtype):
        return values.to_numpy()  # objects: str, and pd.NA or NaN where missing
    raise ValueError(
        f"request column {name!r} has dtype {dtype}: strings are expected (object or string "
        "dtype, None for a missing value)"
    )


def _numbers(name: str, values) -> np.ndarray:
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        return values.astype(np.float64, copy=False)
    if dtype.kind in "iuf":  # pandas' nullable Int64, Float64: pd.NA is NaN
        return values.to_numpy(np.float64, na_value=np.nan)
    if dtype == np.dtype(object):  # e.g. None for a missing value
        parsed = pd.to_numeric(values, errors="coerce")
        bad = pd.isna(parsed) & ~pd.isna(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"request column {name!r}: row {row} is not a number ({values[row]!r})"
            )
        return np.asarray(parsed, np.float64)
    raise ValueError(f"request column {name!r} has dtype {dtype}: numbers are expected")


def _column_array(raw: pd.DataFrame):
    """``array(i)``: the values of column ``i`` of ``raw``, a numpy or pandas extension array.
    pandas' own ``_get_column_array`` builds no Series: on a new frame ``raw[name]`` costs
    about 12 us a column (the columns' hash table, a Series), ten times as much."""
    array = getattr(raw, "_get_column_array", None)
    if array is not None:
        return array

    def public(i: int):
        series = raw.iloc[:, i]
        return series.to_numpy() if isinstance(series.dtype, np.dtype) else series.array

    return public


def request_columns(raw: pd.DataFrame) -> dict[str, np.ndarray]:
    """The request's columns of :data:`RAW_COLUMNS` as numpy arrays (strings as objects,
    numbers as float64), checked by dtype: a ``ValueError`` names a column that is missing
    (``item_id``), given twice, or of an unusable type. Nothing is copied that need not be:
    the arrays may be the frame's own (never written to)."""
    if not isinstance(raw, pd.DataFrame):
        raise TypeError(f"request rows are a pandas DataFrame, not {type(raw).__name__}")
    columns = {}
    array = _column_array(raw)
    for i, name in enumerate(raw.columns):
        kind = RAW_COLUMNS.get(name)
        if kind is None:
            continue
        if name in columns:
            raise ValueError(f"request column {name!r} is given twice")
        columns[name] = (_strings if kind == "string" else _numbers)(name, array(i))
    if "item_id" not in columns:
        raise ValueError(f"request rows lack the column 'item_id' (columns: {list(raw)})")
    return columns


def _codes(values: np.ndarray | None, n: int) -> tuple[np.ndarray, list[str]]:
    """Per row the index of its value among the distinct values, as strings (-1: missing
    or no such column). A column of one string (a request's user, its query) costs one
    comparison, a request's distinct strings (its candidates) one set."""
    if values is None:
        return np.full(n, -1, np.int64), []
    first = values[0] if n else None
    if type(first) is str:
        try:
            if (values == first).all():
                return np.zeros(n, np.int64), [first]
        except TypeError:  # pd.NA among them: its comparison has no truth value
            pass
        if n <= DISTINCT_CHECK:
            listed = values.tolist()
            if len(set(listed)) == n and set(map(type, listed)) == {str}:
                return np.arange(n, dtype=np.int64), listed
    codes, uniques = pd.factorize(values)
    return codes.astype(np.int64, copy=False), list(map(str, uniques))


def _per_row(codes: np.ndarray, per_unique: np.ndarray, missing) -> np.ndarray:
    """``per_unique[code]`` for each row, ``missing`` where the row has no value (code -1:
    the row appended last)."""
    last = np.full((1, *per_unique.shape[1:]), missing, per_unique.dtype)
    return np.concatenate([per_unique, last])[codes]


def _hashed(name: str, values: list) -> np.ndarray:
    return np.fromiter((features.hash_bucket(name, v) for v in values), np.int32, len(values))


def _tokens(column: str, values: list) -> np.ndarray:
    width = features.TEXT_LENGTHS[column]
    flat = [b for v in values for b in features.tokens(column, v)]
    return np.asarray(flat, np.int32).reshape(len(values), width)


def _given_or_stored(codes: np.ndarray, given: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Per row the request's value where it has one, else the store's."""
    has = codes >= 0
    if not has.any():
        return stored
    out = stored.copy()
    out[has] = given[codes[has]]
    return out


# Per table: the vector of an id the store does not know (a new id; a guest): the new-id
# state values, zeros elsewhere (no bucket, title words or history); and where each value is.
_UNKNOWN = {
    table: np.array([features.STATE_DEFAULTS.get(c, 0.0) for c in columns], np.float32)
    for table, columns in VECTORS.items()
}
_AT = {table: {c: i for i, c in enumerate(columns)} for table, columns in VECTORS.items()}


def _span(table: str, name: str) -> slice:
    """The columns of ``name`` (an id's bucket, an array) in ``table``'s vectors."""
    start = _AT[table].get(name, _AT[table].get(f"{name}[0]"))
    return slice(start, start + features.ARRAY_WIDTHS.get(name, 1))


_ITEM = {name: _span("item", name) for name in ("catalog_log_price", features.TITLE_TOKENS)}
_ITEM.update({n: _span("item", features.id_column(n)) for n in ("item", "category", "brand")})
_USER = {name: _span("user", name) for name in features.HISTORY_COLUMNS}
_USER["user"] = _span("user", features.id_column("user"))
# The state features' columns in the dense block and in the tables' vectors.
_DENSE = {name: k for k, name in enumerate(features.DENSE_FEATURES)}
_ITEM_STATE = (
    [_DENSE[n] for n in features.ITEM_STATE],
    [_AT["item"][n] for n in features.ITEM_STATE],
)
_USER_STATE = (
    [_DENSE[n] for n in features.USER_STATE],
    [_AT["user"][n] for n in features.USER_STATE],
)


def _looked_up(table: str, store: OnlineStore | None, ids: list[str]):
    """Per id: whether the store knows it, its vector (an unknown id's: :data:`_UNKNOWN`
    with its id hashed) and, for items, its category (None if unknown)."""
    if store is None or not ids:
        found = np.zeros(len(ids), bool)
        vectors = np.empty((len(ids), len(VECTORS[table])), np.float32)
        extra = np.full(len(ids), None, object)
    else:
        found, vectors, extra = store.vectors(table, ids)  # fresh arrays: ours to change
    new = np.flatnonzero(~found)
    if len(new):
        vectors[new] = _UNKNOWN[table]
        vectors[new, _AT[table][features.id_column(table)]] = _hashed(table, [ids[i] for i in new])
    return found, vectors, extra


def _pair_values(store, table: str, users: list, user_codes, keys) -> np.ndarray:
    """The pair feature of ``table`` per row; the new-id value where the store has none.
    ``keys()``: keys (categories, items; repeats and None allowed) and each row's index in
    them."""
    default = features.STATE_DEFAULTS[features.PAIR_STATE[table]]
    per_user = store.pairs(table, users) if store is not None and users else []
    if not any(per_user):
        return np.full(len(user_codes), default, np.float32)
    keys, key_codes = keys()
    if len(per_user) == 1:  # one user (a request): a dict lookup per key
        values = map(per_user[0].get, keys, itertools.repeat(default))
        out = np.fromiter(values, np.float32, len(keys))[key_codes]
        out[user_codes < 0] = default  # guests' rows
        return out
    distinct, keys = pd.factorize(np.asarray(keys, dtype=object))  # None: -1
    key_codes = distinct[key_codes]
    out = np.full(len(user_codes), default, np.float32)
    key_at = dict(zip(keys, range(len(keys)), strict=True))
    width = len(keys) + 1
    fetched, values = [], []
    for u, pairs in enumerate(per_user):
        for key, value in pairs.items():
            k = key_at.get(key)
            if k is not None:
                fetched.append(u * width + k)  # one code per (user, key) pair
                values.append(value)
    if not fetched:
        return out
    fetched, values = np.asarray(fetched, np.int64), np.asarray(values, np.float32)
    order = np.argsort(fetched)
    fetched, values = fetched[order], values[order]
    wanted = np.where((user_codes >= 0) & (key_codes >= 0), user_codes * width + key_codes, -1)
    at = np.minimum(np.searchsorted(fetched, wanted), len(fetched) - 1)
    hit = fetched[at] == wanted
    out[hit] = values[at[hit]]
    return out


def model_inputs(raw: pd.DataFrame, store: OnlineStore | None) -> tuple[dict, dict]:
    """The model's inputs for ``raw`` (request rows, checked: :func:`request_columns`) and
    what the lookup found: the number of distinct users and items, and how many of them the
    store knew."""
    columns = request_columns(raw)
    n = len(raw)
    item_codes, item_ids = _codes(columns["item_id"], n)
    if (item_codes < 0).any():
        raise ValueError(f"request row {int(np.argmax(item_codes < 0))}: item_id is missing")
    user_codes, user_ids = _codes(columns.get("user_id"), n)
    query_codes, queries = _codes(columns.get("query"), n)
    item_found, item_vectors, item_categories = _looked_up("item", store, item_ids)
    user_found, user_vectors, _ = _looked_up("user", store, user_ids)
    item = item_vectors[item_codes]  # per row
    user = np.concatenate([user_vectors, _UNKNOWN["user"][None]])[user_codes]  # guests: last

    inputs = {
        features.id_column("user"): user[:, _USER["user"]].astype(np.int32),
        features.id_column("item"): item[:, _ITEM["item"]].astype(np.int32),
    }
    # The item's category, brand and title: the request's where given, else the store's.
    given = {}  # column -> (codes, values) of the request's catalog fields
    for name in ("category", "brand", features.TITLE_TOKENS):
        source = features.TEXT_SOURCES.get(name, name)
        stored = item[:, _ITEM[name]].astype(np.int32)
        if source in columns:
            codes, values = given[source] = _codes(columns[source], n)
            if name == features.TITLE_TOKENS:
                stored = _given_or_stored(codes, _tokens(name, values), stored)
            else:
                stored = _given_or_stored(codes, _hashed(name, values)[:, None], stored)
        inputs[name if name == features.TITLE_TOKENS else features.id_column(name)] = stored
    query_bucket = _per_row(query_codes, _hashed("query", queries), 0)
    inputs[features.id_column("query")] = query_bucket[:, None]
    query_tokens = _tokens(features.QUERY_TOKENS, queries)
    inputs[features.QUERY_TOKENS] = _per_row(query_codes, query_tokens, 0)
    for column in features.HISTORY_COLUMNS:  # an unknown user's vector is zeros: no history
        inputs[column] = user[:, _USER[column]].astype(features.array_dtype(column))

    # Dense: price and position from the request, state features from the store.
    dense = np.empty((n, len(features.DENSE_FEATURES)), np.float32)
    dense[:, _ITEM_STATE[0]] = item[:, _ITEM_STATE[1]]
    dense[:, _USER_STATE[0]] = user[:, _USER_STATE[1]]
    stored_log_price = item[:, _ITEM["catalog_log_price"].start]
    price = columns.get("price")
    dense[:, _DENSE["log_price"]] = (
        stored_log_price
        if price is None
        else np.where(np.isnan(price), stored_log_price, features.log_price(price))
    )
    position = columns.get("position")
    dense[:, _DENSE["position"]] = 0.0 if position is None else features.position_feature(position)

    def row_categories():
        """The items' categories (the request's where given, else the store's) and each
        row's index in them."""
        if "category" not in given:
            return item_categories, item_codes
        codes, values = given["category"]
        keys = np.concatenate([np.asarray(values, dtype=object), item_categories])
        return keys, np.where(codes >= 0, codes, len(values) + item_codes)

    dense[:, _DENSE["user_category_affinity"]] = _pair_values(
        store, "user_category", user_ids, user_codes, row_categories
    )
    dense[:, _DENSE["user_item_affinity"]] = _pair_values(
        store, "user_item", user_ids, user_codes, lambda: (item_ids, item_codes)
    )
    inputs["dense"] = dense
    found = {
        "users": len(user_ids),
        "users_known": int(user_found.sum()),
        "items": len(item_ids),
        "items_known": int(item_found.sum()),
    }
    return inputs, found


def signature():
    """The pyfunc's MLflow signature: the request columns (only ``item_id`` required), one
    float score per row."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(t, c, required=c == "item_id") for c, t in RAW_COLUMNS.items()])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("float")]))


def input_example() -> pd.DataFrame:
    """Two candidates for one user and query, as a search service sends them."""
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "item_id": ["i1", "i2"],
            "query": ["red shoes", "red shoes"],
            "price": [19.9, 24.5],
            "position": [1.0, 2.0],
            "category": [None, None],
            "brand": [None, None],
            "title": [None, None],
        }
    )
