"""The simulated shop: data contract, funnel consistency, truth, determinism, drift and dirt."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from core.layout import Layout, check_hour, shift_ds
from ops import simulate

TINY = simulate.SCALES["tiny"]
START = "2026-11-20"
DAY1 = shift_ds(START, 1)
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def read_lines(root, ds: str) -> list[str]:
    folder = Layout(root).raw_events(ds)
    gz = folder / "part-00000.jsonl.gz"
    if gz.exists():
        return gzip.decompress(gz.read_bytes()).decode().splitlines()
    return (folder / "part-00000.jsonl").read_text().splitlines()


def read_events(root, ds: str) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in read_lines(root, ds)])


def read_items(root, ds: str) -> pd.DataFrame:
    path = Layout(root).raw_items(ds) / "items.jsonl"
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])


def read_truth(root, ds: str) -> pd.DataFrame:
    return pd.read_parquet(simulate.truth_dir(root, ds) / "truth.parquet")


def auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = pd.Series(score).rank().to_numpy()
    pos, neg = label.sum(), len(label) - label.sum()
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def clicked(impressions: pd.DataFrame, clicks: pd.DataFrame) -> np.ndarray:
    keys = pd.MultiIndex.from_frame(clicks[["request_id", "item_id"]])
    return pd.MultiIndex.from_frame(impressions[["request_id", "item_id"]]).isin(keys)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two clean tiny days, generated once for the read-only tests."""
    root = tmp_path_factory.mktemp("world")
    return root, simulate.generate_days(root, START, 2, TINY)


def test_every_line_is_a_contract_event(world):
    root, stats = world
    assert [s["ds"] for s in stats] == [START, DAY1]
    for ds, s in zip([START, DAY1], stats, strict=True):
        lines = read_lines(root, ds)
        assert len(lines) == s["events"] == s["clean_events"]
        rows = [json.loads(line) for line in lines]  # every line parses
        assert all(list(r) == list(simulate.EVENT_FIELDS) for r in rows)
        df = pd.DataFrame(rows)
        assert df["event_id"].is_unique
        assert set(df["event_type"]) == set(simulate.EVENT_TYPES)
        assert df["event_time"].str.match(TIME_RE).all()
        assert df["event_time"].str[:10].eq(ds).all()  # inside the day
        assert df["user_id"].str.fullmatch(r"u\d{6}").all()
        assert df["item_id"].str.fullmatch(r"i\d{6}").all()
        for col in ("session_id", "request_id"):
            assert df[col].map(type).eq(str).all()
        assert df["query"].map(lambda q: q is None or isinstance(q, str)).all()
        assert df["query"].isna().any() and df["query"].notna().any()  # browse and search
        assert df["price"].map(type).eq(float).all() and (df["price"] > 0).all()
        # Position: an int 1..K where an item was shown (impression, click), else null.
        # Checked on the parsed rows: a DataFrame would turn ints with nulls into floats.
        k = TINY.impressions_per_request
        for r in rows:
            if r["event_type"] in ("impression", "click"):
                assert type(r["position"]) is int and 1 <= r["position"] <= k
            else:
                assert r["position"] is None
        assert s["impressions"] == TINY.requests_per_day * TINY.impressions_per_request
        assert (Layout(root).raw_events(ds) / "_SUCCESS").exists()
        assert (Layout(root).raw_items(ds) / "_SUCCESS").exists()


def test_funnel_events_follow_what_caused_them(world):
    root, _ = world
    df = read_events(root, START)
    imps = df[df.event_type == "impression"]
    # One search result page: K distinct items at positions 1..K, one user, one query.
    pages = imps.groupby("request_id")
    assert (pages["item_id"].nunique() == TINY.impressions_per_request).all()
    assert (pages["position"].apply(sorted).map(tuple) == tuple(range(1, 11))).all()
    assert (pages["user_id"].nunique() == 1).all() and (pages["event_time"].nunique() == 1).all()
    key = ["request_id", "item_id"]
    previous = imps
    for step in ("click", "add_to_cart", "purchase"):
        later = df[df.event_type == step]
        assert len(later) > 0
        joined = later.merge(previous, on=key, how="left", suffixes=("", "_cause"))
        assert len(joined) == len(later) and joined["event_id_cause"].notna().all()
        assert (joined["event_time"] > joined["event_time_cause"]).all()
        assert (joined["user_id"] == joined["user_id_cause"]).all()
        assert (joined["session_id"] == joined["session_id_cause"]).all()
        if step == "click":
            assert (joined["position"] == joined["position_cause"]).all()
        previous = later


def test_truth_lists_impressions_with_a_sane_click_model(world):
    root, _ = world
    df = read_events(root, START)
    imps = df[df.event_type == "impression"]
    truth = read_truth(root, START)
    assert list(truth.columns) == ["event_id", "p_click"]
    assert truth["event_id"].is_unique and set(truth["event_id"]) == set(imps["event_id"])
    assert truth["p_click"].between(0, 1, inclusive="neither").all()
    merged = imps.merge(truth, on="event_id")
    label = clicked(merged, df[df.event_type == "click"])
    assert 0.05 < label.mean() < 0.2
    assert abs(label.mean() - merged["p_click"].mean()) < 0.02  # clicks are drawn from p
    assert 0.72 < auc(merged["p_click"].to_numpy(), label) < 0.9
    # Position bias: the top slot is clicked more than the bottom one.
    by_position = pd.Series(label).groupby(merged["position"].to_numpy()).mean()
    assert by_position[1] > by_position[TINY.impressions_per_request]


def test_catalog_deltas_and_arrivals(world):
    root, stats = world
    day0, day1 = read_items(root, START), read_items(root, DAY1)
    assert list(day0.columns) == list(simulate.ITEM_FIELDS)
    assert len(day0) == TINY.n_items and day0["item_id"].is_unique
    assert (day0["launch_date"] <= START).all() and (day0["price"] > 0).all()
    assert day0["category"].nunique() == TINY.n_categories
    # Day 1: new items (new ids, launched today) and repriced existing items.
    new = day1[day1["launch_date"] == DAY1]
    assert len(new) == TINY.new_items_per_day == stats[1]["new_items"]
    assert not new["item_id"].isin(day0["item_id"]).any()
    repriced = day1[day1["launch_date"] < DAY1].merge(day0, on="item_id", suffixes=("", "_0"))
    assert len(repriced) == stats[1]["price_changes"] > 0
    assert (repriced["price"] != repriced["price_0"]).any()
    # New items are shown, and every new user is active on their first day.
    events = read_events(root, DAY1)
    assert events["item_id"].isin(new["item_id"]).any()
    new_users = {f"u{i:06d}" for i in range(TINY.n_users, TINY.n_users + TINY.new_users_per_day)}
    assert new_users <= set(events["user_id"])
    assert not set(read_events(root, START)["user_id"]) & new_users
    # Catalog prices are the prices the events carry.
    catalog = pd.concat([day0, day1]).drop_duplicates("item_id", keep="last")
    priced = events.merge(catalog, on="item_id", suffixes=("", "_catalog"))
    assert len(priced) == len(events)
    assert np.allclose(priced["price"], priced["price_catalog"])


def test_same_seed_same_bytes_and_day_n_alone_equals_the_sequence(tmp_path):
    simulate.generate_days(tmp_path / "a", START, 3, TINY)
    stats = simulate.generate_day(tmp_path / "b", START, 2, TINY)
    assert stats["seconds"] < 3  # tiny is meant for tests (about 0.1 s)
    ds = shift_ds(START, 2)

    def files(root):
        folders = [Layout(root).raw_events(ds), Layout(root).raw_items(ds)]
        folders.append(simulate.truth_dir(root, ds))
        return {p.relative_to(root): p.read_bytes() for f in folders for p in sorted(f.iterdir())}

    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert len(a) == 5 and a == b
    other = dataclasses.replace(TINY, seed=TINY.seed + 1)
    simulate.generate_day(tmp_path / "c", START, 2, other)
    assert read_lines(tmp_path / "a", ds) != read_lines(tmp_path / "c", ds)


def test_rerun_replaces_the_day_and_no_gzip(tmp_path):
    simulate.generate_day(tmp_path, START, 0, TINY)
    gz_lines = read_lines(tmp_path, START)
    simulate.generate_day(tmp_path, START, 0, TINY, compress=False)
    folder = Layout(tmp_path).raw_events(START)
    assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "part-00000.jsonl"]
    assert read_lines(tmp_path, START) == gz_lines
    assert not list(tmp_path.rglob("*.staging"))


def test_the_world_drifts():
    s0, s14 = simulate.world_state(TINY, 0), simulate.world_state(TINY, 14)
    assert np.abs(s14.trend - s0.trend).mean() > 0.2  # category trends moved
    assert s14.n_items == TINY.n_items + 14 * TINY.new_items_per_day
    assert s14.n_users == TINY.n_users + 14 * TINY.new_users_per_day
    # Click rates per category change between day 0 and day 14.
    rates = []
    for state in (s0, s14):
        events, _ = simulate.simulate_events(TINY, state, shift_ds(START, state.day))
        imps = events[events.event_type == "impression"].reset_index(drop=True)
        label = clicked(imps, events[events.event_type == "click"])
        idx = imps["item_id"].str[1:].astype(int).to_numpy()
        rates.append(pd.Series(label).groupby(state.item_cat[idx]).mean())
    assert (rates[1] - rates[0]).abs().max() > 0.05
    # A frozen oracle (day-0 truth) ranks day-14 impressions of known users and items worse
    # than today's truth: what a never-updated model suffers even on what it has seen.
    users = imps["user_id"].str[1:].astype(int).to_numpy()
    known = (users < s0.n_users) & (idx < s0.n_items)
    bias = simulate.position_bias(TINY, imps["position"].to_numpy(int)[known])
    fresh = simulate.click_logit(TINY, s14, users[known], idx[known]) + bias
    stale = simulate.click_logit(TINY, s0, users[known], idx[known]) + bias
    assert auc(fresh, label[known]) - auc(stale, label[known]) > 0.03
    assert known.mean() < 0.6  # and most of the traffic is with users or items it never saw


def test_dirty_delivery_has_every_kind_of_dirt(tmp_path):
    dirt = simulate.DirtConfig(0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05)
    stats = simulate.generate_day(tmp_path, START, 1, TINY, dirt)
    lines = read_lines(tmp_path, DAY1)
    assert len(lines) == stats["events"] > stats["clean_events"]
    parsed, broken = [], 0
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            broken += 1
    assert broken > 0.02 * len(lines)
    df = pd.DataFrame(parsed)
    assert df["event_id"].duplicated().any()
    assert df["user_id"].isna().any() and df["item_id"].isna().any()
    assert (df["price"] < 0).any()
    assert (~df["event_type"].isin(simulate.EVENT_TYPES)).any()
    days = df["event_time"].str[:10]
    assert (days < DAY1).any() and (days > DAY1).any()  # late and future events
    assert (days[days > DAY1] >= shift_ds(DAY1, 2)).all()  # future: beyond any clock skew
    assert df["event_time"].str.match(TIME_RE).all()
    # Truth: only impressions that arrived intact at least once, each once.
    truth = read_truth(tmp_path, DAY1)
    assert truth["event_id"].is_unique
    valid = df[
        (df["event_type"] == "impression")
        & df["user_id"].notna()
        & df["item_id"].notna()
        & (df["price"] > 0)
        & (df["event_time"].str[:10] <= DAY1)
    ]
    assert set(truth["event_id"]) == set(valid["event_id"])
    assert len(truth) < stats["impressions"]
    # The same seed spoils the same lines.
    again = simulate.generate_day(tmp_path / "again", START, 1, TINY, dirt)
    assert read_lines(tmp_path / "again", DAY1) == lines and again["events"] == stats["events"]


def test_cli_prints_one_line_per_day(tmp_path, capsys):
    argv = ["--data-root", str(tmp_path), "--start", START, "--days", "2", "--scale", "tiny"]
    assert simulate.main([*argv, "--seed", "3", "--dirty", "--no-gzip"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith(START) and out[1].startswith(DAY1)
    assert "impressions" in out[0] and "clicks" in out[0] and out[0].endswith(" s")
    assert (Layout(tmp_path).raw_events(DAY1) / "part-00000.jsonl").exists()
    with pytest.raises(SystemExit):
        simulate.main([*argv[:4], "--days", "0"])


def test_config_is_checked():
    with pytest.raises(ValueError, match="new_users_per_day"):
        simulate.WorldConfig(requests_per_day=10, new_users_per_day=20)
    with pytest.raises(ValueError, match="impressions_per_request"):
        simulate.WorldConfig(impressions_per_request=1)


# --- intra-day events and hourly deliveries ---------------------------------------------
EVENT_HOUR = 10
EVENT = dataclasses.replace(
    TINY, requests_per_day=1500, intraday=simulate.IntradayConfig(day=1, hour=EVENT_HOUR)
)


def read_hour_lines(root, ds: str, hour: int, kind: str = "events") -> list[str]:
    folder = Layout(root).raw_events_hour(ds, hour)
    if kind == "items":
        return (Layout(root).raw_items(ds) / folder.name / "items.jsonl").read_text().splitlines()
    return gzip.decompress((folder / "part-00000.jsonl.gz").read_bytes()).decode().splitlines()


def tree(root) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def query_brands(cfg: simulate.WorldConfig, query: pd.Series) -> np.ndarray:
    """The brand a query names (-1 for none): its first word, if that is a brand."""
    brands = {b: i for i, b in enumerate(np.char.lower(simulate.brand_names(cfg.n_brands)))}
    return query.map(lambda q: brands.get(q.split(" ")[0], -1) if q else -1).to_numpy()


@pytest.fixture(scope="module")
def event_world(tmp_path_factory):
    """Three days of a world with an intra-day event on day 1, delivered whole."""
    root = tmp_path_factory.mktemp("event")
    simulate.generate_days(root, START, 3, EVENT)
    return root


def test_the_default_world_keeps_its_bytes(tmp_path, event_world):
    # Digests of day 1 of the tiny world as written before intra-day events existed: every
    # figure measured on the simulator so far came from these bytes.
    simulate.generate_days(tmp_path, START, 2, TINY)
    events = gzip.decompress(
        (Layout(tmp_path).raw_events(DAY1) / "part-00000.jsonl.gz").read_bytes()
    )
    items = (Layout(tmp_path).raw_items(DAY1) / "items.jsonl").read_bytes()
    assert hashlib.sha256(events).hexdigest()[:16] == "223ea04d0bf2b49b"
    assert hashlib.sha256(items).hexdigest()[:16] == "124b2095d8399d44"
    # An event on day 1 leaves day 0 as it was and changes day 1.
    no_event = dataclasses.replace(EVENT, intraday=None)
    simulate.generate_days(tmp_path / "quiet", START, 2, no_event)
    for ds, same in ((START, True), (DAY1, False)):
        a = read_lines(tmp_path / "quiet", ds) == read_lines(event_world, ds)
        b = read_items(tmp_path / "quiet", ds).equals(read_items(event_world, ds))
        assert (a, b) == (same, same)


def test_trend_and_sale_raise_the_true_p_click_from_their_hour_on(event_world):
    df = read_events(event_world, DAY1)
    imps = df[df.event_type == "impression"].merge(read_truth(event_world, DAY1), on="event_id")
    label = clicked(imps, df[df.event_type == "click"])
    after = imps["event_time"].str.slice(11, 13).astype(int).to_numpy() >= EVENT_HOUR
    users = imps["user_id"].str[1:].astype(int).to_numpy()
    items = imps["item_id"].str[1:].astype(int).to_numpy()
    morning = simulate.world_state(EVENT, 1)
    later = simulate.state_at_hour(EVENT, morning, EVENT_HOUR)
    event = simulate.intraday_event(EVENT, morning.item_cat)
    assert len(event.sale) == EVENT.intraday.sale_items
    assert (morning.item_cat[event.sale] == event.category).all()
    # The truth is the click model of the world at the impression's time.
    bias = simulate.position_bias(EVENT, imps["position"].to_numpy(int))
    brand = query_brands(EVENT, imps["query"])
    stale = simulate.click_logit(EVENT, morning, users, items, brand) + bias
    fresh = simulate.click_logit(EVENT, later, users, items, brand) + bias
    p = imps["p_click"].to_numpy()
    assert np.allclose(p[~after], simulate._sigmoid(stale[~after]))
    assert np.allclose(p[after], simulate._sigmoid(fresh[after]))
    # Only the category, the sale and the shifted users' impressions changed, and the
    # category's and the sale's only up.
    trending, shifted = morning.item_cat[items] == event.category, np.isin(users, event.shifted)
    assert np.allclose(fresh[~trending & ~shifted], stale[~trending & ~shifted])
    assert not np.allclose(fresh[shifted], stale[shifted])
    on_sale, ev = np.isin(items, event.sale), EVENT.intraday
    assert np.allclose((fresh - stale)[trending & ~on_sale & ~shifted], ev.trend_boost)
    assert on_sale[after].sum() > 20
    lift = (fresh - stale)[on_sale & ~shifted]  # trend, sale and a lower price
    assert lift.min() > ev.trend_boost + ev.sale_boost
    # Clicks follow: the category is clicked far more after the hour than before.
    rate_before, rate_after = label[trending & ~after].mean(), label[trending & after].mean()
    assert rate_after > 2 * rate_before
    assert label[~trending & after].mean() < 1.3 * label[~trending & ~after].mean()
    # The news is worth learning: yesterday's oracle ranks the afternoon clearly worse.
    assert auc(fresh[after], label[after]) - auc(stale[after], label[after]) > 0.02
    # Sale items carry the sale price from the hour on, their usual price before.
    usual, sale = morning.item_price[items], later.item_price[items]
    assert np.allclose(imps["price"][on_sale & after], sale[on_sale & after])
    assert np.allclose(imps["price"][on_sale & ~after], usual[on_sale & ~after])
    assert (sale[on_sale] < usual[on_sale]).all()


def test_items_launched_at_the_hour_are_shown_and_announced_from_then_on(event_world, tmp_path):
    morning = simulate.world_state(EVENT, 1)
    event = simulate.intraday_event(EVENT, morning.item_cat)
    launched = simulate._ids("i", event.launched)
    assert len(launched) == round(EVENT.intraday.launch_share * EVENT.new_items_per_day) > 0
    assert (morning.item_launch[event.launched] == 1).all()
    df = read_events(event_world, DAY1)
    shown = df[df["item_id"].isin(launched)]
    assert (
        len(shown) > 0 and (shown["event_time"].str.slice(11, 13).astype(int) >= EVENT_HOUR).all()
    )
    # Whole day: announced with the day's other new items. By hour: at their hour, with
    # the sale prices; the day's other changes at midnight; nothing in between.
    assert set(launched) <= set(read_items(event_world, DAY1)["item_id"])
    simulate.generate_day(tmp_path, START, 1, EVENT, hourly=True)
    by_hour = {
        h: pd.DataFrame([json.loads(x) for x in read_hour_lines(tmp_path, DAY1, h, "items")])
        for h in range(24)
    }
    assert {h for h, rows in by_hour.items() if len(rows)} == {0, EVENT_HOUR}
    at_hour = set(by_hour[EVENT_HOUR]["item_id"])
    assert at_hour == set(launched) | set(simulate._ids("i", event.sale))
    assert not set(launched) & set(by_hour[0]["item_id"])
    whole = read_items(event_world, DAY1).set_index("item_id")["price"]
    assert set(whole.index) == at_hour | set(by_hour[0]["item_id"])
    # The whole-day delta is the catalog at the end of the day: sale prices.
    at_hour_price = by_hour[EVENT_HOUR].set_index("item_id")["price"]
    assert whole[at_hour_price.index].equals(at_hour_price)


def test_shifted_interests_stay_and_the_sale_ends_at_midnight(event_world):
    morning = simulate.world_state(EVENT, 1)
    event = simulate.intraday_event(EVENT, morning.item_cat)
    later = simulate.state_at_hour(EVENT, morning, EVENT_HOUR)
    assert simulate.state_at_hour(EVENT, morning, EVENT_HOUR - 1) is morning
    moved = np.flatnonzero(later.user_home != morning.user_home)
    assert len(event.shifted) > 0 and moved.tolist() == event.shifted.tolist()
    next_day = simulate.world_state(EVENT, 2)
    assert (next_day.user_home[: morning.n_users] == later.user_home).all()
    assert simulate.state_at_hour(EVENT, next_day, 23) is next_day  # a quiet day
    # The next day's delta announces the sale items again, at their usual price.
    day2 = read_items(event_world, shift_ds(START, 2)).set_index("item_id")["price"]
    sale_ids = simulate._ids("i", event.sale)
    assert set(sale_ids) <= set(day2.index)
    assert np.allclose(day2[sale_ids], next_day.item_price[event.sale])
    assert not np.allclose(day2[sale_ids], later.item_price[event.sale])


def test_hourly_delivery_holds_each_line_once_in_its_hour(tmp_path, event_world):
    stats = simulate.generate_day(tmp_path, START, 1, EVENT, hourly=True)
    day_dir = Layout(tmp_path).raw_events(DAY1)
    assert sorted(p.name for p in day_dir.iterdir()) == [
        "_SUCCESS",
        *(f"hour={h:02d}" for h in range(24)),
    ]
    hours = [read_hour_lines(tmp_path, DAY1, h) for h in range(24)]
    for h, lines in enumerate(hours):
        assert (Layout(tmp_path).raw_events_hour(DAY1, h) / "_SUCCESS").exists()
        assert all(json.loads(x)["event_time"][11:13] == f"{h:02d}" for x in lines)
    # In time order, the hours joined are the whole day's delivery, line for line.
    assert sum(hours, []) == read_lines(event_world, DAY1)
    assert stats["events"] == sum(map(len, hours)) and min(map(len, hours)) > 0
    assert tree(simulate.truth_dir(tmp_path, DAY1)) == tree(simulate.truth_dir(event_world, DAY1))


def test_hours_delivered_one_by_one_equal_the_hourly_day(tmp_path):
    dirt = simulate.DirtConfig(0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05)
    day = simulate.generate_day(tmp_path / "day", START, 1, EVENT, dirt, hourly=True)
    events = 0
    for hour in reversed(range(24)):
        stats = simulate.generate_hour(tmp_path / "hours", START, 1, hour, EVENT, dirt)
        events += stats["events"]
        assert stats["hour"] == hour and stats["ds"] == DAY1
        complete = (Layout(tmp_path / "hours").raw_events(DAY1) / "_SUCCESS").exists()
        assert complete == (hour == 0)
    assert tree(tmp_path / "hours") == tree(tmp_path / "day")
    assert events == day["events"]
    # Dirty lines go out in the hour their event was logged, their broken clocks included.
    simulate.generate_day(tmp_path / "whole", START, 1, EVENT, dirt)
    lines = [x for h in range(24) for x in read_hour_lines(tmp_path / "day", DAY1, h)]
    assert lines == read_lines(tmp_path / "whole", DAY1)
    assert any(x.startswith('{"event_id"') and DAY1 not in x for x in lines)


def test_cli_delivers_hours_with_an_event(tmp_path, capsys):
    argv = ["--data-root", str(tmp_path), "--start", START, "--days", "2", "--scale", "tiny"]
    assert simulate.main([*argv, "--hourly", "--event-day", "1", "--event-hour", "9"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert (Layout(tmp_path).raw_events_hour(DAY1, 23) / "part-00000.jsonl.gz").exists()
    items = {h: read_hour_lines(tmp_path, DAY1, h, "items") for h in range(24)}
    assert {h for h, rows in items.items() if rows} == {0, 9}
    with pytest.raises(SystemExit):
        simulate.main([*argv, "--event-day", "1", "--event-hour", "0"])


def test_intraday_config_and_hours_are_checked(tmp_path):
    with pytest.raises(ValueError, match="hour in 1..23"):
        simulate.IntradayConfig(hour=0)
    with pytest.raises(ValueError, match="day >= 1"):
        simulate.IntradayConfig(day=0)
    with pytest.raises(ValueError, match="sale_discount"):
        simulate.IntradayConfig(sale_discount=1.0)
    with pytest.raises(ValueError, match="category"):
        dataclasses.replace(TINY, intraday=simulate.IntradayConfig(category=TINY.n_categories))
    for bad in (24, -1, True, 1.5, "3"):
        with pytest.raises(ValueError, match="hour must be"):
            check_hour(bad)
    with pytest.raises(ValueError, match="hour must be"):
        simulate.generate_hour(tmp_path, START, 0, 24, TINY)
    assert not list(tmp_path.iterdir())  # refused before anything was written
