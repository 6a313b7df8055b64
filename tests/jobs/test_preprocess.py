"""Spark preprocessing on tiny deliveries written in the test: every row is accounted for."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from core import features
from core.layout import Layout
from jobs.preprocess import MissingDeltaError, preprocess_day

DS = "2026-11-20"


def ev(i, etype, user="u1", item="i1", req="r1", t="2026-11-20T10:00:00Z", **kw):
    row = {
        "event_id": f"e{i}",
        "event_time": t,
        "event_type": etype,
        "user_id": user,
        "session_id": "s1",
        "request_id": req,
        "query": "red shoes",
        "item_id": item,
        "position": kw.pop("position", 1 if etype in ("impression", "click") else None),
        "price": kw.pop("price", 10.0),
    }
    row.update(kw)
    return row


def deliver(root, ds, events, items=(), raw_lines=()):
    layout = Layout(root)
    layout.raw_events(ds).mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e) for e in events] + list(raw_lines)
    (layout.raw_events(ds) / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    if items:
        layout.raw_items(ds).mkdir(parents=True, exist_ok=True)
        text = "\n".join(json.dumps(i) for i in items) + "\n"
        (layout.raw_items(ds) / "items.jsonl").write_text(text)


ITEMS = [
    {
        "item_id": f"i{k}",
        "title": f"t{k}",
        "category": f"c{k % 2}",
        "brand": "b",
        "price": 10.0 + k,
        "launch_date": "2026-11-01",
    }
    for k in range(1, 6)
]


def test_quarantine_dedupe_labels_and_reconciled_counts(spark, settings):
    events = [
        ev(1, "impression", item="i1", position=1),
        ev(2, "impression", item="i2", position=2),
        ev(3, "impression", item="i3", position=3),
        ev(4, "click", item="i2", t="2026-11-20T10:00:05Z", position=2),
        ev(5, "purchase", item="i2", t="2026-11-20T10:03:00Z"),
        ev(4, "click", item="i2", t="2026-11-20T10:00:05Z", position=2),  # duplicate id
        ev(6, "impression", item="i4", req="r2", user="u2", t="2026-11-18T09:00:00Z"),  # late
        ev(7, "impression", user=None),  # a guest: valid, for the item state only
        ev(8, "hover"),
        ev(9, "impression", t="2026-11-25T00:00:00Z"),
        ev(10, "impression", t="2026-11-01T00:00:00Z"),
        ev(11, "impression", price=-3.0),
        ev(12, "impression", event_time="yesterday-ish"),
    ]
    bad_lines = [
        '{"event_id": "e13", "event_type": "click"',
        '{"event_id": "e14", "position": "x"}',
    ]
    deliver(settings.data_root, DS, events, ITEMS, bad_lines)

    s = preprocess_day(spark, DS, settings)

    assert s["rows_in"] == 15
    assert s["reconciled"] and s["rows_in"] == s["clean"] + s["quarantined"] + s["duplicates"]
    assert s["duplicates"] == 1
    assert s["late_events"] == 1
    assert s["anonymous"] == 1
    assert s["quarantined_by_reason"] == {
        "unknown_event_type": 1,
        "future_event_time": 1,
        "too_late": 1,
        "negative_price": 1,
        "bad_event_time": 1,
        "malformed_line": 2,
    }
    layout = Layout(settings.data_root)
    quarantine = pd.read_parquet(layout.quarantine_events(DS))
    assert len(quarantine) == s["quarantined"]
    assert quarantine["_corrupt_record"].notna().sum() == 2  # raw text kept for malformed lines
    assert quarantine["source_file"].str.endswith(".jsonl").all()  # where each row came from
    assert "yesterday-ish" in set(quarantine["event_time"])  # the time as it arrived
    # Unique ids are written without a Parquet dictionary, repeated values with one.
    chunks = {}
    for part in layout.clean_events(DS).glob("*.parquet"):
        meta = pq.ParquetFile(part).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                chunk = meta.row_group(g).column(c)
                chunks.setdefault(chunk.path_in_schema, set()).add(chunk.has_dictionary_page)
    assert chunks["event_id"] == chunks["request_id"] == {False}
    assert True in chunks["event_type"]  # (a chunk of 1-2 rows may not pay for one)

    ex = pd.read_parquet(layout.examples(DS)).set_index(["request_id", "item_id"])
    assert len(ex) == 4 == s["examples"]
    assert ex.loc[("r1", "i2"), features.LABEL] == 1
    assert ex.loc[("r1", "i2"), features.PURCHASE_LABEL] == 1
    assert ex.loc[("r1", "i1"), features.LABEL] == 0
    assert ex.loc[("r1", "i3"), "category"] == "c1"  # joined from the catalog
    assert ex.loc[("r1", "i1"), "user_bucket"] == features.hash_bucket("user", "u1")
    assert ex.loc[("r1", "i3"), "position"] == pytest.approx(3 / features.MAX_POSITION)
    assert set(ex["split"]) <= {"train", "holdout"}
    assert s["holdout_examples"] == (ex["split"] == "holdout").sum()
    assert s["train_examples"] == (ex["split"] == "train").sum()
    assert s["click_rate"] == pytest.approx(ex[features.LABEL].mean())
    assert list(pd.read_parquet(layout.examples(DS)).columns) == list(features.EXAMPLE_SCHEMA)


def test_rerun_replaces_and_redelivered_events_are_duplicates(spark, settings):
    deliver(settings.data_root, DS, [ev(1, "impression"), ev(2, "click")], ITEMS)
    first = preprocess_day(spark, DS, settings)
    again = preprocess_day(spark, DS, settings)
    assert first["examples"] == again["examples"] == 1
    layout = Layout(settings.data_root)
    assert len(pd.read_parquet(layout.clean_events(DS))) == 2
    # Next day: the same two events re-delivered late, plus one new impression.
    nxt = "2026-11-21"
    deliver(
        settings.data_root,
        nxt,
        [
            ev(1, "impression"),
            ev(2, "click"),
            ev(3, "impression", req="r9", t="2026-11-21T08:00:00Z"),
        ],
    )
    s = preprocess_day(spark, nxt, settings)
    assert s["duplicates"] == 2 and s["clean"] == 1 and s["reconciled"]
    # The catalog carries over from the previous snapshot when a day has no item delta.
    assert s["catalog_items"] == len(ITEMS)


def test_catalog_changes_merge_into_state(spark, settings):
    deliver(settings.data_root, DS, [ev(1, "impression")], ITEMS)
    preprocess_day(spark, DS, settings)
    changes = [
        {**ITEMS[0], "price": 99.0},
        {
            "item_id": "i9",
            "title": "new",
            "category": "c9",
            "brand": "b",
            "price": 5.0,
            "launch_date": "2026-11-21",
        },
        {"item_id": None, "price": 1.0},
        {"item_id": "i8", "price": -1.0},
    ]
    deliver(
        settings.data_root, "2026-11-21", [ev(5, "impression", t="2026-11-21T01:00:00Z")], changes
    )
    s = preprocess_day(spark, "2026-11-21", settings)
    assert s["items_in"] == 4 and s["items_quarantined"] == 2
    state = pd.read_parquet(Layout(settings.data_root).item_state("2026-11-21"))
    state = state.set_index("item_id")
    assert len(state) == len(ITEMS) + 1
    assert state.loc["i1", "price"] == 99.0 and state.loc["i1", "category"] == "c1"
    assert state.loc["i9", "category"] == "c9"


def test_logs_without_impressions_get_sampled_negatives(spark, settings):
    events = [
        ev(i, "purchase", user=f"u{i}", item=f"i{1 + i % 5}", req=None, session_id=f"s{i}")
        for i in range(40)
    ]
    deliver(settings.data_root, DS, events, ITEMS)
    s = preprocess_day(spark, DS, settings)
    assert s["labels_from"] == "sampled_negatives"
    ex = pd.read_parquet(Layout(settings.data_root).examples(DS))
    pos, neg = ex[ex[features.LABEL] == 1], ex[ex[features.LABEL] == 0]
    assert len(pos) == 40
    assert len(neg) > 40  # about 4 per positive, minus collisions with the user's own item
    # A sampled negative never repeats an item the user acted on in the same group.
    merged = neg.merge(pos, on=["request_id", "item_id"])
    assert merged.empty
    # Seeded: the same input gives the same negatives.
    again = preprocess_day(spark, DS, settings)
    assert again["examples"] == s["examples"]


def test_sampled_negatives_are_drawn_per_positive_not_per_basket(spark, settings):
    # One basket (invoice) of 5 purchases among 60 single-purchase baskets of other items.
    events = [
        ev(i, "purchase", user=f"u{i}", item=f"i{i}", req=None, session_id=f"s{i}")
        for i in range(60)
    ]
    events += [
        ev(100 + j, "purchase", user="big", item=f"i{j}", req=None, session_id="basket")
        for j in range(5)
    ]
    deliver(settings.data_root, DS, events)
    preprocess_day(spark, DS, settings)
    ex = pd.read_parquet(Layout(settings.data_root).examples(DS))
    basket = ex[ex["request_id"] == "basket"]
    k = settings.preprocess.negatives_per_positive
    assert (basket[features.LABEL] == 1).sum() == 5
    # ~k per positive (20), minus collisions; per basket it would be at most k.
    assert (basket[features.LABEL] == 0).sum() > 2 * k


def test_held_out_requests_and_guests_never_reach_training_negatives_or_user_state(spark, settings):
    """Each invoice buys its own item and a common one; half the invoices are held out. An
    item bought only in held-out invoices must not be taught as a negative nor counted in
    the state; guest purchases count for their item and never for a user."""
    pre = dataclasses.replace(settings.preprocess, holdout_fraction=0.5)
    settings = dataclasses.replace(settings, preprocess=pre)
    events = []
    for i in range(60):
        own = dict(user=f"u{i}", req=None, session_id=f"s{i}")
        events += [ev(2 * i, "purchase", item=f"x{i}", **own), ev(2 * i + 1, "purchase", **own)]
    guests = [
        ev(500 + j, "purchase", user=None, item="g", req=None, session_id=f"guest{j}")
        for j in range(3)
    ]
    deliver(settings.data_root, DS, events + guests)
    s = preprocess_day(spark, DS, settings)
    assert s["rows_in"] == s["clean"] == 123 and s["quarantined"] == 0
    assert s["anonymous"] == 3

    layout = Layout(settings.data_root)
    ex = pd.read_parquet(layout.examples(DS))
    held = set(ex.loc[ex["split"] == "holdout", "request_id"])
    assert 10 < len(held) < 50
    held_items = {f"x{i}" for i in range(60) if f"s{i}" in held}
    train_items = {f"x{i}" for i in range(60)} - held_items
    negatives = ex[(ex["split"] == "train") & (ex[features.LABEL] == 0)]
    assert not set(negatives["item_id"]) & held_items
    assert set(negatives["item_id"]) & train_items  # drawn from the training requests
    assert ex["user_id"].notna().all() and "g" not in set(ex["item_id"])

    state = {
        t: pd.read_parquet(layout.feature_state(t, DS))
        for t in ("item_stats", "user_stats", "user_item")
    }
    items = state["item_stats"].set_index("item_id")
    assert items.loc["g", "purchases"] == 3  # guests count for the item
    assert not set(items.index) & held_items  # held-out purchases do not
    assert state["user_stats"]["user_id"].notna().all()
    assert set(state["user_stats"]["user_id"]) == {f"u{i}" for i in range(60)} - {
        f"u{i}" for i in range(60) if f"s{i}" in held
    }

    # Every held-out purchase is a ranking case: the bought item among sampled ones.
    cases = pd.read_parquet(layout.ranking(DS))
    assert s["ranking_cases"] == 2 * len(held) == cases[features.LABEL].sum()
    per_case = cases.groupby("request_id")
    assert (per_case[features.LABEL].sum() == 1).all()
    assert per_case.size().max() <= settings.preprocess.ranking_candidates
    assert per_case.size().min() > 10
    for case_id, rows in per_case:
        user = rows["user_id"].iloc[0]
        own = {f"x{user[1:]}", "i1"}  # never a candidate drawn from what the user bought
        assert not set(rows.loc[rows[features.LABEL] == 0, "item_id"]) & own, case_id
    assert {"popularity", *features.EXAMPLE_SCHEMA} == set(cases.columns)


def test_missing_delta_is_a_clear_error(spark, settings):
    with pytest.raises(MissingDeltaError, match="no event files"):
        preprocess_day(spark, DS, settings)


def test_a_missing_day_fails_before_spark_starts(settings, monkeypatch):
    from jobs import spark
    from pipeline import nightly

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark was started for a day that is not there")

    monkeypatch.setattr(spark, "get_spark", no_spark)
    with pytest.raises(MissingDeltaError, match="raw/events/dt=2026-11-20"):
        nightly.preprocess(DS, settings)


@pytest.mark.parametrize("uniform_share", [0.0, 0.5])
def test_the_negative_mix_draws_a_uniform_share_from_the_pool_the_rest_by_popularity(
    spark, uniform_share
):
    """k = 4 negatives per positive: round(k * share) uniformly from the known items, the
    rest from the day's purchases (an item bought half the time is drawn about half the
    time there)."""
    from jobs.preprocess import sample_negatives

    bought = ["hit" if i % 2 else f"b{i % 40}" for i in range(400)]  # "hit": half of them
    events = spark.createDataFrame(
        [("purchase", f"u{i}", f"s{i}", None, item, None, 1.0) for i, item in enumerate(bought)],
        "event_type string, user_id string, session_id string, request_id string, "
        "item_id string, query string, price double",
    )
    pool = spark.createDataFrame([(f"p{j}",) for j in range(200)], "item_id string")
    rows = sample_negatives(events, 4, seed=7, pool=pool, uniform_share=uniform_share)
    ex = rows.toPandas()
    neg = ex[ex[features.LABEL] == 0]
    from_pool = neg["item_id"].str.startswith("p")
    assert (ex[features.LABEL] == 1).sum() == 400
    # round(4 * share) pool draws per positive (distinct but for rare collisions in 200)
    per_group = from_pool.groupby(neg["request_id"]).sum().reindex(ex["request_id"].unique())
    assert per_group.fillna(0).mean() == pytest.approx(round(4 * uniform_share), abs=0.05)
    if uniform_share:
        # uniform over the pool: most items drawn, none far more than the rest
        counts = neg.loc[from_pool, "item_id"].value_counts()
        assert len(counts) > 180 and counts.max() < 4 * counts.mean()
    # popularity draws: "hit" is half the purchases, so each popularity draw of a group that
    # did not buy it is "hit" half the time (uniform over the 41 bought items: 1 in 41)
    draws = 4 - round(4 * uniform_share)
    bought_hit = ex.loc[(ex["item_id"] == "hit") & (ex[features.LABEL] == 1), "request_id"]
    others = neg[~neg["request_id"].isin(bought_hit)]
    with_hit = others.groupby("request_id")["item_id"].apply(lambda s: "hit" in set(s))
    assert with_hit.mean() == pytest.approx(1 - 0.5**draws, abs=0.1)
