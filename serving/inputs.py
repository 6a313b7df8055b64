"""Model inputs from raw candidate rows, column by column, with the online store's features.

A request is a frame of candidate rows (:data:`RAW_COLUMNS`): ``item_id`` (required),
``user_id`` (missing: a guest), ``query``, ``price`` (missing: the catalog's), ``position``
(missing or 0: unknown, as when ranking), and optionally the item's ``category``, ``brand``
and ``title`` (a value given wins over the store's: an item launched today is in the
caller's catalog before it is in the store).

Each distinct user and item is looked up once (:class:`serving.store.OnlineStore`); an id
the store does not know (a new user or item, a guest) gets what training gave it: a new
id's state values (``core.features.STATE_DEFAULTS``), an empty history, its id hashed as
Spark hashed it. Hashing runs once per distinct value, never per row; the rest is numpy.
"""

from __future__ import annotations

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


def _codes(raw: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    """Per row the index of its value among the distinct values, as strings (-1: missing
    or no such column)."""
    if column not in raw:
        return np.full(len(raw), -1, np.int64), []
    codes, uniques = pd.factorize(raw[column].to_numpy())
    return codes.astype(np.int64), [str(v) for v in uniques]


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


class _Vectors:
    """One table's looked-up vectors (zeros for what the store does not know), by name."""

    def __init__(self, table: str, store: OnlineStore | None, ids: list[str]):
        if store is None or not ids:
            self.found = np.zeros(len(ids), bool)
            self.values = np.zeros((len(ids), len(VECTORS[table])), np.float32)
            self.categories = [None] * len(ids)
        else:
            self.found, self.values, self.categories = store.vectors(table, ids)
        self.at = {c: i for i, c in enumerate(VECTORS[table])}

    def column(self, name: str, default: float = 0.0) -> np.ndarray:
        return np.where(self.found, self.values[:, self.at[name]], default)

    def array(self, name: str) -> np.ndarray:
        start = self.at[f"{name}[0]"]
        return self.values[:, start : start + features.ARRAY_WIDTHS[name]]


def _given_or_stored(codes: np.ndarray, given: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Per row the request's value where it has one, else the store's."""
    has = codes >= 0
    if not has.any():
        return stored
    out = stored.copy()
    out[has] = given[codes[has]]
    return out


def _pair_values(store, table: str, users: list, user_codes, keys: list, key_codes):
    """The pair feature of ``table`` per row; the new-id value where the store has none."""
    default = features.STATE_DEFAULTS[features.PAIR_STATE[table]]
    out = np.full(len(user_codes), default, np.float32)
    rows = store.pairs(table, users) if store is not None and users and keys else []
    if not rows:
        return out
    user_at = {u: i for i, u in enumerate(users)}
    key_at = {k: i for i, k in enumerate(keys)}
    fu = np.fromiter((user_at[r[0]] for r in rows), np.int64, len(rows))
    fk = np.fromiter((key_at.get(r[1], -1) for r in rows), np.int64, len(rows))
    values = [r[2] for r in rows]
    ok = fk >= 0
    if not ok.any():
        return out
    width = len(keys) + 1
    fetched = fu[ok] * width + fk[ok]  # one code per (user, key) pair
    order = np.argsort(fetched)
    fetched, values = fetched[order], np.asarray(values, np.float32)[ok][order]
    wanted = np.where((user_codes >= 0) & (key_codes >= 0), user_codes * width + key_codes, -1)
    at = np.minimum(np.searchsorted(fetched, wanted), len(fetched) - 1)
    hit = fetched[at] == wanted
    out[hit] = values[at[hit]]
    return out


def _numbers(raw: pd.DataFrame, column: str) -> np.ndarray:
    if column not in raw:
        return np.full(len(raw), np.nan)
    values = raw[column]
    if values.dtype.kind not in "fiu":  # strings, None: what is not a number is missing
        values = pd.to_numeric(values, errors="coerce")
    return values.to_numpy(np.float64, na_value=np.nan)


def model_inputs(raw: pd.DataFrame, store: OnlineStore | None) -> tuple[dict, dict]:
    """The model's inputs for ``raw`` (request rows) and what the lookup found: the number
    of distinct users and items, and how many of them the store knew."""
    if "item_id" not in raw:
        raise ValueError(f"request rows lack the column 'item_id' (columns: {list(raw)})")
    item_codes, item_ids = _codes(raw, "item_id")
    if (item_codes < 0).any():
        raise ValueError(f"request row {int(np.argmax(item_codes < 0))}: item_id is missing")
    user_codes, user_ids = _codes(raw, "user_id")
    query_codes, queries = _codes(raw, "query")
    items = _Vectors("item", store, item_ids)
    users = _Vectors("user", store, user_ids)

    def bucket(name: str, table: _Vectors, ids: list) -> np.ndarray:
        """The id's bucket as the store holds it, else hashed (a new id)."""
        out = table.values[:, table.at[features.id_column(name)]].astype(np.int32)
        new = np.flatnonzero(~table.found)
        out[new] = _hashed(name, [ids[i] for i in new])
        return out

    ids = {
        "item": bucket("item", items, item_ids)[item_codes],
        "user": _per_row(user_codes, bucket("user", users, user_ids), 0),
        "query": _per_row(query_codes, _hashed("query", queries), 0),
    }
    # The item's category, brand and title: the request's where given, else the store's.
    category_codes, categories = _codes(raw, "category")
    for name, (codes, values) in {
        "category": (category_codes, categories),
        "brand": _codes(raw, "brand"),
    }.items():
        stored = items.values[:, items.at[features.id_column(name)]].astype(np.int32)
        ids[name] = _given_or_stored(codes, _hashed(name, values), stored[item_codes])
    inputs = {features.id_column(n): ids[n].reshape(-1, 1) for n in features.ID_FEATURES}
    title_codes, titles = _codes(raw, "title")
    stored_title = items.array(features.TITLE_TOKENS).astype(np.int32)[item_codes]
    inputs[features.TITLE_TOKENS] = _given_or_stored(
        title_codes, _tokens(features.TITLE_TOKENS, titles), stored_title
    )
    inputs[features.QUERY_TOKENS] = _per_row(
        query_codes, _tokens(features.QUERY_TOKENS, queries), 0
    )
    for column in features.HISTORY_COLUMNS:  # an unknown user's vector is zeros: no history
        per_user = users.array(column).astype(features.array_dtype(column))
        inputs[column] = _per_row(user_codes, per_user, 0)

    # Dense: price and position from the request, state features from the store.
    price = _numbers(raw, "price")
    stored_log_price = items.column("catalog_log_price")[item_codes]
    dense = {
        "log_price": np.where(np.isnan(price), stored_log_price, features.log_price(price)),
        "position": features.position_feature(_numbers(raw, "position")),
    }
    for name in features.ITEM_STATE:
        dense[name] = items.column(name, features.STATE_DEFAULTS[name])[item_codes]
    for name in features.USER_STATE:
        default = features.STATE_DEFAULTS[name]
        dense[name] = _per_row(user_codes, users.column(name, default), default)
    stored_category = np.asarray(items.categories, dtype=object)[item_codes]
    row_category = _given_or_stored(
        category_codes, np.asarray(categories, dtype=object), stored_category
    )
    pair_codes, pair_categories = pd.factorize(row_category)
    dense["user_category_affinity"] = _pair_values(
        store, "user_category", user_ids, user_codes, list(pair_categories), pair_codes
    )
    dense["user_item_affinity"] = _pair_values(
        store, "user_item", user_ids, user_codes, item_ids, item_codes
    )
    inputs["dense"] = np.empty((len(raw), len(features.DENSE_FEATURES)), np.float32)
    for k, name in enumerate(features.DENSE_FEATURES):
        inputs["dense"][:, k] = dense[name]
    found = {
        "users": len(user_ids),
        "users_known": int(users.found.sum()),
        "items": len(item_ids),
        "items_known": int(items.found.sum()),
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
