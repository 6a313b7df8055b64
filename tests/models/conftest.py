"""Synthetic examples partitions with a learnable signal, written like jobs.preprocess does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import features
from core.layout import Layout


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
    df = pd.DataFrame(
        {
            "request_id": [f"r{seed}_{k // 10}" for k in range(n)],
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
    df["position"] = (position / features.MAX_POSITION).astype(np.float32)
    for name, value in features.STATE_DEFAULTS.items():  # as if every id were new
        df[name] = np.float32(value)
    df[features.LABEL] = click
    df[features.PURCHASE_LABEL] = click * (rng.random(n) < 0.2)
    df["split"] = np.where(rng.random(n) < 0.2, "holdout", "train")
    return df[list(features.EXAMPLE_SCHEMA)]


def write_day(layout: Layout, ds: str, df: pd.DataFrame) -> None:
    path = layout.examples(ds)
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "part-0.parquet", index=False)
    (path / "_SUCCESS").touch()


@pytest.fixture
def small_train_settings(settings):
    import dataclasses

    return dataclasses.replace(
        settings,
        train=dataclasses.replace(
            settings.train, embedding_dim=8, hidden_units=(16, 8), batch_size=256, retrain_epochs=4
        ),
    )
