"""A simulated e-commerce shop that writes each day's raw delta in the data contract.

The default data source of the demo and the tests; the pipeline never knows its data came
from here. Run it with::

    python -m jobs.simulate --data-root var/data --start 2026-11-20 --days 3 --scale demo

Hidden ground truth: users and items have latent vectors; an impression is clicked with
probability ``sigmoid(bias + u.v + trend[category] + home-category affinity
- price sensitivity * log(price) + position bias)``. Every day the world drifts: category
trends take a random-walk step, user tastes move a little, some prices change, new items
launch and new users arrive (and are active on their first day). Search requests show
``impressions_per_request`` items, ranked by a noisy version of the true relevance, so
position and relevance are correlated as in a real shop; clicks lead to add-to-carts and
purchases. The true click probability of every impression goes to
``sim/truth/dt=<ds>/truth.parquet`` (outside ``raw/``), so the oracle AUC is known.

Deterministic by seed: day ``n`` alone is identical to day ``n`` generated in a sequence,
because the world state is replayed from day 0 (cheap arrays) with per-day random streams.
``DirtConfig`` makes a delivery dirty (duplicates, late and future times, malformed lines,
nulls, negative prices, unknown event types) for tests of the preprocessing rules.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.layout import Layout, shift_ds


@dataclass(frozen=True)
class WorldConfig:
    n_users: int = 2000
    n_items: int = 3000
    n_categories: int = 24
    n_brands: int = 80
    requests_per_day: int = 8000
    impressions_per_request: int = 10
    new_users_per_day: int = 100
    new_items_per_day: int = 100
    latent_dim: int = 8
    # Drift per day: random-walk step of category trends and of user tastes.
    trend_drift: float = 0.25
    taste_drift: float = 0.08
    price_change_rate: float = 0.05
    click_bias: float = -2.2
    seed: int = 7


SCALES = {
    "tiny": WorldConfig(
        n_users=300, n_items=400, n_categories=8, n_brands=20, requests_per_day=400,
        new_users_per_day=20, new_items_per_day=20,
    ),
    "demo": WorldConfig(),
    "bench": WorldConfig(
        n_users=100_000, n_items=50_000, n_categories=40, n_brands=400,
        requests_per_day=85_000, new_users_per_day=3000, new_items_per_day=1500,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class DirtConfig:
    duplicate_rate: float = 0.0
    late_rate: float = 0.0
    malformed_rate: float = 0.0
    null_rate: float = 0.0
    negative_price_rate: float = 0.0
    future_rate: float = 0.0
    unknown_type_rate: float = 0.0


DIRTY = DirtConfig(0.02, 0.01, 0.005, 0.005, 0.002, 0.002, 0.002)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class WorldState:
    """Everything hidden about the shop on one day."""

    day: int
    user_vec: np.ndarray
    user_home: np.ndarray
    user_price_sens: np.ndarray
    item_vec: np.ndarray
    item_cat: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_launch: np.ndarray
    item_quality: np.ndarray
    trend: np.ndarray
    price_changed: np.ndarray  # item indices whose price changed today

    @property
    def n_users(self) -> int:
        return len(self.user_vec)

    @property
    def n_items(self) -> int:
        return len(self.item_vec)


def _new_users(rng, cfg: WorldConfig, n: int):
    vec = rng.normal(0, 1 / np.sqrt(cfg.latent_dim), (n, cfg.latent_dim))
    home = rng.integers(0, cfg.n_categories, n)
    sens = rng.uniform(0.1, 0.5, n)
    return vec, home, sens


def _new_items(rng, cfg: WorldConfig, n: int, day: int):
    cat = rng.integers(0, cfg.n_categories, n)
    # Items of a category share a direction, so category is informative.
    centers = np.random.default_rng([cfg.seed, 99]).normal(0, 1, (cfg.n_categories, cfg.latent_dim))
    vec = 0.6 * centers[cat] + rng.normal(0, 0.8, (n, cfg.latent_dim))
    vec /= np.sqrt(cfg.latent_dim) / 1.6
    brand = rng.integers(0, cfg.n_brands, n)
    base_price = np.exp(2.5 + (cat % 5) * 0.4)
    price = np.round(base_price * np.exp(rng.normal(0, 0.5, n)), 2)
    # A popularity/quality main effect: some items sell whoever looks at them.
    quality = rng.normal(0, 0.8, n)
    return vec, cat, brand, price, np.full(n, day), quality


def world_state(cfg: WorldConfig, day: int) -> WorldState:
    """The hidden state on day ``day`` (0 = the first simulated day), replayed from day 0."""
    rng = np.random.default_rng([cfg.seed, 0, 0])
    uv, uh, us = _new_users(rng, cfg, cfg.n_users)
    iv, ic, ib, ip, il, iq = _new_items(rng, cfg, cfg.n_items, 0)
    trend = rng.normal(0, 0.5, cfg.n_categories)
    changed = np.arange(0)
    for d in range(1, day + 1):
        rng = np.random.default_rng([cfg.seed, 0, d])
        trend = 0.9 * trend + rng.normal(0, cfg.trend_drift, cfg.n_categories)
        uv = uv + rng.normal(0, cfg.taste_drift / np.sqrt(cfg.latent_dim), uv.shape)
        changed = np.flatnonzero(rng.random(len(ip)) < cfg.price_change_rate)
        ip = ip.copy()
        ip[changed] = np.round(ip[changed] * np.exp(rng.normal(0, 0.2, len(changed))), 2)
        nuv, nuh, nus = _new_users(rng, cfg, cfg.new_users_per_day)
        uv, uh, us = np.vstack([uv, nuv]), np.concatenate([uh, nuh]), np.concatenate([us, nus])
        niv, nic, nib, nip, nil, niq = _new_items(rng, cfg, cfg.new_items_per_day, d)
        iv, ic, ib = np.vstack([iv, niv]), np.concatenate([ic, nic]), np.concatenate([ib, nib])
        ip, il = np.concatenate([ip, nip]), np.concatenate([il, nil])
        iq = np.concatenate([iq, niq])
    return WorldState(day, uv, uh, us, iv, ic, ib, ip, il, iq, trend, changed)


def _ids(prefix: str, idx: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(idx.astype(str), 6))


def simulate_events(cfg: WorldConfig, state: WorldState, ds: str):
    """The day's clean events (DataFrame) and the truth of its impressions (DataFrame)."""
    rng = np.random.default_rng([cfg.seed, 1, state.day])
    R, K = cfg.requests_per_day, cfg.impressions_per_request
    # Users: every user who arrived today is active, the rest drawn at random.
    new_users = np.arange(
        state.n_users - (cfg.new_users_per_day if state.day else 0), state.n_users
    )
    users = np.concatenate([new_users, rng.integers(0, state.n_users, R - len(new_users))])
    rng.shuffle(users)
    # Query category: mostly the user's home category, else a trending one.
    trend_p = np.exp(state.trend) / np.exp(state.trend).sum()
    cats = np.where(
        rng.random(R) < 0.7, state.user_home[users], rng.choice(cfg.n_categories, R, p=trend_p)
    )
    # Candidates: K distinct items of the query's category (a window in a shuffled order),
    # the last two slots from anywhere in the catalog.
    order = np.lexsort((rng.random(state.n_items), state.item_cat))
    counts = np.bincount(state.item_cat, minlength=cfg.n_categories)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    size = np.maximum(counts[cats], 1)
    offset = rng.integers(0, 1 << 30, R) % size
    window = (offset[:, None] + np.arange(K)[None, :]) % size[:, None]
    items = order[starts[cats][:, None] + window]
    items[:, -2:] = rng.integers(0, state.n_items, (R, 2))
    # True click logit of each candidate.
    u = users[:, None]
    logit = (
        cfg.click_bias
        + state.item_quality[items]
        + np.einsum("rd,rkd->rk", state.user_vec[users], state.item_vec[items])
        + state.trend[state.item_cat[items]]
        + 0.8 * (state.user_home[u] == state.item_cat[items])
        - state.user_price_sens[u] * np.log(state.item_price[items]) / 2
    )
    # Shown in the order of a noisy production ranker: position correlates with relevance.
    shown = np.argsort(-(logit + rng.normal(0, 1.0, logit.shape)), axis=1)
    items = np.take_along_axis(items, shown, axis=1)
    logit = np.take_along_axis(logit, shown, axis=1)
    position = np.tile(np.arange(1, K + 1), (R, 1))
    p_click = _sigmoid(logit - 0.3 * np.log(position))
    clicked = rng.random((R, K)) < p_click
    carted = clicked & (rng.random((R, K)) < 0.3)
    bought = carted & (rng.random((R, K)) < 0.5)

    day_start = np.datetime64(ds, "ms")
    t_req = day_start + rng.integers(0, 86_000_000, R).astype("timedelta64[ms]")
    req_id = np.char.add(f"r{ds.replace('-', '')}-", np.arange(R).astype(str))
    query_words = np.char.add(np.char.add("cat", cats.astype(str)), " ")
    brand_words = np.char.add("brand", state.item_brand[items[:, 0]].astype(str))
    query = np.char.add(query_words, brand_words).astype(object)
    query[rng.random(R) < 0.15] = None  # browsing, no search text

    def block(mask, etype, delay_ms):
        r, k = np.nonzero(mask)
        n = len(r)
        delay = rng.integers(delay_ms[0], delay_ms[1], n).astype("timedelta64[ms]")
        end = day_start + np.timedelta64(86_399_999, "ms")
        return pd.DataFrame(
            {
                "event_time": np.minimum(t_req[r] + delay, end),
                "event_type": etype,
                "user_idx": users[r],
                "request_id": req_id[r],
                "query": query[r],
                "item_idx": items[r, k],
                "position": np.where(etype in ("impression", "click"), position[r, k], -1),
                "p_click": p_click[r, k],
            }
        )

    all_true = np.ones((R, K), dtype=bool)
    df = pd.concat(
        [
            block(all_true, "impression", (0, 1)),
            block(clicked, "click", (2_000, 60_000)),
            block(carted, "add_to_cart", (60_000, 600_000)),
            block(bought, "purchase", (600_000, 3_600_000)),
        ],
        ignore_index=True,
    )
    df = df.sort_values("event_time", kind="stable").reset_index(drop=True)
    df.insert(
        0, "event_id", np.char.add(f"e{ds.replace('-', '')}-", np.arange(len(df)).astype(str))
    )
    df["user_id"] = _ids("u", df.pop("user_idx").to_numpy())
    df["session_id"] = np.char.add(df["user_id"].to_numpy().astype(str), f"-{ds}")
    item_idx = df.pop("item_idx").to_numpy()
    df["item_id"] = _ids("i", item_idx)
    df["price"] = state.item_price[item_idx]
    df["position"] = df["position"].astype("Int64").where(df["position"] > 0)
    df["event_time"] = df["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    truth = df.loc[df["event_type"] == "impression", ["event_id", "p_click"]].reset_index(drop=True)
    cols = ["event_id", "event_time", "event_type", "user_id", "session_id", "request_id",
            "query", "item_id", "position", "price"]  # fmt: skip
    return df[cols], truth


def catalog_delta(state: WorldState) -> pd.DataFrame:
    """Day 0: the whole catalog. Later days: new items and items whose price changed."""
    if state.day == 0:
        idx = np.arange(state.n_items)
    else:
        idx = np.union1d(np.flatnonzero(state.item_launch == state.day), state.price_changed)
    return pd.DataFrame(
        {
            "item_id": _ids("i", idx),
            "title": np.char.add("item ", idx.astype(str)),
            "category": np.char.add("cat", state.item_cat[idx].astype(str)),
            "brand": np.char.add("brand", state.item_brand[idx].astype(str)),
            "price": state.item_price[idx],
            "launch_date": state.item_launch[idx],
        }
    )


def make_dirty(df: pd.DataFrame, ds: str, dirt: DirtConfig, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """Apply dirt to the events; returns the events and a mask of lines to truncate."""
    n = len(df)
    df = df.copy()
    df["position"] = df["position"].astype(object)

    def pick(rate):
        return rng.random(n) < rate

    day = pd.Timestamp(ds)
    late = pick(dirt.late_rate)
    shift = pd.to_timedelta(rng.integers(1, 3, late.sum()), unit="D")
    times = pd.to_datetime(df.loc[late, "event_time"])
    df.loc[late, "event_time"] = (times - shift).dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    future = pick(dirt.future_rate)
    df.loc[future, "event_time"] = (day + pd.Timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    df.loc[pick(dirt.null_rate), "user_id"] = None
    df.loc[pick(dirt.null_rate), "item_id"] = None
    df.loc[pick(dirt.negative_price_rate), "price"] = -9.99
    df.loc[pick(dirt.unknown_type_rate), "event_type"] = "hover"
    dupes = df[pick(dirt.duplicate_rate)]
    df = pd.concat([df, dupes], ignore_index=True)
    return df, rng.random(len(df)) < dirt.malformed_rate


def _write_lines(df: pd.DataFrame, path: Path, compress: bool, truncate=None) -> Path:
    text = df.to_json(orient="records", lines=True, date_format="iso")
    if truncate is not None and truncate.any():
        lines = text.splitlines()
        for i in np.flatnonzero(truncate[: len(lines)]):
            lines[i] = lines[i][: len(lines[i]) // 2]
        text = "\n".join(lines) + "\n"
    data = text.encode()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, compresslevel=1))
    else:
        path.write_bytes(data)
    return path


def generate_day(
    data_root,
    start_ds: str,
    day_index: int,
    config: WorldConfig = SCALES["demo"],
    dirt: DirtConfig = DirtConfig(),
    compress: bool = True,
) -> dict:
    """Write day ``day_index`` (0 = ``start_ds``): raw events, catalog delta and truth."""
    started = time.perf_counter()
    ds = shift_ds(start_ds, day_index)
    layout = Layout(Path(data_root))
    state = world_state(config, day_index)
    events, truth = simulate_events(config, state, ds)
    n_clean = len(events)
    truncate = None
    if dirt != DirtConfig():
        rng = np.random.default_rng([config.seed, 2, day_index])
        events, truncate = make_dirty(events, ds, dirt, rng)
    items = catalog_delta(state)
    items["launch_date"] = [shift_ds(start_ds, int(d)) for d in items["launch_date"]]

    ev_dir, it_dir = layout.raw_events(ds), layout.raw_items(ds)
    truth_dir = layout.root / "sim" / "truth" / f"dt={ds}"
    for d in (ev_dir, it_dir, truth_dir):
        d.mkdir(parents=True, exist_ok=True)
    _write_lines(events, ev_dir / "part-00000.jsonl", compress, truncate)
    _write_lines(items, it_dir / "items.jsonl", False)
    truth.to_parquet(truth_dir / "truth.parquet", index=False)
    for d in (ev_dir, it_dir):
        (d / "_SUCCESS").touch()
    types = events["event_type"].value_counts()
    return {
        "ds": ds,
        "events": int(len(events)),
        "clean_events": n_clean,
        "impressions": int(types.get("impression", 0)),
        "clicks": int(types.get("click", 0)),
        "purchases": int(types.get("purchase", 0)),
        "catalog_changes": int(len(items)),
        "users": state.n_users,
        "items": state.n_items,
        "seconds": round(time.perf_counter() - started, 2),
    }


def generate_days(
    data_root,
    start_ds: str,
    days: int,
    config: WorldConfig = SCALES["demo"],
    dirt: DirtConfig = DirtConfig(),
    compress: bool = True,
    first_day: int = 0,
) -> list[dict]:
    return [
        generate_day(data_root, start_ds, i, config, dirt, compress)
        for i in range(first_day, first_day + days)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="var/data")
    parser.add_argument("--start", default="2026-11-20", help="date of day 0")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--first-day", type=int, default=0, help="index of the first day")
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dirty", action="store_true", help="add duplicates, nulls, bad lines")
    parser.add_argument("--no-gzip", action="store_true")
    args = parser.parse_args(argv)
    config = dataclasses.replace(SCALES[args.scale], seed=args.seed)
    dirt = DIRTY if args.dirty else DirtConfig()
    for i in range(args.first_day, args.first_day + args.days):
        print(generate_day(args.data_root, args.start, i, config, dirt, not args.no_gzip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
