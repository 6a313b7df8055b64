"""The simulated shop: contract, determinism, drift and dirt."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd

from jobs import simulate
from jobs.layout import Layout

TINY = simulate.SCALES["tiny"]
START = "2026-11-20"
FIELDS = {
    "event_id",
    "event_time",
    "event_type",
    "user_id",
    "session_id",
    "request_id",
    "query",
    "item_id",
    "position",
    "price",
}


def read_events(root, ds):
    path = Layout(root).raw_events(ds) / "part-00000.jsonl.gz"
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def test_contract_and_labels_are_consistent(tmp_path):
    stats = simulate.generate_days(tmp_path, START, 2, TINY)
    assert [s["ds"] for s in stats] == [START, "2026-11-21"]
    rows = [json.loads(line) for line in read_events(tmp_path, START)]
    assert all(set(r) == FIELDS for r in rows)
    df = pd.DataFrame(rows)
    assert df["event_id"].is_unique
    assert set(df["event_type"]) == {"impression", "click", "add_to_cart", "purchase"}
    imps = df[df.event_type == "impression"]
    assert imps["position"].between(1, TINY.impressions_per_request).all()
    # Every click follows an impression of the same request and item.
    keys = set(zip(imps.request_id, imps.item_id, strict=True))
    clicks = df[df.event_type == "click"]
    assert all(k in keys for k in zip(clicks.request_id, clicks.item_id, strict=True))
    assert 0.03 < len(clicks) / len(imps) < 0.25
    assert pd.to_datetime(df.event_time).dt.strftime("%Y-%m-%d").eq(START).all()
    truth = pd.read_parquet(tmp_path / "sim" / "truth" / f"dt={START}" / "truth.parquet")
    assert set(truth.event_id) == set(imps.event_id)
    assert truth.p_click.between(0, 1, inclusive="neither").all()


def test_deterministic_and_day_n_alone_equals_sequence(tmp_path):
    simulate.generate_days(tmp_path / "a", START, 3, TINY)
    simulate.generate_day(tmp_path / "b", START, 2, TINY)
    ds = "2026-11-22"
    assert read_events(tmp_path / "a", ds) == read_events(tmp_path / "b", ds)
    simulate.generate_day(tmp_path / "c", START, 2, simulate.dataclasses.replace(TINY, seed=8))
    assert read_events(tmp_path / "a", ds) != read_events(tmp_path / "c", ds)


def test_new_items_and_users_arrive_and_world_drifts(tmp_path):
    simulate.generate_days(tmp_path, START, 2, TINY)
    items = pd.read_json(Layout(tmp_path).raw_items("2026-11-21") / "items.jsonl", lines=True)
    new = items[items.launch_date.astype(str) == "2026-11-21"]
    assert len(new) == TINY.new_items_per_day
    events = pd.DataFrame([json.loads(x) for x in read_events(tmp_path, "2026-11-21")])
    assert events.user_id.isin([f"u{i:06d}" for i in range(300, 320)]).sum() >= 20
    s0, s10 = simulate.world_state(TINY, 0), simulate.world_state(TINY, 10)
    assert np.abs(s10.trend - s0.trend).mean() > 0.2  # category trends moved
    assert s10.n_items == TINY.n_items + 10 * TINY.new_items_per_day


def test_dirty_delivery_has_every_kind_of_dirt(tmp_path):
    dirt = simulate.DirtConfig(0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05)
    stats = simulate.generate_day(tmp_path, START, 0, TINY, dirt)
    lines = read_events(tmp_path, START)
    assert len(lines) == stats["events"] > stats["clean_events"]
    parsed, broken = [], 0
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            broken += 1
    assert broken > 0
    df = pd.DataFrame(parsed)
    assert df.event_id.duplicated().any()
    assert df.user_id.isna().any() and df.item_id.isna().any()
    assert (df.price < 0).any() and (df.event_type == "hover").any()
    days = pd.to_datetime(df.event_time, format="ISO8601").dt.strftime("%Y-%m-%d")
    assert (days < START).any() and (days > START).any()
