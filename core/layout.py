"""Where every stage reads and writes, derived from the data root and the logical date.

Layout under the data root (see README, "Data layout"):

    raw/events/dt=<ds>/part-*.jsonl[.gz]   the day's delta, as delivered (whole)
    raw/events/dt=<ds>/hour=<HH>/...       or hour by hour (each hour with its _SUCCESS)
    raw/items/dt=<ds>/*.jsonl[.gz]         catalog changes of the day
    clean/events/dt=<ds>/                  deduplicated valid events (Parquet)
    quarantine/events/dt=<ds>/             rejected rows with a reason column (Parquet)
    quarantine/items/dt=<ds>/
    state/items/dt=<ds>/                   catalog snapshot after the day (Parquet)
    state/{item_stats,user_stats,user_category}/dt=<ds>/
                                           incremental feature state after the day
    examples/dt=<ds>/                      labelled, hashed training examples (Parquet)
    online/<table>/dt=<ds>/                features served after the night (Parquet)
    online/store.sqlite                    the online store they are loaded into
    runs/dt=<ds>/<stage>.json              what each stage did, with counts and timings
    models/dt=<ds>/                        candidate models of the day
    intraday/dt=<ds>/hour=<HH>/<kind>/...  the day so far, through hour HH (HourLayout)

Paths given by users (CLI arguments, DAG Params) must stay inside the data root:
:func:`inside` checks that.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import operator
import os
import shutil
import uuid
from pathlib import Path

DS_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # a data day, as DAG Params validate it


def check_ds(ds: str) -> str:
    """Return ``ds`` if it is a YYYY-MM-DD date, else raise a clear error."""
    try:
        dt.date.fromisoformat(ds)
    except (TypeError, ValueError):
        raise ValueError(f"logical date must be YYYY-MM-DD, got {ds!r}") from None
    if len(ds) != 10:
        raise ValueError(f"logical date must be YYYY-MM-DD, got {ds!r}")
    return ds


def check_hour(hour: int) -> int:
    """Return ``hour`` if it is an hour of the day (an integer 0..23), else raise."""
    try:
        value = operator.index(hour)
    except TypeError:
        value = -1
    if isinstance(hour, bool) or not 0 <= value <= 23:
        raise ValueError(f"hour must be an integer 0..23, got {hour!r}")
    return value


def shift_ds(ds: str, days: int) -> str:
    return (dt.date.fromisoformat(ds) + dt.timedelta(days=days)).isoformat()


def inside(root: Path, path: Path) -> Path:
    """Resolve ``path`` and refuse it unless it lies under ``root`` (no path traversal)."""
    root = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"path {path} is outside the data root {root}")
    return resolved


class Layout:
    hour: int | None = None  # a whole day; :class:`HourLayout`: the day so far

    def __init__(self, data_root: Path):
        self.root = Path(data_root)

    def _day(self, *parts: str, ds: str) -> Path:
        return self.root.joinpath(*parts, f"dt={check_ds(ds)}")

    def raw_events(self, ds: str) -> Path:
        return self._day("raw", "events", ds=ds)

    def raw_events_hour(self, ds: str, hour: int) -> Path:
        """``raw/events/dt=<ds>/hour=<HH>``: the events of one hour, delivered on their own."""
        return self.raw_events(ds) / f"hour={check_hour(hour):02d}"

    def raw_items(self, ds: str) -> Path:
        return self._day("raw", "items", ds=ds)

    def clean_events(self, ds: str) -> Path:
        return self._day("clean", "events", ds=ds)

    def quarantine_events(self, ds: str) -> Path:
        return self._day("quarantine", "events", ds=ds)

    def quarantine_items(self, ds: str) -> Path:
        return self._day("quarantine", "items", ds=ds)

    def item_state(self, ds: str) -> Path:
        return self._day("state", "items", ds=ds)

    def feature_state(self, table: str, ds: str) -> Path:
        """``state/<table>/dt=<ds>``: user/item aggregates after day ``ds`` (feature_state)."""
        return self._day("state", table, ds=ds)

    def online_table(self, table: str, ds: str) -> Path:
        """``online/<table>/dt=<ds>``: the features the online store serves after the night
        ``ds`` (``jobs.feature_state.online_tables``), one Parquet table per key."""
        return self._day("online", table, ds=ds)

    def online_store(self) -> Path:
        """The online store (SQLite) serving reads: ``serving.store``."""
        return self.root / "online" / "store.sqlite"

    def examples(self, ds: str) -> Path:
        return self._day("examples", ds=ds)

    def ranking(self, ds: str) -> Path:
        """``ranking/dt=<ds>``: the day's held-out ranking cases (jobs.ranking): each held-out
        positive among sampled candidates, with the same features as the examples."""
        return self._day("ranking", ds=ds)

    def run_dir(self, ds: str) -> Path:
        return self._day("runs", ds=ds)

    def model_dir(self, ds: str) -> Path:
        return self._day("models", ds=ds)

    def candidate_dir(self, ds: str) -> Path:
        """The day's candidate model: written by fine_tune and compress, read by evaluate
        and register."""
        return self.model_dir(ds) / "candidate"

    def run_key(self, ds: str) -> str:
        """What names this run of ``ds`` (a registry tag): the day; ``<ds>T<HH>`` for the
        day so far through hour HH."""
        return ds if self.hour is None else f"{ds}T{self.hour:02d}"

    def processed_days(self, kind: str = "examples") -> list[str]:
        """Logical dates that have a complete partition of ``kind``, oldest first."""
        base = self.root / kind
        if not base.exists():
            return []
        return sorted(
            p.name[3:]
            for p in base.iterdir()
            if p.name.startswith("dt=") and (p / "_SUCCESS").exists()
        )

    def days_before(self, kind: str, ds: str, days: int) -> list[str]:
        """Processed days of ``kind`` among the ``days`` calendar days before ``ds``."""
        return [d for d in self.processed_days(kind) if shift_ds(ds, -days) <= d < ds]

    def latest_before(self, kind: str, ds: str) -> str | None:
        days = [d for d in self.processed_days(kind) if d < ds]
        return days[-1] if days else None


class HourLayout(Layout):
    """The day ``ds`` so far, through ``hour``: the layout of an intra-day run.

    Every output of the day ``ds`` lies in ``intraday/dt=<ds>/hour=<HH>/`` (the same tree as
    the night's below it: ``examples/dt=<ds>``, ``runs/dt=<ds>``, ...), apart from the day's
    own partitions, which the night publishes whole while an hour may still be running;
    other days, the raw deliveries and the online store are where the night has them. A
    stage given this layout reads history as the night does and writes the day so far
    beside it, so the intra-day runs are the nightly stages, not a copy.
    """

    def __init__(self, data_root: Path, ds: str, hour: int):
        super().__init__(data_root)
        self.ds, self.hour = check_ds(ds), check_hour(hour)

    def _day(self, *parts: str, ds: str) -> Path:
        if ds != self.ds or parts[0] == "raw":
            return super()._day(*parts, ds=ds)
        hour = self.root / "intraday" / f"dt={ds}" / f"hour={self.hour:02d}"
        return hour.joinpath(*parts, f"dt={ds}")

    def processed_days(self, kind: str = "examples") -> list[str]:
        """The days before ``ds`` as the night sees them, then ``ds`` if this hour's
        partition of ``kind`` is complete."""
        days = [d for d in super().processed_days(kind) if d < self.ds]
        if (self._day(*kind.split("/"), ds=self.ds) / "_SUCCESS").exists():
            days.append(self.ds)
        return days


def day_layout(settings, ds: str, hour: int | None = None) -> Layout:
    """The layout of a run for ``ds``: the night's, or with ``hour`` the day so far."""
    if hour is None:
        return Layout(settings.data_root)
    return HourLayout(settings.data_root, ds, hour)


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN: an AUC
    of a segment with one class is undefined, and XCom and strict parsers refuse NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: dict) -> Path:
    """Write JSON atomically (temporary file, then rename); NaN and infinity become null."""
    text = json.dumps(json_safe(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    with written_whole(path) as tmp:
        tmp.write_text(text)
    return path


@contextlib.contextmanager
def written_whole(path: Path):
    """Yield a temporary sibling of ``path`` (same suffix) to write; on success it replaces
    ``path`` in one step, on failure it is removed: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def staging_dir(final: Path) -> Path:
    """A fresh sibling directory to write into before :func:`publish_dir`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}.staging")


def publish_dir(staging: Path, final: Path) -> None:
    """Replace ``final`` with ``staging`` in whole, so a rerun replaces and never mixes."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
