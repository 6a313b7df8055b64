"""Synthetic examples partitions with a learnable signal, written like jobs.preprocess does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import features
from core.layout import Layout

ITEM_EFFECT = np.random.default_rng(0).normal(0, 1.5, 10_000)  # the hidden world, every day


def make_examples(n: int, seed: int, items=range(200), users=range(300)) -> pd.DataFrame:
    """Clicks depend on a hidden per-item and per-user effect plus price and position."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(0)  # the same hidden effects for every day
    item_effect = world.normal(0, 1.5, 10_000)
    user_effect = world.normal(0, 0.8, 10_000)
    items, users = np.asarray(list(items)), np.asarray(list(users))
    item = rng.choice(items, n)
    user = rng.choice(users, n)
    position = rng.integers(1, 11, n)
    price = np.exp(rng.normal(3, 0.5, n))
    logit = -2.0 + item_effect[item] + user_effect[user] - 0.3 * np.log(position)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    df = _rows([f"r{seed}_{k // 10}" for k in range(n)], user, item, price, position, items)
    df[features.LABEL] = click
    df[features.PURCHASE_LABEL] = click * (rng.random(n) < 0.2)
    df["split"] = np.where(rng.random(n) < 0.2, "holdout", "train")
    return df[list(features.EXAMPLE_SCHEMA)]


def _rows(request_ids, user, item, price, position, pool) -> pd.DataFrame:
    """Example columns of (user, item) rows, hashed and scaled as jobs.preprocess does; each
    user's history is three items of ``pool``, the same on every day."""
    df = pd.DataFrame(
        {
            "request_id": request_ids,
            "user_id": [f"u{u}" for u in user],
            "item_id": [f"i{i}" for i in item],
            "category": [f"c{i % 7}" for i in item],
        }
    )
    for name, (src, _) in features.ID_FEATURES.items():
        values = df[src] if src in df else df["item_id"].str.replace("i", "b")
        if name == "query":
            values = df["category"]
        df[features.id_column(name)] = [features.hash_bucket(name, v) for v in values]
    df["log_price"] = np.log1p(price).astype(np.float32)
    df["position"] = (np.asarray(position) / features.MAX_POSITION).astype(np.float32)
    for name, value in features.STATE_DEFAULTS.items():  # as if every id were new
        df[name] = np.float32(value)
    pool = np.asarray(list(pool))
    histories = {
        u: features.history([(f"i{pool[(7 * int(u[1:]) + j) % len(pool)]}", 1.0) for j in range(3)])
        for u in df["user_id"].unique()
    }
    for k, col in enumerate(features.HISTORY_COLUMNS):
        df[col] = [histories[u][k] for u in df["user_id"]]
    titles = [f"shade {int(i[1:]) % 13} kind {int(i[1:]) % 5}" for i in df["item_id"]]
    df[features.TITLE_TOKENS] = [features.tokens(features.TITLE_TOKENS, t) for t in titles]
    df[features.QUERY_TOKENS] = [features.tokens(features.QUERY_TOKENS, q) for q in df["category"]]
    return df


def make_ranking_cases(
    n_cases: int,
    seed: int,
    items=range(200),
    users=range(300),
    candidates: int = 100,
    popularity: dict | None = None,
) -> pd.DataFrame:
    """Ranking cases as the ranking/dt=<ds> contract has them: per case (``request_id``)
    ``candidates`` items drawn uniformly, one of them (chosen by the hidden click model) the
    held-out positive (``label_click`` 1); ``popularity`` from ``popularity`` (item id ->
    count; 0 for all, as on a first day, when None)."""
    rng = np.random.default_rng(seed)
    items, users = np.asarray(list(items)), np.asarray(list(users))
    item = rng.choice(items, (n_cases, candidates))
    user = np.repeat(rng.choice(users, n_cases), candidates).reshape(n_cases, candidates)
    weight = 1 / (1 + np.exp(-(-2.0 + ITEM_EFFECT[item])))
    cum = np.cumsum(weight, axis=1)
    target = (cum < rng.random((n_cases, 1)) * cum[:, -1:]).sum(axis=1)
    label = np.zeros((n_cases, candidates), dtype=np.int32)
    label[np.arange(n_cases), target] = 1
    n = n_cases * candidates
    ids = np.repeat([f"case{seed}_{c}" for c in range(n_cases)], candidates)
    df = _rows(ids, user.ravel(), item.ravel(), np.exp(rng.normal(3, 0.5, n)), np.ones(n), items)
    df[features.LABEL] = label.ravel()
    df[features.PURCHASE_LABEL] = 0
    df["split"] = "holdout"
    df = df[list(features.EXAMPLE_SCHEMA)]
    df["popularity"] = df["item_id"].map(popularity or {}).fillna(0).astype(np.float64)
    return df


def write_day(layout: Layout, ds: str, df: pd.DataFrame) -> None:
    path = layout.examples(ds)
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "part-0.parquet", index=False)
    (path / "_SUCCESS").touch()


def write_ranking(layout: Layout, ds: str, df: pd.DataFrame) -> None:
    path = layout.ranking(ds)
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "part-0.parquet", index=False)
    (path / "_SUCCESS").touch()


def click_counts(df: pd.DataFrame) -> dict:
    """Item id -> positives: the popularity of the days ``df`` holds."""
    return df[df[features.LABEL] == 1]["item_id"].value_counts().to_dict()


@pytest.fixture
def small_train_settings(settings):
    import dataclasses

    return dataclasses.replace(
        settings,
        train=dataclasses.replace(
            settings.train, embedding_dim=8, hidden_units=(16, 8), batch_size=256, retrain_epochs=4
        ),
    )


TRAINING_DAY = "2026-11-20"


@pytest.fixture
def day(small_train_settings):
    """The small settings and a layout holding one day (``TRAINING_DAY``) of 6,000 examples."""
    s = small_train_settings
    layout = Layout(s.data_root)
    write_day(layout, TRAINING_DAY, make_examples(6000, seed=1, items=range(0, 150)))
    return s, layout
