"""Incremental feature state: updated from yesterday plus the delta, joined point in time."""

from __future__ import annotations

import dataclasses
import shutil

import pandas as pd
import pytest

from core import features
from core.layout import Layout
from jobs.feature_state import (
    TABLES,
    add_state_features,
    decay_factor,
    read_state,
    user_histories,
)
from jobs.preprocess import preprocess_day

from .test_preprocess import ITEMS, deliver, ev

D1, D2, D3 = "2026-11-20", "2026-11-21", "2026-11-23"  # D3 after a day without a delivery


def _day(ds, n_clicks_i1, start):
    """A request per (user, item) for i1 and i2; i1 is clicked ``n_clicks_i1`` times."""
    events, k = [], start
    t = f"{ds}T10:00:00Z"
    for u in range(6):
        req = f"r{ds}-{u}"
        for item in ("i1", "i2"):
            events.append(ev(k, "impression", user=f"u{u}", item=item, req=req, t=t))
            k += 1
        if u < n_clicks_i1:
            events.append(ev(k, "click", user=f"u{u}", item="i1", req=req, t=t))
            k += 1
    return events


@pytest.fixture
def settings(settings):
    """No held-out requests here: every event feeds the state, so the sums below are exact
    (test_preprocess checks that held-out requests never do)."""
    pre = dataclasses.replace(settings.preprocess, holdout_fraction=0.0)
    return dataclasses.replace(settings, preprocess=pre)


def _state(spark, layout, ds):
    return {t: spark.read.parquet(str(layout.feature_state(t, ds))).toPandas() for t in TABLES}


@pytest.fixture
def three_days(spark, settings):
    root = settings.data_root
    deliver(root, D1, _day(D1, 0, 0), ITEMS)  # i1 never clicked on day 1
    deliver(root, D2, _day(D2, 6, 100))  # ... and clicked by everyone on day 2
    deliver(root, D3, _day(D3, 6, 200) + [ev(300, "impression", user="u_new", req="rn")])
    for ds in (D1, D2, D3):
        preprocess_day(spark, ds, settings)
    return Layout(root)


def _examples(layout, ds):
    df = pd.read_parquet(layout.examples(ds))
    return df.set_index(["user_id", "item_id"])


def test_state_is_yesterdays_state_decayed_plus_the_delta(spark, settings, three_days):
    layout = three_days
    half_life = settings.preprocess.feature_half_life_days
    items = _state(spark, layout, D3)["item_stats"].set_index("item_id")
    # i1: 6 impressions a day on D1, D2, D3 (+1 for u_new on D3 is on i1 too); clicks 0, 6, 6.
    f2, f1 = decay_factor(2, half_life), decay_factor(3, half_life)  # D2 -> D3, D1 -> D3
    assert items.loc["i1", "impressions"] == pytest.approx(6 * f1 + 6 * f2 + 7)
    assert items.loc["i1", "clicks"] == pytest.approx(0 * f1 + 6 * f2 + 6)
    assert str(items.loc["i1", "first_seen"]) == D1 and str(items.loc["i1", "last_seen"]) == D3
    users = _state(spark, layout, D3)["user_stats"].set_index("user_id")
    assert users.loc["u_new", "events"] == pytest.approx(1.0)
    affinity = _state(spark, layout, D3)["user_category"]
    u0 = affinity[affinity["user_id"] == "u0"].set_index("category")["actions"]
    assert u0.loc["c1"] == pytest.approx(1 * f2 + 1)  # i1 is in category c1

    # Only the previous state and the delta are read: without the older days' outputs the
    # same state comes out again.
    for kind in ("clean/events", "examples", "state/item_stats"):
        shutil.rmtree(layout.root / kind / f"dt={D1}")
    preprocess_day(spark, D3, settings)
    again = _state(spark, layout, D3)["item_stats"].set_index("item_id")
    assert again.loc["i1", "clicks"] == pytest.approx(items.loc["i1", "clicks"])


def test_examples_only_see_features_from_before_their_day(three_days):
    layout = three_days
    prior = features.STATE_DEFAULTS
    d1 = _examples(layout, D1)
    assert (d1["user_is_new"] == 1).all() and (d1["item_is_new"] == 1).all()
    assert d1["item_ctr"].eq(prior["item_ctr"]).all()

    d2 = _examples(layout, D2)  # sees day 1 only: i1 had no clicks yet
    d3 = _examples(layout, D3)  # sees day 2's clicks on i1
    assert (d2["item_is_new"] == 0).all()
    assert d2.loc[("u0", "i1"), "item_ctr"] < 0.05
    assert d3.loc[("u0", "i1"), "item_ctr"] > d2.loc[("u0", "i1"), "item_ctr"] + 0.1
    assert d3.loc[("u0", "i1"), "item_ctr"] > d3.loc[("u0", "i2"), "item_ctr"]
    # Affinity for i1's category appears only after the user clicked it (day 2).
    assert d2.loc[("u0", "i1"), "user_category_affinity"] == 0
    assert d3.loc[("u0", "i1"), "user_category_affinity"] > 0.3
    assert d3.loc[("u_new", "i1"), "user_is_new"] == 1
    assert d3.loc[("u0", "i1"), "user_recency"] < d3.loc[("u_new", "i1"), "user_recency"]
    # Repeat propensity: u0 clicked i1 on day 2, never i2; u5 never clicked.
    assert d2.loc[("u0", "i1"), "user_item_affinity"] == 0
    assert d3.loc[("u0", "i1"), "user_item_affinity"] > 0
    assert d3.loc[("u0", "i2"), "user_item_affinity"] == 0
    # Trend: i1's actions are all recent (day 2), i2 never had one.
    assert d3.loc[("u0", "i1"), "item_trend"] > 0.3
    assert d3.loc[("u0", "i2"), "item_trend"] == 0
    # Recency: both items were seen the day before D3's gap day; unseen would be 1.
    assert 0 < d3.loc[("u0", "i1"), "item_recency"] < 1
    for name in features.STATE_FEATURES:
        assert d3[name].between(0, 1).all(), name

    # History: the items the user acted on before the day; day 3's own clicks are not in it.
    empty = features.EMPTY_ARRAYS
    for df in (d1, d2):  # day 1 had impressions only: no actions, no history
        assert all(list(h) == empty[features.HISTORY_BUCKETS] for h in df[features.HISTORY_BUCKETS])
    i1 = features.hash_bucket("item", "i1")
    assert list(d3.loc[("u0", "i1"), features.HISTORY_BUCKETS]) == [i1] + [0] * 9
    assert list(d3.loc[("u0", "i2"), features.HISTORY_WEIGHTS]) == [1.0] + [0.0] * 9
    assert (
        list(d3.loc[("u_new", "i1"), features.HISTORY_WEIGHTS]) == empty[features.HISTORY_WEIGHTS]
    )


def test_history_is_the_latest_items_as_python_builds_it(spark):
    rows = [
        ("u1", f"i{k}", float(1 + k % 3), f"2026-11-{10 + k // 2:02d} 10:00:00") for k in range(13)
    ]
    rows += [("u1", "old", 5.0, None), ("u2", "i1", 2.0, "2026-11-01 08:00:00")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "actions", "last_action"])
    frame["last_action"] = pd.to_datetime(frame["last_action"])
    got = user_histories(spark.createDataFrame(frame)).toPandas().set_index("user_id")
    for user, mine in frame.groupby("user_id"):
        mine = mine.assign(late=mine["last_action"].fillna(pd.Timestamp.min))
        latest = mine.sort_values(["late", "actions", "item_id"], ascending=[False, False, True])
        buckets, weights = features.history(zip(latest["item_id"], latest["actions"], strict=True))
        n = sum(1 for b in buckets if b)
        assert list(got.loc[user, features.HISTORY_BUCKETS]) == buckets[:n]
        assert list(got.loc[user, features.HISTORY_WEIGHTS]) == pytest.approx(weights[:n])
    assert len(got.loc["u1", features.HISTORY_BUCKETS]) == features.HISTORY_LENGTH


def test_a_state_from_the_same_day_is_refused(spark, three_days):
    state = read_state(spark, three_days, "2026-12-01")
    assert state.as_of == D3
    df = spark.createDataFrame([("u0", "i1", "c1")], ["user_id", "item_id", "category"])
    with pytest.raises(ValueError, match="would leak"):
        add_state_features(df, state, D3, None)
