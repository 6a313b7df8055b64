"""Bad deliveries: spoil a day's delivery on purpose, run the data stages, check the outcome.

Run it with ``python -m ops.chaos [--only NAME] [--out var/chaos] [--keep-roots]`` (``make
chaos``), or call :func:`run_scenario` from Python (as ``tests/jobs/test_bad_deliveries.py``
does). For each scenario it makes a throwaway data root (settings from
``load_settings(env=...)``), delivers one good simulated day (``tiny`` scale, preprocessed and
validated once per run and copied into each root), then the next day spoiled as the scenario
says; it runs ``pipeline.nightly.preprocess`` and ``pipeline.nightly.validate`` on it (one
SparkSession for the whole run) and records which stage stopped the day (or none), the error
message and the row accounting of ``runs/dt=<ds>/preprocess.json``. A scenario PASSes when
that matches its documented outcome below, and always also when:

* preprocessing ran: ``rows_in`` equals the non-blank lines delivered (no line lost or split)
  and ``rows_in == clean + quarantined + duplicates``; the counts match what was spoiled;
* a stage stopped the day: the message names the file, field or expectation (never a Java
  stack trace); when the sensor or preprocessing stopped it, nothing of the day was published.

It prints a table, writes it as ``chaos.json`` and ``chaos.md`` under ``--out`` and exits
with 1 when any scenario FAILs. Models are never trained here: where only the model gate can
catch a delivery, the table says so (column "gate").

Documented outcomes (``<ds>`` is the spoiled day; "passes" means both data stages pass)::

    scenario             delivered                         documented outcome
    -------------------  --------------------------------  -----------------------------------
    missing_day          no raw/events/dt=<ds>/ (the       the sensor waits (delta_ready is
                         catalog delta did arrive)         False); run by hand, preprocess
                                                           raises MissingDeltaError naming the
                                                           directory
    empty_day            event files with zero lines       preprocess: BadDeliveryError "the
                                                           delivery has no lines", naming them
    truncated_gzip       part-00000.jsonl.gz cut in half   preprocess: BadDeliveryError naming
                                                           the file (truncated), before Spark
    malformed_lines      3% of lines cut off, not JSON,    passes; each bad line is one row
                         [], 42, two events in an array    quarantined as malformed_line, raw
                                                           text kept
    renamed_field        item_id renamed itemId            preprocess: BadDeliveryError naming
                                                           the file, item_id and itemId
    missing_field        user_id dropped from every line   preprocess: BadDeliveryError naming
                                                           the file and user_id
    new_field            two fields outside the contract   passes; the fields are ignored and
                                                           logged as a warning
    wrong_types          2% position "x", 2% price         passes; those rows quarantined as
                         "cheap"                           malformed_line
    type_changed         price sent as text ("12.99") on   validate: DataValidationError
                         every line                        "quarantine: ... (100%) ...
                                                           malformed_line" (over 50% stops)
    null_ids             1% each: null event_id, null      passes; quarantined as
                         user_id, blank item_id            null_event_id / null_item_id
                                                           (no user: a guest, valid)
    negative_prices      2% negative prices                passes; quarantined as
                                                           negative_price
    absurd_prices        1% prices of 1e12                 validate: DataValidationError
                                                           naming expect_column_values_to_be_
                                                           between(price) and the count
    future_times         2% stamped 2 days ahead, 1% 30    passes; the first quarantined as
                         minutes after midnight            future_event_time, the others kept
                                                           (within future_slack_minutes)
    delivered_twice      the day's file twice, plus        passes; the copies count as
                         yesterday's file again            duplicates (clean = one copy); a
                                                           rerun gives identical outputs
    late_events          3% stamped 1-2 days early, 1%     passes; the first kept as late
                         10 days early                     events, the others quarantined
                                                           as too_late
    volume_spike         10x the requests of a day         passes; volume ratio ~10 recorded
                                                           ([validate] max_volume_ratio is 20)
    unknown_catalog_ids  events for items not in the       passes; those rows kept without
                         catalog, catalog items never      catalog attributes (buckets 0);
                         seen in events                    the new items join the catalog
    poisoned_labels      clicks moved to random            passes (click rate and drift
                         impressions                       unchanged); gate: only the model
                                                           gate can catch it (AUC vs champion)
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.layout import Layout, read_json, shift_ds, write_json
from core.settings import Settings, load_settings, world_env
from jobs.preprocess import data_files
from ops import simulate
from pipeline import nightly

log = logging.getLogger(__name__)

START = "2026-11-20"  # the good day; the spoiled day is the next one
TINY = simulate.SCALES["tiny"]
SEED = 11
SPIKE = 10  # volume_spike delivers this many times a day's requests
ABSURD_PRICE = 1e12
COUNT_KEYS = ("rows_in", "clean", "quarantined", "duplicates")


@dataclass
class Day:
    """The spoiled day of one scenario: its settings, and notes for the report."""

    settings: Settings
    ds: str = shift_ds(START, 1)
    yesterday: str = START
    notes: list[str] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.data_root)

    @property
    def events_file(self) -> Path:
        return self.layout.raw_events(self.ds) / "part-00000.jsonl.gz"


@dataclass(frozen=True)
class Scenario:
    """A spoiled delivery and its documented outcome.

    ``spoil`` writes the day and returns what the outcome must show: ``message`` (substrings
    of the error), exact ``clean``/``duplicates``/``late_events``/``quarantined_by_reason``.
    ``verify`` checks more after the stages ran and returns problems (empty: fine).
    """

    name: str
    delivered: str
    outcome: str
    stops_at: str | None  # "sensor", "preprocess", "validate", or None: the data stages pass
    error: str | None
    spoil: Callable[[Day], dict]
    verify: Callable[[Day, dict], list[str]] | None = None
    history: bool = True  # needs the good day processed before (the volume/drift/dedupe refs)
    gate: str = ""

    @property
    def expected(self) -> str:
        return describe(self.stops_at, self.error) + (" (gate)" if self.gate else "")


def describe(stopped_at: str | None, error: str | None) -> str:
    if stopped_at is None:
        return "passes"
    if stopped_at == "sensor":
        return f"sensor waits; {error}"
    return f"{stopped_at} stops: {error}"


# --- delivering -------------------------------------------------------------------------
def settings_for(root: Path) -> Settings:
    """Settings of a throwaway data root (MLflow store inside it, never used here)."""
    return load_settings(env=world_env(root))


def build_template(work: Path) -> Path:
    """A data root holding the good day, delivered, preprocessed and validated."""
    root = work / "template"
    shutil.rmtree(root, ignore_errors=True)
    settings = settings_for(root)
    simulate.generate_day(settings.data_root, START, 0, TINY)
    nightly.preprocess(START, settings)
    nightly.validate(START, settings)
    return root


def deliver(day: Day, config: simulate.WorldConfig = TINY) -> dict:
    """The spoiled day as the simulator delivers it, clean (events and catalog delta)."""
    return simulate.generate_day(day.settings.data_root, START, 1, config)


def read_lines(path: Path) -> list[str]:
    return [line for line in gzip.decompress(path.read_bytes()).decode().split("\n") if line]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress("".join(f"{line}\n" for line in lines).encode(), mtime=0))


def spoil_rows(day: Day, change: Callable[[list[dict], random.Random], dict]) -> dict:
    """Rewrite the day's events: ``change`` edits the decoded rows in place."""
    rows = [json.loads(line) for line in read_lines(day.events_file)]
    expect = change(rows, random.Random(SEED))
    write_lines(day.events_file, [json.dumps(r) for r in rows])
    return {"clean": len(rows) - sum(expect.get("quarantined_by_reason", {}).values()), **expect}


def pick(rng: random.Random, rows: list, *sizes: float, where=None) -> list[list[int]]:
    """Disjoint random row indices, one group per size (a share of the rows)."""
    pool = [i for i, r in enumerate(rows) if where is None or where(r)]
    chosen = rng.sample(pool, sum(max(1, round(s * len(rows))) for s in sizes))
    groups, start = [], 0
    for s in sizes:
        n = max(1, round(s * len(rows)))
        groups.append(sorted(chosen[start : start + n]))
        start += n
    return groups


def stamp(ds: str, days: int, minutes: int = 0) -> str:
    day = shift_ds(ds, days)
    return f"{day}T{minutes // 60:02d}:{minutes % 60:02d}:00.000Z"


def count_lines(path: Path) -> int | None:
    """Non-blank lines in the day's event files; None when a file cannot be read whole."""
    n = 0
    for file in data_files(path):
        try:
            with (gzip.open if file.name.endswith(".gz") else open)(file, "rb") as fh:
                n += sum(1 for line in fh if line.strip())
        except (EOFError, OSError):
            return None
    return n


# --- the scenarios ----------------------------------------------------------------------
def spoil_missing_day(day: Day) -> dict:
    deliver(day)
    shutil.rmtree(day.layout.raw_events(day.ds))
    return {"message": [str(day.layout.raw_events(day.ds))]}


def spoil_empty_day(day: Day) -> dict:
    deliver(day)
    write_lines(day.events_file, [])
    (day.events_file.parent / "part-00001.jsonl").write_bytes(b"")
    return {"message": ["no lines", "part-00000.jsonl.gz", "part-00001.jsonl"]}


def spoil_truncated_gzip(day: Day) -> dict:
    deliver(day)
    data = day.events_file.read_bytes()
    day.events_file.write_bytes(data[: len(data) // 2])
    return {"message": [str(day.events_file), "truncated"]}


def spoil_malformed_lines(day: Day) -> dict:
    deliver(day)
    lines = read_lines(day.events_file)
    rng = random.Random(SEED)
    groups = pick(rng, lines, 0.01, 0.005, 0.005, 0.005, 0.005)
    kinds = [
        lambda line, _: line[: len(line) // 2],  # cut off by a crashed writer
        lambda line, _: "GET /api/track 200 OK",  # not JSON at all
        lambda line, _: "[]",  # JSON, but no object: Spark's JSON reader dropped it
        lambda line, _: "42",
        lambda line, other: f"[{line},{other}]",  # two events in one line
    ]
    for group, kind in zip(groups, kinds, strict=True):
        for i in group:
            lines[i] = kind(lines[i], lines[(i + 1) % len(lines)])
    write_lines(day.events_file, lines)
    bad = sum(map(len, groups))
    return {"clean": len(lines) - bad, "quarantined_by_reason": {"malformed_line": bad}}


def verify_raw_text_kept(day: Day, result: dict) -> list[str]:
    """Every malformed_line row of the quarantine keeps the line as delivered."""
    import pandas as pd

    bad = pd.read_parquet(day.layout.quarantine_events(day.ds))
    bad = bad[bad["reason"] == "malformed_line"]
    if bad["_corrupt_record"].isna().any():
        return ["a malformed_line row lost its raw text"]
    day.notes.append(f"{len(bad)} malformed_line rows in quarantine, each with its raw line")
    return []


def spoil_renamed_field(day: Day) -> dict:
    deliver(day)

    def rename(rows, rng):
        for r in rows:
            r["itemId"] = r.pop("item_id")
        return {}

    spoil_rows(day, rename)
    return {"message": [str(day.events_file), "item_id", "itemId"]}


def spoil_missing_field(day: Day) -> dict:
    deliver(day)

    def drop(rows, rng):
        for r in rows:
            del r["user_id"]
        return {}

    spoil_rows(day, drop)
    return {"message": [str(day.events_file), "user_id"]}


def spoil_new_field(day: Day) -> dict:
    deliver(day)

    def add(rows, rng):
        for i, r in enumerate(rows):
            r["app_version"] = "5.2.0"
            r["experiment"] = {"name": "ranker-b", "bucket": i % 2}
        return {"quarantined_by_reason": {}}

    return spoil_rows(day, add)


def verify_new_field(day: Day, result: dict) -> list[str]:
    named = [w for w in result["warnings"] if "app_version" in w and "experiment" in w]
    return [] if named else ["no warning names the fields outside the contract"]


def spoil_wrong_types(day: Day) -> dict:
    deliver(day)

    def mistype(rows, rng):
        shown = pick(rng, rows, 0.02, where=lambda r: r["event_type"] == "impression")[0]
        for i in shown:
            rows[i]["position"] = "x"
        cheap = pick(rng, rows, 0.02, where=lambda r: r["position"] != "x")[0]
        for i in cheap:
            rows[i]["price"] = "cheap"
        return {"quarantined_by_reason": {"malformed_line": len(shown) + len(cheap)}}

    return spoil_rows(day, mistype)


def spoil_type_changed(day: Day) -> dict:
    deliver(day)

    def as_text(rows, rng):
        for r in rows:
            r["price"] = f"{r['price']:.2f}"
        return {"quarantined_by_reason": {"malformed_line": len(rows)}}

    return {**spoil_rows(day, as_text), "message": ["quarantine:", "(100%)", "malformed_line"]}


def spoil_null_ids(day: Day) -> dict:
    deliver(day)

    def nulls(rows, rng):
        no_event, no_user, no_item = pick(rng, rows, 0.01, 0.01, 0.01)
        for group, key, value in ((no_event, "event_id", None), (no_user, "user_id", None)):
            for i in group:
                rows[i][key] = value
        for i in no_item:
            rows[i]["item_id"] = " "
        # A row without a user is a guest's: valid (it feeds the item state only).
        reasons = ("null_event_id", "null_item_id")
        groups = (no_event, no_item)
        return {"quarantined_by_reason": {r: len(g) for r, g in zip(reasons, groups, strict=True)}}

    return spoil_rows(day, nulls)


def spoil_negative_prices(day: Day) -> dict:
    deliver(day)

    def negate(rows, rng):
        (group,) = pick(rng, rows, 0.02)
        for i in group:
            rows[i]["price"] = -abs(rows[i]["price"])
        return {"quarantined_by_reason": {"negative_price": len(group)}}

    return spoil_rows(day, negate)


def spoil_absurd_prices(day: Day) -> dict:
    deliver(day)

    def inflate(rows, rng):
        (group,) = pick(rng, rows, 0.01)
        for i in group:
            rows[i]["price"] = ABSURD_PRICE
        return {"quarantined_by_reason": {}, "absurd": len(group)}

    expect = spoil_rows(day, inflate)
    check = f"clean_events: expect_column_values_to_be_between(price) failed: {expect['absurd']}"
    return {**expect, "message": [f"{check} unexpected"]}


def spoil_future_times(day: Day) -> dict:
    deliver(day)

    def future(rows, rng):
        ahead, skewed = pick(rng, rows, 0.02, 0.01)
        for i in ahead:
            rows[i]["event_time"] = stamp(day.ds, 2, 10 * 60)
        for i in skewed:  # a clock a little fast: inside future_slack_minutes
            rows[i]["event_time"] = stamp(day.ds, 1, 30)
        return {"quarantined_by_reason": {"future_event_time": len(ahead)}, "late_events": 0}

    return spoil_rows(day, future)


def spoil_delivered_twice(day: Day) -> dict:
    stats = deliver(day)
    folder = day.events_file.parent
    shutil.copy(day.events_file, folder / "part-00001.jsonl.gz")  # a retried upload
    yesterday = day.layout.raw_events(day.yesterday) / "part-00000.jsonl.gz"
    shutil.copy(yesterday, folder / "part-00002.jsonl.gz")  # yesterday's file sent again
    n_yesterday = len(read_lines(yesterday))
    return {
        "clean": stats["events"],
        "duplicates": stats["events"] + n_yesterday,
        "quarantined_by_reason": {},
    }


def _partition(path: Path, keys: list[str]):
    import pandas as pd

    df = pd.read_parquet(path)
    return df.sort_values(keys).reset_index(drop=True)


def verify_rerun(day: Day, result: dict) -> list[str]:
    """Preprocess the day again: every output and count must be the same."""
    layout, problems = day.layout, []
    first = read_json(layout.run_dir(day.ds) / "preprocess.json")
    clean = _partition(layout.clean_events(day.ds), ["event_id"])
    examples = _partition(layout.examples(day.ds), ["request_id", "item_id"])
    again = nightly.preprocess(day.ds, day.settings)
    keys = [*COUNT_KEYS, "quarantined_by_reason", "examples", "catalog_items"]
    changed = [k for k in keys if first[k] != again[k]]
    if changed:
        problems.append(f"rerun changed {changed}: {first} -> {again}")
    if not clean.equals(_partition(layout.clean_events(day.ds), ["event_id"])):
        problems.append("rerun changed clean/events")
    if not examples.equals(_partition(layout.examples(day.ds), ["request_id", "item_id"])):
        problems.append("rerun changed examples")
    if not problems:
        day.notes.append(f"rerun: identical outputs ({again['clean']} clean events)")
    return problems


def spoil_late_events(day: Day) -> dict:
    deliver(day)
    max_late = day.settings.preprocess.max_late_days

    def early(rows, rng):
        late, too_late = pick(rng, rows, 0.03, 0.01)
        for i in late:
            rows[i]["event_time"] = stamp(day.ds, -rng.choice([1, 2]), rng.randrange(1440))
        for i in too_late:
            rows[i]["event_time"] = stamp(day.ds, -max_late - 7, 12 * 60)
        return {"quarantined_by_reason": {"too_late": len(too_late)}, "late_events": len(late)}

    return spoil_rows(day, early)


def spoil_volume_spike(day: Day) -> dict:
    spike = dataclasses.replace(TINY, requests_per_day=TINY.requests_per_day * SPIKE)
    stats = deliver(day, spike)
    return {"clean": stats["events"], "quarantined_by_reason": {}}


def verify_volume_spike(day: Day, result: dict) -> list[str]:
    summary = read_json(day.layout.run_dir(day.ds) / "validate.json") or {}
    ratio = summary.get("volume", {}).get("ratio")
    day.notes.append(f"volume ratio {ratio}x recorded")
    if ratio is None or not 0.8 * SPIKE <= ratio <= 1.2 * SPIKE:
        return [f"volume ratio {ratio}, expected about {SPIKE}"]
    return []


def spoil_unknown_catalog_ids(day: Day) -> dict:
    deliver(day)
    items_file = day.layout.raw_items(day.ds) / "items.jsonl"
    items = [json.loads(line) for line in items_file.read_text().splitlines() if line]
    new_items = [
        {**items[0], "item_id": f"i-new-{k}", "title": f"not sold yet #{k}"} for k in range(25)
    ]
    items_file.write_text("".join(json.dumps(i) + "\n" for i in items + new_items))

    def unknown(rows, rng):
        shown = sorted({r["item_id"] for r in rows if r["event_type"] == "impression"})
        gone = set(rng.sample(shown, 10))
        pairs = set()
        for r in rows:
            if r["item_id"] in gone:
                r["item_id"] = f"x-{r['item_id']}"  # never in any catalog delta
                if r["event_type"] == "impression":
                    pairs.add((r["request_id"], r["item_id"]))
        return {"quarantined_by_reason": {}, "uncatalogued_examples": len(pairs)}

    return spoil_rows(day, unknown)


def verify_unknown_catalog_ids(day: Day, result: dict) -> list[str]:
    import pandas as pd

    examples = pd.read_parquet(day.layout.examples(day.ds))
    bare = examples[examples["item_id"].str.startswith("x-")]
    state = pd.read_parquet(day.layout.item_state(day.ds), columns=["item_id"])
    problems = []
    if len(bare) != result["expect"]["uncatalogued_examples"]:
        problems.append(f"{len(bare)} examples of uncatalogued items, expected more")
    if bare["category"].notna().any() or (bare["category_bucket"] != 0).any():
        problems.append("uncatalogued items got catalog attributes")
    if state["item_id"].str.startswith("i-new-").sum() != 25:
        problems.append("the catalog-only items are not in state/items")
    day.notes.append(f"{len(bare)} examples without catalog attributes (category bucket 0)")
    return problems


def spoil_poisoned_labels(day: Day) -> dict:
    deliver(day)

    def shuffle(rows, rng):
        shown = [r for r in rows if r["event_type"] == "impression"]
        clicks = [r for r in rows if r["event_type"] == "click"]
        keys = ("user_id", "session_id", "request_id", "query", "item_id", "position", "price")
        for click, target in zip(clicks, rng.sample(shown, len(clicks)), strict=True):
            click.update({k: target[k] for k in keys})
        return {"quarantined_by_reason": {}}

    return spoil_rows(day, shuffle)


def verify_poisoned_labels(day: Day, result: dict) -> list[str]:
    """Evidence the labels are poisoned although validation passed: the position effect."""
    import pandas as pd

    from core.features import LABEL, MAX_POSITION

    def ctr(ds: str) -> str:
        ex = pd.read_parquet(day.layout.examples(ds), columns=["position", LABEL])
        pos = (ex["position"] * MAX_POSITION).round()
        top, low = ex[LABEL][pos == 1].mean(), ex[LABEL][pos >= 6].mean()
        return f"{top:.3f} at position 1, {low:.3f} at 6+"

    day.notes.append(f"click rate {ctr(day.ds)} (the good day: {ctr(day.yesterday)})")
    return []


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "missing_day",
            "no raw/events/dt=<ds>/",
            "sensor waits; preprocess raises MissingDeltaError naming the directory",
            "sensor",
            "MissingDeltaError",
            spoil_missing_day,
            history=False,
        ),
        Scenario(
            "empty_day",
            "event files with zero lines",
            "preprocess refuses the delivery: no lines, naming the files",
            "preprocess",
            "BadDeliveryError",
            spoil_empty_day,
            history=False,
        ),
        Scenario(
            "truncated_gzip",
            "part-00000.jsonl.gz cut in half",
            "preprocess refuses the file (truncated) before Spark reads it",
            "preprocess",
            "BadDeliveryError",
            spoil_truncated_gzip,
            history=False,
        ),
        Scenario(
            "malformed_lines",
            "3% of lines cut, not JSON, [], 42, two events in an array",
            "passes; one malformed_line row per bad line, raw text kept",
            None,
            None,
            spoil_malformed_lines,
            verify_raw_text_kept,
        ),
        Scenario(
            "renamed_field",
            "item_id renamed itemId on every line",
            "preprocess refuses the file, naming item_id and itemId",
            "preprocess",
            "BadDeliveryError",
            spoil_renamed_field,
            history=False,
        ),
        Scenario(
            "missing_field",
            "user_id dropped from every line",
            "preprocess refuses the file, naming user_id",
            "preprocess",
            "BadDeliveryError",
            spoil_missing_field,
            history=False,
        ),
        Scenario(
            "new_field",
            "two fields outside the contract on every line",
            "passes; the fields are ignored and logged as a warning",
            None,
            None,
            spoil_new_field,
            verify_new_field,
        ),
        Scenario(
            "wrong_types",
            '2% position "x", 2% price "cheap"',
            "passes; those rows quarantined as malformed_line",
            None,
            None,
            spoil_wrong_types,
            verify_raw_text_kept,
        ),
        Scenario(
            "type_changed",
            'price sent as text ("12.99") on every line',
            "validate stops the day: quarantine share 100% (malformed_line)",
            "validate",
            "DataValidationError",
            spoil_type_changed,
        ),
        Scenario(
            "null_ids",
            "1% each: null event_id, null user_id, blank item_id",
            "passes; quarantined as null_event_id / null_item_id; no user = a guest (valid)",
            None,
            None,
            spoil_null_ids,
        ),
        Scenario(
            "negative_prices",
            "2% negative prices",
            "passes; quarantined as negative_price",
            None,
            None,
            spoil_negative_prices,
        ),
        Scenario(
            "absurd_prices",
            f"1% prices of {ABSURD_PRICE:.0e}",
            "validate stops the day: expect_column_values_to_be_between(price) with the count",
            "validate",
            "DataValidationError",
            spoil_absurd_prices,
        ),
        Scenario(
            "future_times",
            "2% stamped 2 days ahead, 1% 30 minutes after midnight",
            "passes; the first quarantined as future_event_time, the others kept (slack)",
            None,
            None,
            spoil_future_times,
        ),
        Scenario(
            "delivered_twice",
            "the day's file twice, plus yesterday's file again",
            "passes; copies counted as duplicates; a rerun gives identical outputs",
            None,
            None,
            spoil_delivered_twice,
            verify_rerun,
        ),
        Scenario(
            "late_events",
            "3% stamped 1-2 days early, 1% 10 days early",
            "passes; the first kept as late events, the others quarantined as too_late",
            None,
            None,
            spoil_late_events,
        ),
        Scenario(
            "volume_spike",
            f"{SPIKE}x the requests of a day",
            f"passes; volume ratio ~{SPIKE} recorded (max_volume_ratio 20)",
            None,
            None,
            spoil_volume_spike,
            verify_volume_spike,
        ),
        Scenario(
            "unknown_catalog_ids",
            "events for items not in the catalog; catalog items never seen in events",
            "passes; rows kept without catalog attributes; new items join the catalog",
            None,
            None,
            spoil_unknown_catalog_ids,
            verify_unknown_catalog_ids,
        ),
        Scenario(
            "poisoned_labels",
            "clicks moved to random impressions",
            "passes (click rate, drift unchanged): only the model gate can catch it",
            None,
            None,
            spoil_poisoned_labels,
            verify_poisoned_labels,
            gate="must fail the gate: not credibly better than the champion (models/gate.py; "
            "tests/models/test_model_stages.py trains on shuffled labels, never promoted)",
        ),
    ]
}


# --- running ----------------------------------------------------------------------------
class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Warnings the pipeline's own modules (``jobs.*``) log while the stages run."""
    handler, logger = _Warnings(), logging.getLogger("jobs")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def run_stages(ds: str, settings: Settings) -> dict:
    """The sensor's check, then preprocess and validate as the DAG runs them; what stopped."""
    ready = nightly.delta_ready(ds, settings)
    out = {"sensor_ready": ready, "stopped_at": None if ready else "sensor"}
    out.update(error=None, message=None, stage_seconds={})
    for name, stage in (("preprocess", nightly.preprocess), ("validate", nightly.validate)):
        started = time.perf_counter()
        try:
            stage(ds, settings)
        except Exception as exc:  # what stops the night is what this records
            out.update(stopped_at=out["stopped_at"] or name, error=type(exc).__name__)
            out["message"] = str(exc)
            break
        finally:
            out["stage_seconds"][name] = round(time.perf_counter() - started, 1)
    return out


def judge(scenario: Scenario, day: Day, expect: dict, result: dict) -> list[str]:
    """Where the outcome differs from the documented one (empty: PASS)."""
    problems = []
    got = describe(result["stopped_at"], result["error"])
    if got != describe(scenario.stops_at, scenario.error):
        problems.append(f"expected '{describe(scenario.stops_at, scenario.error)}', got '{got}'")
    message = result["message"] or ""
    if "Py4J" in (result["error"] or "") or "\tat org." in message:
        problems.append("the error is a Java stack trace")
    problems += [
        f"message does not name {m!r}" for m in expect.get("message", []) if m not in message
    ]
    rows = result["rows"]
    if rows.get("rows_in") is not None:
        if rows["rows_in"] != rows["clean"] + rows["quarantined"] + rows["duplicates"]:
            problems.append("rows_in != clean + quarantined + duplicates")
        if rows["rows_in"] != rows["lines_delivered"]:
            problems.append(
                f"rows_in {rows['rows_in']} != {rows['lines_delivered']} lines delivered"
            )
        for key in ("clean", "duplicates", "late_events", "quarantined_by_reason"):
            if key in expect and rows[key] != expect[key]:
                problems.append(f"{key}: expected {expect[key]}, got {rows[key]}")
    elif scenario.stops_at not in ("sensor", "preprocess"):
        problems.append(f"no runs/dt={day.ds}/preprocess.json")
    if result["stopped_at"] in ("sensor", "preprocess"):
        layout = day.layout
        published = [
            p for p in (layout.clean_events(day.ds), layout.examples(day.ds)) if p.exists()
        ]
        problems += [f"{p} was published although the day stopped" for p in published]
    return problems


def run_scenario(scenario: Scenario, work: Path, template: Path | None = None) -> dict:
    """Build the scenario's data root under ``work``, spoil the day, run the data stages and
    judge the outcome. ``template`` (from :func:`build_template`) is needed when
    ``scenario.history``."""
    started = time.perf_counter()
    root = work / scenario.name
    shutil.rmtree(root, ignore_errors=True)
    if scenario.history:
        if template is None:
            raise ValueError(f"scenario {scenario.name} needs the good day: pass a template")
        shutil.copytree(template, root)
    day = Day(settings_for(root))
    expect = scenario.spoil(day)
    with captured_warnings() as warnings:
        result = run_stages(day.ds, day.settings)
    runs = day.layout.run_dir(day.ds)
    pre = read_json(runs / "preprocess.json") or {}
    val = read_json(runs / "validate.json") or {}
    result.update(
        scenario=scenario.name,
        delivered=scenario.delivered,
        expected=scenario.expected,
        documented=scenario.outcome,
        actual=describe(result["stopped_at"], result["error"]),
        rows={
            "lines_delivered": count_lines(day.layout.raw_events(day.ds)),
            **{k: pre.get(k) for k in (*COUNT_KEYS, "late_events", "quarantined_by_reason")},
        },
        volume_ratio=(val.get("volume") or {}).get("ratio"),
        quarantine_share=(val.get("quarantine") or {}).get("share"),
        warnings=list(warnings),
        gate=scenario.gate,
        expect={k: v for k, v in expect.items() if k != "message"},
    )
    problems = judge(scenario, day, expect, result)
    if scenario.verify and not problems:
        problems += scenario.verify(day, result)
    result.update(
        notes=day.notes,
        problems=problems,
        verdict="FAIL" if problems else "PASS",
        seconds=round(time.perf_counter() - started, 1),
    )
    return result


def run_all(names: list[str], work: Path, echo=print) -> list[dict]:
    """Run the named scenarios in one process (one SparkSession), the good day built once."""
    chosen = [SCENARIOS[n] for n in names]
    template = build_template(work) if any(s.history for s in chosen) else None
    results = []
    for scenario in chosen:
        echo(f"-- {scenario.name}: {scenario.delivered}")
        results.append(run_scenario(scenario, work, template))
        echo(f"   {results[-1]['verdict']}: {results[-1]['actual']} ({results[-1]['seconds']} s)")
    return results


# --- reporting --------------------------------------------------------------------------
def rows_cell(result: dict) -> str:
    rows = result["rows"]
    if rows.get("rows_in") is None:
        return "-"
    return "/".join(str(rows[k]) for k in COUNT_KEYS)


def details(result: dict) -> list[str]:
    out = []
    if result["message"]:
        text = " ".join(result["message"].split())
        out.append(f"{result['error']}: {text[:400]}{'...' if len(text) > 400 else ''}")
    out += result["notes"] + [f"warning: {w}" for w in result["warnings"]]
    if result["gate"]:
        out.append(f"gate: {result['gate']}")
    out += [f"PROBLEM: {p}" for p in result["problems"]]
    return out


def format_table(results: list[dict]) -> str:
    head = ("scenario", "expected outcome", "actual outcome", "in/clean/quar/dupes", "result")
    cells = [
        (r["scenario"], r["expected"], r["actual"], rows_cell(r), r["verdict"]) for r in results
    ]
    widths = [max(len(row[i]) for row in [head, *cells]) for i in range(len(head))]
    lines = [head, tuple("-" * w for w in widths), *cells]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
    out.append("")
    for r in results:
        out += [f"{r['scenario']}:"] + [f"    {d}" for d in details(r)]
    failed = [r["scenario"] for r in results if r["verdict"] == "FAIL"]
    out.append(f"{len(results) - len(failed)} of {len(results)} scenarios PASS")
    return "\n".join(out + ([f"FAIL: {', '.join(failed)}"] if failed else []))


def format_markdown(results: list[dict]) -> str:
    out = [
        "# FreshRank bad deliveries",
        "",
        "| scenario | delivered | expected outcome | actual outcome | rows in/clean/quarantined/"
        "dupes | result | details |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [r["scenario"], r["delivered"], r["documented"], r["actual"], rows_cell(r)]
        cells += [f"**{r['verdict']}**", "<br>".join(details(r))]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def write_report(results: list[dict], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "chaos.json", "markdown": out / "chaos.md"}
    write_json(paths["json"], {"start": START, "scale": "tiny", "scenarios": results})
    paths["markdown"].write_text(format_markdown(results))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="scenario name (repeat, or a,b)")
    parser.add_argument("--out", default="var/chaos", help="where chaos.json/.md go")
    parser.add_argument("--keep-roots", action="store_true", help="keep the data roots in --out")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:20} {s.expected:40} {s.delivered}")
        return 0
    names = [n for arg in args.only or [] for n in arg.split(",") if n] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    from jobs.spark import get_spark

    get_spark(settings_for(out).preprocess)  # the one session every stage then reuses
    if args.keep_roots:
        results = run_all(names, out / "roots")
    else:
        with tempfile.TemporaryDirectory(prefix="freshrank-chaos-") as work:
            results = run_all(names, Path(work))
    print(format_table(results))
    paths = write_report(results, out)
    print(f"report: {paths['json']}, {paths['markdown']}")
    return 1 if any(r["verdict"] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
