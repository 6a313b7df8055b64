"""A simulated e-commerce shop that writes each day's raw delta in the data contract.

The default data source of the demo, the benchmarks and the tests; the pipeline never knows
its data came from here. Run it with::

    python -m ops.simulate --data-root var/data --start 2026-11-20 --days 3 --scale demo \
        [--seed 7] [--dirty] [--no-gzip] [--first-day N] [--hourly] [--event-day N]

or from Python with :func:`generate_days` / :func:`generate_day` / :func:`generate_hour`.
Per logical date ``ds`` it writes, under the data root (paths from :class:`core.layout.Layout`):

    raw/events/dt=<ds>/part-00000.jsonl.gz   the day's events (``.jsonl`` with compress=False)
    raw/items/dt=<ds>/items.jsonl            catalog changes: the full catalog on day 0, then
                                             new items and items whose price changed
    raw/*/dt=<ds>/_SUCCESS                   delivery-complete marker, written last
    sim/truth/dt=<ds>/truth.parquet          event_id, p_click of every impression that was
                                             delivered intact (kept outside raw/)

or, delivered hour by hour (``hourly=True``, ``--hourly``, or one hour at a time with
:func:`generate_hour`: the same bytes), instead of the two day-level files:

    raw/events/dt=<ds>/hour=<HH>/part-00000.jsonl.gz   the lines logged in UTC hour HH
    raw/items/dt=<ds>/hour=<HH>/items.jsonl  the catalog changes that take effect in hour HH:
                                             the midnight ones in 00, launches and sale prices
                                             at the intra-day event's hour, else empty
    raw/*/dt=<ds>/hour=<HH>/_SUCCESS         the hour is complete, written last
    raw/*/dt=<ds>/_SUCCESS                   all 24 hours are in

Hidden ground truth: users and items have latent vectors; an impression is clicked with
probability ``sigmoid(bias + item quality + u.v + trend[category] + home-category affinity
+ queried-brand match - price sensitivity * log(price) / 2 - position_decay * log(position))``.
A request is a user's search (mostly in their home category, otherwise a trending one; some
are browse requests without text): candidates come mostly from the searched category and are
shown in the order of a noisy version of the true relevance, so position and relevance are
correlated as in a real shop. Clicks lead to add-to-carts and purchases.

Every day the world drifts: category trends take a random-walk step, user tastes move a
little, some prices change, new items launch and new users arrive (active on their first
day). A model that is never updated loses several AUC points within two weeks.
Requests follow an hourly traffic curve. :class:`IntradayConfig` (off by default) adds
events inside one day, from a given hour to midnight: a category trends and a few of its
items go on flash sale (click-logit boosts, price cut), some of the day's new items launch
only then, and some users' interests move for good. The truth holds each impression's
p_click at its time.

Deterministic by seed: the same seed and day give byte-identical files, and day ``n`` alone
equals day ``n`` generated in a sequence, because the world state is replayed from day 0
(cheap arrays) with one random stream per (seed, purpose, day).
:class:`DirtConfig` makes a delivery dirty (duplicates, late and future times, malformed
lines, nulls, negative prices, unknown event types) for the preprocessing rules to catch.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import EVENT_NAMES, EVENT_TYPES, ITEM_NAMES
from core.layout import Layout, check_hour, publish_dir, shift_ds, staging_dir

EVENT_FIELDS, ITEM_FIELDS = EVENT_NAMES, ITEM_NAMES  # the contract, by name

DAY_MS = 86_400_000
SESSION_GAP_MS = 30 * 60 * 1000  # a new session after 30 minutes without a request

# Share of the day's requests per UTC hour: quiet nights, a lunch bump, an evening peak.
HOURLY_TRAFFIC = np.array(
    [2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 7, 6, 5, 5, 5, 6, 8, 9, 9, 8, 6, 4], dtype=float
)

CATEGORY_NAMES = (
    "shoes", "dresses", "jeans", "jackets", "watches", "headphones", "laptops", "phones",
    "cameras", "tablets", "sofas", "lamps", "rugs", "mattresses", "cookware", "coffee makers",
    "blenders", "vacuums", "toys", "board games", "books", "puzzles", "bikes", "tents",
    "yoga mats", "dumbbells", "skincare", "perfume", "shampoo", "vitamins", "dog food",
    "cat litter", "garden tools", "drills", "paint", "tires", "car seats", "strollers",
    "diapers", "backpacks",
)  # fmt: skip
_SYLLABLES = ("ka", "lo", "mi", "ra", "te", "no", "vi", "su", "po", "de", "ga", "zu", "fe")


@dataclass(frozen=True)
class IntradayConfig:
    """Events inside one day: from ``hour`` (UTC) of day index ``day`` to midnight, a
    category trends and a few of its items are on flash sale, part of the day's new items
    launch, and some users' interests move. Every other day is quiet."""

    day: int = 1  # >= 1: day 0 delivers the whole catalog at midnight
    hour: int = 12  # 1..23
    category: int | None = None  # the trending category; None: drawn from the seed
    trend_boost: float = 2.0  # click-logit jump of the category (and of its share of searches)
    sale_items: int = 10  # items of the category on flash sale...
    sale_boost: float = 1.0  # ...with this extra click-logit boost...
    sale_discount: float = 0.3  # ...and this price cut (the usual price is back at midnight)
    launch_share: float = 0.5  # share of the day's new items launched at ``hour``, not 00:00
    shift_share: float = 0.05  # share of users whose interests move at ``hour``, for good

    def __post_init__(self) -> None:
        if self.day < 1 or not 1 <= self.hour <= 23:
            raise ValueError("IntradayConfig needs day >= 1 and hour in 1..23")
        if self.sale_items < 0 or not 0 <= self.sale_discount < 1:
            raise ValueError("IntradayConfig needs sale_items >= 0 and sale_discount in [0, 1)")
        if not (0 <= self.launch_share <= 1 and 0 <= self.shift_share <= 1):
            raise ValueError("IntradayConfig shares must be in [0, 1]")


@dataclass(frozen=True)
class WorldConfig:
    """Size and dynamics of the simulated shop; ``SCALES`` holds the named presets."""

    n_users: int = 2000
    n_items: int = 3000
    n_categories: int = 24
    n_brands: int = 80
    requests_per_day: int = 8000
    impressions_per_request: int = 10
    new_users_per_day: int = 100
    new_items_per_day: int = 100
    latent_dim: int = 8
    # Drift per day: random-walk step of category trends, of user tastes, share of repriced
    # items. Together with the arrivals they make a frozen model decay within ~2 weeks.
    trend_drift: float = 0.25
    taste_drift: float = 0.08
    price_change_rate: float = 0.05
    # Click model: global bias (sets the click rate), bonus for the user's home category and
    # for the queried brand, decay of attention down the page.
    click_bias: float = -2.2
    home_affinity: float = 0.8
    brand_affinity: float = 0.5
    position_decay: float = 0.3
    cart_rate: float = 0.3  # P(add_to_cart | click)
    purchase_rate: float = 0.5  # P(purchase | add_to_cart)
    browse_rate: float = 0.15  # requests without search text
    seed: int = 7
    intraday: IntradayConfig | None = None  # None: no day has intra-day events

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "n_brands", "requests_per_day"):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldConfig.{name} must be positive")
        if not 3 <= self.impressions_per_request <= 100:
            raise ValueError("WorldConfig.impressions_per_request must be in 3..100")
        if self.new_users_per_day > self.requests_per_day:
            # Every new user is active on their first day, so each needs a request.
            raise ValueError("WorldConfig.new_users_per_day exceeds requests_per_day")
        category = self.intraday.category if self.intraday else None
        if category is not None and not 0 <= category < self.n_categories:
            raise ValueError("IntradayConfig.category must be a category of the world")


# The demo world is denser than the shop it imitates (2000 users, 3000 items) so that a
# small ranker sees each user and item often enough in a few days to learn them.
SCALES: dict[str, WorldConfig] = {
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
    """Per-line rates of delivery dirt; all zero (the default) is a clean delivery."""

    duplicate_rate: float = 0.0  # the same line twice (a logger retry), same event_id
    late_rate: float = 0.0  # event_time 1-2 days before the day: a late event
    malformed_rate: float = 0.0  # line cut in half, not valid JSON
    null_rate: float = 0.0  # user_id null (and, independently, item_id null)
    negative_price_rate: float = 0.0
    future_rate: float = 0.0  # event_time 1-3 days after the end of the day: a broken clock
    unknown_type_rate: float = 0.0  # event_type outside the contract, e.g. "hover"

    @property
    def is_clean(self) -> bool:
        return self == DirtConfig()


# A little of everything, as the demo delivers it.
DIRTY = DirtConfig(0.02, 0.01, 0.005, 0.005, 0.002, 0.002, 0.002)
UNKNOWN_TYPES = np.array(["hover", "scroll", "wishlist"])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class WorldState:
    """Everything hidden about the shop on one day; user/item index = the number in its id."""

    day: int
    user_vec: np.ndarray
    user_home: np.ndarray  # home category of each user
    user_price_sens: np.ndarray
    item_vec: np.ndarray
    item_cat: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_launch: np.ndarray  # day index of launch (negative: before the simulation)
    item_quality: np.ndarray
    trend: np.ndarray  # popularity of each category today
    price_changed: np.ndarray  # item indices whose price changed today
    new_users: int  # the last ``new_users`` users arrived today
    new_items: int
    # Items launched later today (at the intra-day event's hour): not yet shown or sold.
    pending: np.ndarray = dataclasses.field(default_factory=lambda: np.arange(0))

    @property
    def n_users(self) -> int:
        return len(self.user_vec)

    @property
    def n_items(self) -> int:
        return len(self.item_vec)


def _new_users(
    rng: np.random.Generator, cfg: WorldConfig, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vec = rng.normal(0, 1 / np.sqrt(cfg.latent_dim), (n, cfg.latent_dim))
    home = rng.integers(0, cfg.n_categories, n)
    sens = rng.uniform(0.1, 0.5, n)
    return vec, home, sens


def _new_items(
    rng: np.random.Generator, cfg: WorldConfig, n: int, launch: np.ndarray
) -> tuple[np.ndarray, ...]:
    cat = rng.integers(0, cfg.n_categories, n)
    # Items of a category share a direction, so the category is informative, and a price
    # level (about 7 to 150). Both come from their own stream: the same for every day.
    fixed = np.random.default_rng([cfg.seed, 99])
    centers = fixed.normal(0, 1, (cfg.n_categories, cfg.latent_dim))
    log_price_level = fixed.uniform(2.0, 5.0, cfg.n_categories)
    vec = 0.6 * centers[cat] + rng.normal(0, 0.8, (n, cfg.latent_dim))
    vec /= np.sqrt(cfg.latent_dim) / 1.6
    brand = rng.integers(0, cfg.n_brands, n)
    price = np.round(np.exp(log_price_level[cat] + rng.normal(0, 0.5, n)), 2)
    # A popularity/quality main effect: some items sell whoever looks at them.
    quality = rng.normal(0, 0.8, n)
    return vec, cat, brand, price, launch, quality


@dataclass(frozen=True, eq=False)
class IntradayEvent:
    """What an :class:`IntradayConfig` resolves to in a world (user and item indices)."""

    day: int
    hour: int
    category: int  # the trending category
    sale: np.ndarray  # items on flash sale
    launched: np.ndarray  # items launched at the hour
    shifted: np.ndarray  # users whose interests move at the hour
    home_step: np.ndarray  # their home category moves this many categories on
    taste: np.ndarray  # and their latent vector half-way to this one


def intraday_event(cfg: WorldConfig, item_cat: np.ndarray) -> IntradayEvent | None:
    """The world's intra-day event (None without one); ``item_cat`` of its day or later."""
    ev = cfg.intraday
    if ev is None:
        return None
    rng = np.random.default_rng([cfg.seed, 3, ev.day])
    n_users = cfg.n_users + ev.day * cfg.new_users_per_day
    n_items = cfg.n_items + ev.day * cfg.new_items_per_day
    n_launched = round(ev.launch_share * cfg.new_items_per_day)
    drawn = int(rng.integers(0, cfg.n_categories))
    category = drawn if ev.category is None else ev.category
    shifted = np.sort(rng.choice(n_users, round(ev.shift_share * n_users), replace=False))
    home_step = rng.integers(1, max(cfg.n_categories, 2), len(shifted))
    taste = rng.normal(0, 1 / np.sqrt(cfg.latent_dim), (len(shifted), cfg.latent_dim))
    # The sale is on items already in the shop this morning.
    on_shelf = np.flatnonzero(item_cat[: n_items - n_launched] == category)
    sale = np.sort(rng.permutation(on_shelf)[: ev.sale_items])
    launched = np.arange(n_items - n_launched, n_items)
    return IntradayEvent(ev.day, ev.hour, category, sale, launched, shifted, home_step, taste)


def _shift_interests(
    cfg: WorldConfig, event: IntradayEvent, user_vec: np.ndarray, user_home: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    user_vec, user_home, who = user_vec.copy(), user_home.copy(), event.shifted
    user_home[who] = (user_home[who] + event.home_step) % cfg.n_categories
    user_vec[who] = np.sqrt(0.5) * (user_vec[who] + event.taste)  # same spread as before
    return user_vec, user_home


def state_at_hour(cfg: WorldConfig, state: WorldState, hour: int) -> WorldState:
    """The hidden state at ``hour`` (UTC) of ``state``'s day, ``state`` being the start of the
    day (:func:`world_state`): the day's intra-day event applied from its hour on."""
    ev = cfg.intraday
    if ev is None or ev.day != state.day or check_hour(hour) < ev.hour:
        return state
    event = intraday_event(cfg, state.item_cat)
    user_vec, user_home = _shift_interests(cfg, event, state.user_vec, state.user_home)
    price, quality = state.item_price.copy(), state.item_quality.copy()
    price[event.sale] = np.maximum(np.round(price[event.sale] * (1 - ev.sale_discount), 2), 0.01)
    quality[event.sale] += ev.sale_boost
    trend = state.trend.copy()
    trend[event.category] += ev.trend_boost
    return dataclasses.replace(
        state,
        user_vec=user_vec,
        user_home=user_home,
        item_price=price,
        item_quality=quality,
        trend=trend,
        pending=np.arange(0),
    )


def world_state(cfg: WorldConfig, day: int) -> WorldState:
    """The hidden state on day ``day`` (0 = the first simulated day), replayed from day 0.

    Replaying is cheap (arrays of users and items, no events), and it is what makes a day
    generated alone identical to the same day generated in a sequence.
    """
    if day < 0:
        raise ValueError("day index must be >= 0")
    rng = np.random.default_rng([cfg.seed, 0, 0])
    uv, uh, us = _new_users(rng, cfg, cfg.n_users)
    # The starting catalog was launched over the year before the simulation starts.
    launch0 = rng.integers(-365, 1, cfg.n_items)
    iv, ic, ib, ip, il, iq = _new_items(rng, cfg, cfg.n_items, launch0)
    trend = rng.normal(0, 0.5, cfg.n_categories)
    changed = np.arange(0)
    ev = cfg.intraday
    for d in range(1, day + 1):
        if ev is not None and d == ev.day + 1:
            # Interests that moved during the event day stay moved; the trend and sale end.
            event = intraday_event(cfg, ic)
            uv, uh = _shift_interests(cfg, event, uv, uh)
        rng = np.random.default_rng([cfg.seed, 0, d])
        # Mean-reverting walk: trends move every day but stay in a plausible range.
        trend = 0.9 * trend + rng.normal(0, cfg.trend_drift, cfg.n_categories)
        uv = uv + rng.normal(0, cfg.taste_drift / np.sqrt(cfg.latent_dim), uv.shape)
        changed = np.flatnonzero(rng.random(len(ip)) < cfg.price_change_rate)
        ip = ip.copy()
        ip[changed] = np.round(ip[changed] * np.exp(rng.normal(0, 0.2, len(changed))), 2)
        ip[changed] = np.maximum(ip[changed], 0.5)
        nuv, nuh, nus = _new_users(rng, cfg, cfg.new_users_per_day)
        uv, uh, us = np.vstack([uv, nuv]), np.concatenate([uh, nuh]), np.concatenate([us, nus])
        launch = np.full(cfg.new_items_per_day, d)
        niv, nic, nib, nip, nil, niq = _new_items(rng, cfg, cfg.new_items_per_day, launch)
        iv, ic, ib = np.vstack([iv, niv]), np.concatenate([ic, nic]), np.concatenate([ib, nib])
        ip, il = np.concatenate([ip, nip]), np.concatenate([il, nil])
        iq = np.concatenate([iq, niq])
    pending = np.arange(0)
    if ev is not None and day == ev.day:
        pending = intraday_event(cfg, ic).launched
    return WorldState(
        day=day,
        user_vec=uv,
        user_home=uh,
        user_price_sens=us,
        item_vec=iv,
        item_cat=ic,
        item_brand=ib,
        item_price=ip,
        item_launch=il,
        item_quality=iq,
        trend=trend,
        price_changed=changed,
        new_users=cfg.new_users_per_day if day else cfg.n_users,
        new_items=cfg.new_items_per_day if day else cfg.n_items,
        pending=pending,
    )


def click_logit(
    cfg: WorldConfig,
    state: WorldState,
    users: np.ndarray,
    items: np.ndarray,
    query_brand: np.ndarray | None = None,
) -> np.ndarray:
    """True click logit of showing ``items`` to ``users``, before the position bias.

    ``users`` has the shape of ``items`` or one dimension less (one user per row of items);
    ``query_brand`` likewise, with -1 where the query names no brand.
    """
    users, items = np.asarray(users), np.asarray(items)
    if users.ndim + 1 == items.ndim:
        users = users[..., None]
    users = np.broadcast_to(users, items.shape)
    cat = state.item_cat[items]
    logit = (
        cfg.click_bias
        + state.item_quality[items]
        + np.einsum("...d,...d->...", state.user_vec[users], state.item_vec[items])
        + state.trend[cat]
        + cfg.home_affinity * (state.user_home[users] == cat)
        - state.user_price_sens[users] * np.log(state.item_price[items]) / 2
    )
    if query_brand is not None:
        query_brand = np.asarray(query_brand)
        if query_brand.ndim + 1 == items.ndim:
            query_brand = query_brand[..., None]
        logit = logit + cfg.brand_affinity * (state.item_brand[items] == query_brand)
    return logit


def position_bias(cfg: WorldConfig, position: np.ndarray) -> np.ndarray:
    """Logit shift of being shown at ``position`` (1 = top): attention fades down the page."""
    return -cfg.position_decay * np.log(position)


def category_names(n: int) -> np.ndarray:
    names = list(CATEGORY_NAMES[:n]) + [f"category {k}" for k in range(len(CATEGORY_NAMES), n)]
    return np.array(names)


def brand_names(n: int) -> np.ndarray:
    """Pronounceable, distinct brand names (Kaka, Loka, ...): brand k in base-13 syllables."""
    s, names = len(_SYLLABLES), []
    for k in range(n):
        digits, rest = [k % s], k // s
        while rest or len(digits) < 2:
            digits.append(rest % s)
            rest //= s
        names.append("".join(_SYLLABLES[d] for d in digits).capitalize())
    return np.array(names)


def _ids(prefix: str, idx: np.ndarray, width: int = 6) -> np.ndarray:
    if np.size(idx) == 0:  # numpy's zfill refuses an empty array
        return np.array([], dtype=str)
    return np.char.add(prefix, np.char.zfill(np.asarray(idx).astype(str), width))


def _times(day_start: np.datetime64, offset_ms: np.ndarray) -> np.ndarray:
    """ISO-8601 UTC strings with milliseconds, e.g. 2026-11-20T13:45:12.123Z."""
    stamps = day_start + offset_ms.astype("timedelta64[ms]")
    return np.char.add(np.datetime_as_string(stamps, unit="ms"), "Z")


def _sessions(users: np.ndarray, t_ms: np.ndarray, ds: str) -> np.ndarray:
    """Session id of each request: a user's requests split at gaps of 30 minutes."""
    order = np.lexsort((t_ms, users))
    u, t = users[order], t_ms[order]
    new = np.ones(len(u), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > SESSION_GAP_MS)
    number = np.empty(len(u), dtype=np.int64)
    number[order] = np.cumsum(new) - 1
    return _ids(f"s{ds.replace('-', '')}-", number, 7)


def _categories(rng: np.random.Generator, state: WorldState, users: np.ndarray) -> np.ndarray:
    """What each request searches: mostly the user's home category, otherwise a trending one."""
    n = len(users)
    trend_p = np.exp(state.trend) / np.exp(state.trend).sum()
    return np.where(
        rng.random(n) < 0.7, state.user_home[users], rng.choice(len(state.trend), n, p=trend_p)
    )


def _candidates(
    rng: np.random.Generator, state: WorldState, cats: np.ndarray, k: int
) -> np.ndarray:
    """``k`` items per request among the launched ones: ``k - 2`` distinct items of the
    category (a window in a shuffled order of the category's items) and two from other
    categories (the next items after the category's block in that order), so no item is
    shown twice on a page."""
    shop = np.setdiff1d(np.arange(state.n_items), state.pending)
    order = shop[np.lexsort((rng.random(len(shop)), state.item_cat[shop]))]
    counts = np.bincount(state.item_cat[shop], minlength=len(state.trend))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    size = np.maximum(counts[cats], 1)[:, None]
    n_req = len(cats)
    window = (rng.integers(0, 1 << 30, n_req)[:, None] % size + np.arange(k)) % size
    items = order[np.minimum(starts[cats][:, None] + window, len(shop) - 1)]
    outside = rng.integers(0, 1 << 30, n_req) % np.maximum(len(shop) - counts[cats] - 1, 1)
    slots = starts[cats] + counts[cats] + outside
    items[:, -2:] = order[(slots[:, None] + np.arange(2)) % len(shop)]
    return items


def simulate_events(
    cfg: WorldConfig, state: WorldState, ds: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's clean events (contract columns, time order) and the truth of its impressions.

    ``state`` is the start of the day (:func:`world_state`); a request made at or after the
    hour of the day's intra-day event sees the world of :func:`state_at_hour`.
    """
    rng = np.random.default_rng([cfg.seed, 1, state.day])
    R, K = cfg.requests_per_day, cfg.impressions_per_request
    traffic = HOURLY_TRAFFIC / HOURLY_TRAFFIC.sum()

    # Who: every user who arrived today is active, the other requests from random users.
    n_new = state.new_users if state.day else 0  # on day 0 everyone is "new"
    new_users = np.arange(state.n_users - n_new, state.n_users)
    users = np.concatenate([new_users, rng.integers(0, state.n_users, R - n_new)])
    users = rng.permutation(users)

    # Which world each request sees: the morning's, or the one after the intra-day event.
    # With an event the request hour is needed first; without one it is drawn where it
    # always was, so a day without an event keeps its bytes.
    later = state_at_hour(cfg, state, 23)
    hour = None
    worlds: list[tuple[np.ndarray | slice, WorldState]] = [(slice(None), state)]
    if later is not state:
        hour = rng.choice(24, R, p=traffic)
        start = cfg.intraday.hour
        worlds = [(hour < start, state), (hour >= start, later)]
    cats = np.empty(R, dtype=np.int64)
    items = np.empty((R, K), dtype=np.int64)
    for rows, world in worlds:
        cats[rows] = _categories(rng, world, users[rows])
        items[rows] = _candidates(rng, world, cats[rows], K)

    # The query text: category name, a third of searches with a brand, some without text.
    kind = rng.random(R)
    browse = kind < cfg.browse_rate
    with_brand = (kind >= cfg.browse_rate) & (kind < cfg.browse_rate + 0.3)
    # A brand that exists in the category: the brand of a random candidate of the category.
    query_brand = np.where(with_brand, state.item_brand[items[:, 0]], -1)
    cat_names = category_names(cfg.n_categories)
    brands = np.char.lower(brand_names(cfg.n_brands))
    query = cat_names[cats].astype(object)
    query[with_brand] = np.char.add(
        np.char.add(brands[query_brand[with_brand]], " "), cat_names[cats[with_brand]]
    )
    query[browse] = None

    logit = np.empty((R, K))
    for rows, world in worlds:
        logit[rows] = click_logit(cfg, world, users[rows], items[rows], query_brand[rows])
    # Shown in the order of a noisy production ranker: position correlates with relevance.
    shown = np.argsort(-(logit + rng.normal(0, 1.0, logit.shape)), axis=1, kind="stable")
    items = np.take_along_axis(items, shown, axis=1)
    logit = np.take_along_axis(logit, shown, axis=1)
    price = np.empty((R, K))
    for rows, world in worlds:
        price[rows] = world.item_price[items[rows]]  # a sale price from the sale's hour on
    position = np.broadcast_to(np.arange(1, K + 1), (R, K))
    p_click = _sigmoid(logit + position_bias(cfg, position))
    clicked = rng.random((R, K)) < p_click
    carted = clicked & (rng.random((R, K)) < cfg.cart_rate)
    bought = carted & (rng.random((R, K)) < cfg.purchase_rate)

    # When: requests follow the daily traffic curve; a click comes seconds after its
    # impression, a cart minutes after the click, a purchase up to an hour after the cart.
    if hour is None:
        hour = rng.choice(24, R, p=traffic)
    t_req = np.minimum(hour * 3_600_000 + rng.integers(0, 3_600_000, R), DAY_MS - 60_000)
    delays = np.stack(
        [
            rng.integers(2_000, 60_000, (R, K)),
            rng.integers(30_000, 600_000, (R, K)),
            rng.integers(60_000, 3_600_000, (R, K)),
        ]
    ).astype(float)
    # Near midnight the funnel is squeezed into the rest of the day (order kept), so every
    # event of the day lies inside the day.
    room = (DAY_MS - 10 - t_req)[:, None].astype(float)
    squeeze = np.minimum(1.0, room / delays.sum(axis=0))
    steps = np.maximum(np.floor(delays * squeeze), 1).astype(np.int64)
    t_funnel = t_req[:, None] + np.cumsum(steps, axis=0)  # click, cart, purchase times

    req_id = _ids(f"r{ds.replace('-', '')}-", np.arange(R), 7)
    session = _sessions(users, t_req, ds)
    blocks = [
        (np.ones((R, K), dtype=bool), "impression", np.broadcast_to(t_req[:, None], (R, K))),
        (clicked, "click", t_funnel[0]),
        (carted, "add_to_cart", t_funnel[1]),
        (bought, "purchase", t_funnel[2]),
    ]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("r", "k", "t", "type")}
    for mask, etype, t in blocks:
        r, k = np.nonzero(mask)
        parts["r"].append(r)
        parts["k"].append(k)
        parts["t"].append(t[r, k])
        parts["type"].append(np.full(len(r), EVENT_TYPES.index(etype), dtype=np.int8))
    r, k, t, etype = (np.concatenate(parts[key]) for key in ("r", "k", "t", "type"))
    by_time = np.argsort(t, kind="stable")
    r, k, t, etype = r[by_time], k[by_time], t[by_time], etype[by_time]

    item = items[r, k]
    pos = pd.array(position[r, k], dtype="Int64")
    pos[etype >= EVENT_TYPES.index("add_to_cart")] = pd.NA  # position only where it was shown
    n = len(r)
    events = pd.DataFrame(
        {
            "event_id": _ids(f"e{ds.replace('-', '')}-", np.arange(n), 8),
            "event_time": _times(np.datetime64(ds, "ms"), t),
            "event_type": np.array(EVENT_TYPES)[etype],
            "user_id": _ids("u", users[r]),
            "session_id": session[r],
            "request_id": req_id[r],
            "query": query[r],
            "item_id": _ids("i", item),
            "position": pos,
            "price": price[r, k],
        }
    )
    is_imp = etype == 0
    truth = pd.DataFrame(
        {"event_id": events["event_id"].to_numpy()[is_imp], "p_click": p_click[r, k][is_imp]}
    )
    return events, truth


def catalog_delta(
    cfg: WorldConfig, state: WorldState, start_ds: str, hour: int | None = None
) -> pd.DataFrame:
    """The catalog rows that changed: day 0 the whole catalog, later days the new items and
    items whose price changed, as they are at the end of the day. With ``hour``, only the
    changes that take effect in that hour: the midnight ones at hour 0, the launches and
    sale prices at the intra-day event's hour, none in the other hours."""
    if state.day == 0:
        at_midnight = np.arange(state.n_items)
    else:
        new = np.flatnonzero(state.item_launch == state.day)
        at_midnight = np.union1d(new, state.price_changed)
    at_event = np.arange(0)
    event = intraday_event(cfg, state.item_cat)
    if event is not None and event.day == state.day:
        at_midnight = np.setdiff1d(at_midnight, event.launched)
        at_event = np.union1d(event.launched, event.sale)
    elif event is not None and event.day == state.day - 1:
        at_midnight = np.union1d(at_midnight, event.sale)  # the sale is over: usual prices
    if hour is None:
        idx, state = np.union1d(at_midnight, at_event), state_at_hour(cfg, state, 23)
    elif check_hour(hour) == 0:
        idx = at_midnight
    elif event is not None and event.day == state.day and hour == event.hour:
        idx, state = at_event, state_at_hour(cfg, state, hour)
    else:
        idx = np.arange(0)
    start = np.datetime64(start_ds, "D")
    cat = category_names(cfg.n_categories)[state.item_cat[idx]]
    brand = brand_names(cfg.n_brands)[state.item_brand[idx]]
    return pd.DataFrame(
        {
            "item_id": _ids("i", idx),
            "title": np.char.add(np.char.add(np.char.add(brand, " "), cat), _ids(" #", idx, 4)),
            "category": cat,
            "brand": brand,
            "price": state.item_price[idx],
            "launch_date": np.datetime_as_string(start + state.item_launch[idx], unit="D"),
        }
    )


def make_dirty(
    events: pd.DataFrame, ds: str, dirt: DirtConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Spoil a clean day's events as a real delivery would.

    Returns the delivered rows, a per-row mask of lines to truncate (malformed JSON) and the
    event ids that arrive intact at least once (valid row, not truncated) -- the ones a
    correct cleaning step keeps. Late events stay valid: they belong to an earlier day.
    """
    n = len(events)
    df = events.copy()
    df["position"] = df["position"].astype(object)

    def pick(rate: float) -> np.ndarray:
        return rng.random(n) < rate

    day_start = np.datetime64(ds, "ms")
    stamps = df["event_time"].to_numpy().astype("U23").astype("datetime64[ms]")  # drop the Z
    offset = (stamps - day_start).astype(np.int64)
    late, future = pick(dirt.late_rate), pick(dirt.future_rate)
    offset[late] -= rng.integers(1, 3, late.sum()) * DAY_MS
    # Future: a full day or more past the end of the day, beyond any clock-skew tolerance.
    offset[future] = rng.integers(2 * DAY_MS, 4 * DAY_MS, future.sum())
    df["event_time"] = _times(day_start, offset)
    null_user, null_item = pick(dirt.null_rate), pick(dirt.null_rate)
    df.loc[null_user, "user_id"] = None
    df.loc[null_item, "item_id"] = None
    negative = pick(dirt.negative_price_rate)
    df.loc[negative, "price"] = -df.loc[negative, "price"]
    unknown = pick(dirt.unknown_type_rate)
    df.loc[unknown, "event_type"] = rng.choice(UNKNOWN_TYPES, unknown.sum())
    invalid = future | null_user | null_item | negative | unknown

    # A retried write lands right after the original line.
    source = np.arange(n)
    source = np.sort(np.concatenate([source, source[pick(dirt.duplicate_rate)]]), kind="stable")
    df = df.iloc[source].reset_index(drop=True)
    truncate = rng.random(len(df)) < dirt.malformed_rate
    intact = ~invalid[source] & ~truncate
    return df, truncate, np.unique(df["event_id"].to_numpy()[intact])


def _write_lines(
    df: pd.DataFrame, path: Path, compress: bool, truncate: np.ndarray | None = None
) -> Path:
    """Write JSON lines; ``compress`` gzips them (with a fixed header time: same bytes)."""
    # pandas' lines=True splits the JSON array in a slow Python pass; our values never hold
    # "}" or "{", so splitting the array text at "},{" is equivalent and much faster.
    text = df.to_json(orient="records", force_ascii=False) if len(df) else "[]"
    text = text[1:-1].replace("},{", "}\n{") + ("\n" if len(df) else "")
    if truncate is not None and truncate.any():
        lines = text.split("\n")
        for i in np.flatnonzero(truncate):
            lines[i] = lines[i][: len(lines[i]) // 2]
        text = "\n".join(lines)
    data = text.encode()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    else:
        path.write_bytes(data)
    return path


def truth_dir(data_root: str | Path, ds: str) -> Path:
    """Where the ground truth of day ``ds`` lives (outside raw/: the pipeline never sees it)."""
    return Layout(Path(data_root)).root / "sim" / "truth" / f"dt={ds}"


def _publish(final: Path, write: Callable[[Path], object], success: bool = True) -> None:
    """Write a directory aside, mark it complete, then move it in whole over ``final``."""
    tmp = staging_dir(final)
    tmp.mkdir()
    write(tmp)
    if success:
        (tmp / "_SUCCESS").touch()
    publish_dir(tmp, final)


@dataclass
class Delivery:
    """One simulated day, ready to write: the lines as delivered and what they came from."""

    ds: str
    state: WorldState  # the start of the day
    events: pd.DataFrame  # the delivered lines, dirt included
    truncate: np.ndarray | None  # lines to cut in half (malformed JSON)
    hour: np.ndarray  # the hour each line is delivered in
    clean: pd.DataFrame  # event_type and hour of the clean events, for the stats
    truth: pd.DataFrame


def simulate_day(
    start_ds: str, day_index: int, config: WorldConfig, dirt: DirtConfig = DirtConfig()
) -> Delivery:
    """Day ``day_index`` (0 = ``start_ds``) in memory: its events, as delivered, and truth."""
    ds = shift_ds(start_ds, day_index)
    state = world_state(config, day_index)
    events, truth = simulate_events(config, state, ds)
    hour = events["event_time"].str.slice(11, 13).astype(int).to_numpy()
    clean = pd.DataFrame({"event_type": events["event_type"], "hour": hour})
    truncate = None
    if not dirt.is_clean:
        rng = np.random.default_rng([config.seed, 2, day_index])
        delivered, truncate, intact = make_dirty(events, ds, dirt, rng)
        # A line is delivered in the hour its event was logged: a late or future time is a
        # broken clock, not a late delivery.
        hour = hour[pd.Index(events["event_id"]).get_indexer(delivered["event_id"])]
        truth = truth[truth["event_id"].isin(intact)].reset_index(drop=True)
        events = delivered
    return Delivery(ds, state, events, truncate, hour, clean, truth)


def _write_events(day: Delivery, folder: Path, compress: bool, hour: int | None = None) -> None:
    rows = slice(None) if hour is None else day.hour == hour
    truncate = None if day.truncate is None else day.truncate[rows]
    _write_lines(day.events[rows], folder / "part-00000.jsonl", compress, truncate)


def _publish_truth(data_root: str | Path, day: Delivery) -> None:
    write = lambda d: day.truth.to_parquet(d / "truth.parquet", index=False)  # noqa: E731
    _publish(truth_dir(data_root, day.ds), write, success=False)


def _hour_dir(day_dir: Path, hour: int) -> Path:
    return day_dir / f"hour={check_hour(hour):02d}"


def _write_hours(folder: Path, write: Callable[[Path, int], object]) -> None:
    """Write the 24 hours of a day into ``folder``, each hour complete with its _SUCCESS."""
    for hour in range(24):
        _hour_dir(folder, hour).mkdir()
        write(_hour_dir(folder, hour), hour)
        (_hour_dir(folder, hour) / "_SUCCESS").touch()


def _mark_day_complete(day_dir: Path) -> None:
    """Once all 24 hours of a day delivered hour by hour are in, the day is complete too."""
    if all((_hour_dir(day_dir, hour) / "_SUCCESS").exists() for hour in range(24)):
        (day_dir / "_SUCCESS").touch()


def _day_stats(day: Delivery, catalog_changes: int, started: float, hour: int | None) -> dict:
    clean = day.clean if hour is None else day.clean[day.clean["hour"] == hour]
    types = clean["event_type"].value_counts()
    impressions, clicks = int(types.get("impression", 0)), int(types.get("click", 0))
    where = {} if hour is None else {"hour": hour}
    return {
        "ds": day.ds,
        "day_index": day.state.day,
        **where,
        "events": len(day.events) if hour is None else int((day.hour == hour).sum()),
        "clean_events": len(clean),
        "impressions": impressions,
        "clicks": clicks,
        "add_to_carts": int(types.get("add_to_cart", 0)),
        "purchases": int(types.get("purchase", 0)),
        "click_rate": round(clicks / max(impressions, 1), 4),
        "new_users": day.state.new_users,
        "new_items": day.state.new_items,
        "price_changes": len(day.state.price_changed),
        "catalog_changes": catalog_changes,
        "users": day.state.n_users,
        "items": day.state.n_items,
        "seconds": round(time.perf_counter() - started, 2),
    }


def generate_day(
    data_root: str | Path,
    start_ds: str,
    day_index: int,
    config: WorldConfig = SCALES["demo"],
    dirt: DirtConfig = DirtConfig(),
    compress: bool = True,
    hourly: bool = False,
) -> dict:
    """Write day ``day_index`` (0 = ``start_ds``): raw events, catalog delta and truth;
    ``hourly`` delivers the events and catalog changes hour by hour (module docstring).

    Each directory is written aside and moved in whole, ``_SUCCESS`` included, so a reader
    never sees a half-written delivery and a rerun replaces the day.
    """
    started = time.perf_counter()
    day = simulate_day(start_ds, day_index, config, dirt)
    layout = Layout(Path(data_root))
    ev_dir, it_dir = layout.raw_events(day.ds), layout.raw_items(day.ds)
    if hourly:
        items = [catalog_delta(config, day.state, start_ds, hour) for hour in range(24)]
        n_items = sum(map(len, items))

        def write_items(d: Path, hour: int) -> None:
            _write_lines(items[hour], d / "items.jsonl", False)

        _publish(it_dir, lambda d: _write_hours(d, write_items))
        _publish(ev_dir, lambda d: _write_hours(d, lambda f, h: _write_events(day, f, compress, h)))
    else:
        items = catalog_delta(config, day.state, start_ds)
        n_items = len(items)
        _publish(ev_dir, lambda d: _write_events(day, d, compress))
        _publish(it_dir, lambda d: _write_lines(items, d / "items.jsonl", False))
    _publish_truth(data_root, day)
    return _day_stats(day, n_items, started, None)


def generate_hour(
    data_root: str | Path,
    start_ds: str,
    day_index: int,
    hour: int,
    config: WorldConfig = SCALES["demo"],
    dirt: DirtConfig = DirtConfig(),
    compress: bool = True,
) -> dict:
    """Deliver one hour of day ``day_index``: the same files as ``generate_day(...,
    hourly=True)`` writes for that hour, the whole day's truth, and the day's ``_SUCCESS``
    once all its hours are in. Stats of the hour's events (the world's of the whole day)."""
    started = time.perf_counter()
    check_hour(hour)
    day = simulate_day(start_ds, day_index, config, dirt)
    layout = Layout(Path(data_root))
    items = catalog_delta(config, day.state, start_ds, hour)
    _publish_truth(data_root, day)
    # The catalog first: an item launched in this hour is known before it is shown.
    it_dir = layout.raw_items(day.ds)
    _publish(_hour_dir(it_dir, hour), lambda d: _write_lines(items, d / "items.jsonl", False))
    _publish(layout.raw_events_hour(day.ds, hour), lambda d: _write_events(day, d, compress, hour))
    _mark_day_complete(it_dir)
    _mark_day_complete(layout.raw_events(day.ds))
    return _day_stats(day, len(items), started, hour)


def generate_days(
    data_root: str | Path,
    start_ds: str,
    days: int,
    config: WorldConfig = SCALES["demo"],
    dirt: DirtConfig = DirtConfig(),
    compress: bool = True,
    first_day: int = 0,
    hourly: bool = False,
) -> list[dict]:
    """Write ``days`` consecutive days starting at day index ``first_day``; their stats."""
    return [
        generate_day(data_root, start_ds, i, config, dirt, compress, hourly)
        for i in range(first_day, first_day + days)
    ]


def format_stats(stats: dict) -> str:
    return (
        f"{stats['ds']}  events {stats['events']:>9,}  impressions {stats['impressions']:>9,}  "
        f"clicks {stats['clicks']:>7,} ({stats['click_rate']:.1%})  "
        f"purchases {stats['purchases']:>6,}  new users {stats['new_users']:>6,}  "
        f"new items {stats['new_items']:>6,}  {stats['seconds']:.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="var/data")
    parser.add_argument("--start", default="2026-11-20", help="date of day 0 (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--first-day", type=int, default=0, help="index of the first day")
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dirty", action="store_true", help="add duplicates, nulls, bad lines")
    parser.add_argument("--no-gzip", action="store_true", help="write .jsonl, not .jsonl.gz")
    parser.add_argument("--hourly", action="store_true", help="deliver each day hour by hour")
    parser.add_argument(
        "--event-day", type=int, help="day index of an intra-day event (IntradayConfig)"
    )
    parser.add_argument("--event-hour", type=int, default=12, help="its UTC hour (1..23)")
    args = parser.parse_args(argv)
    if args.days < 1 or args.first_day < 0:
        parser.error("--days must be >= 1 and --first-day >= 0")
    intraday = None
    if args.event_day is not None:
        try:
            intraday = IntradayConfig(day=args.event_day, hour=args.event_hour)
        except ValueError as err:
            parser.error(str(err))
    config = dataclasses.replace(SCALES[args.scale], seed=args.seed, intraday=intraday)
    dirt = DIRTY if args.dirty else DirtConfig()
    for i in range(args.first_day, args.first_day + args.days):
        stats = generate_day(
            args.data_root, args.start, i, config, dirt, not args.no_gzip, args.hourly
        )
        print(format_stats(stats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
