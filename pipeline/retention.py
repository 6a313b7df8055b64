"""Retention: keep disk bounded over months of nightly runs.

Run as the nightly DAG's last task (``cleanup``) or by hand::

    python -m pipeline.retention --ds 2026-12-31 [--dry-run]

What is kept, per ``[retention]`` settings (days count back from ``ds``, ``ds`` included):

* ``clean/``, ``quarantine/``, ``examples/``: the last ``data_days`` days. Replay and
  retraining read at most ``max(replay_days, retrain_history_days)`` days of examples, and
  validation compares with ``volume_window_days``: a setting below what those need is refused.
* ``state/``, ``online/``: the last ``state_days`` snapshots (each day reads only the one
  before; the online store loads the newest).
* ``models/``: candidate models, downloaded champions and checkpoints of the last
  ``model_days`` days; ``intraday/``: the hour-by-hour runs of those days.
* ``runs/``: the small per-stage summaries, ``runs_days`` days (a year by default).
* ``raw/``: never touched unless ``raw_days`` > 0: the delivered logs are the users' data.
* MLflow: versions of the registered model beyond the newest ``keep_versions`` are deleted,
  except the ones holding an alias (``champion``, ``previous``): rollback stays one step.

Only complete day partitions (``dt=YYYY-MM-DD``) and the leftovers of interrupted writes
(``.dt=*.staging``/``.old`` older than a day) are removed; nothing outside the data root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

from core import features
from core.layout import Layout, check_ds, shift_ds
from core.settings import Settings, load_settings
from core.summaries import CleanupSummary, write_summary

log = logging.getLogger(__name__)

# kind (directories under the data root that hold dt= partitions) -> setting with its days
KINDS = {
    ("clean", "events"): "data_days",
    ("quarantine", "events"): "data_days",
    ("quarantine", "items"): "data_days",
    ("examples",): "data_days",
    ("ranking",): "data_days",
    ("state", "items"): "state_days",
    ("state", "item_stats"): "state_days",
    ("state", "user_stats"): "state_days",
    ("state", "user_category"): "state_days",
    ("state", "user_item"): "state_days",
    **{("online", table): "state_days" for table in features.ONLINE_KEYS},
    ("models",): "model_days",
    ("intraday",): "model_days",  # the day so far, hour by hour (data and candidate models)
    ("runs",): "runs_days",
    ("raw", "events"): "raw_days",
    ("raw", "items"): "raw_days",
}
LEFTOVER_AGE_SECONDS = 24 * 3600


def days_needed(settings: Settings) -> int:
    """The fewest days of examples the other stages read back."""
    return max(
        settings.train.replay_days + 1,
        settings.train.retrain_history_days,
        settings.validate.volume_window_days + 1,
    )


def check_policy(settings: Settings) -> None:
    cfg = settings.retention
    need = days_needed(settings)
    if cfg.data_days < need:
        raise ValueError(
            f"[retention] data_days={cfg.data_days} is below the {need} days that replay, "
            "retraining and volume checks read back"
        )
    if cfg.state_days < 2 or cfg.model_days < 1 or cfg.keep_versions < 1:
        raise ValueError("[retention] state_days >= 2, model_days >= 1, keep_versions >= 1")


def expired_partitions(base: Path, ds: str, keep_days: int) -> list[Path]:
    """``dt=`` partitions under ``base`` older than the ``keep_days`` days ending at ``ds``."""
    if keep_days <= 0 or not base.is_dir():
        return []
    oldest_kept = shift_ds(ds, -(keep_days - 1))
    out = []
    for p in sorted(base.iterdir()):
        if p.name.startswith("dt=") and len(p.name) == 13 and p.name[3:] < oldest_kept:
            out.append(p)
    return out


def stale_leftovers(base: Path, now: float) -> list[Path]:
    """Staging/old directories of interrupted writes, once they are a day old."""
    if not base.is_dir():
        return []
    return [
        p
        for p in base.iterdir()
        if p.name.startswith(".dt=")
        and p.name.endswith((".staging", ".old"))
        and now - p.stat().st_mtime > LEFTOVER_AGE_SECONDS
    ]


def logged_model_id(version) -> str | None:
    """The logged model behind a registry version. MLflow 3 leaves ``model_id`` empty on
    versions made by ``log_model(registered_model_name=...)``; their source names it."""
    source = version.source or ""
    if version.model_id:
        return version.model_id
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def prune_versions(settings: Settings, dry_run: bool = False) -> list[str]:
    """Delete registered versions beyond the newest ``keep_versions``, sparing aliased ones."""
    from models import registry

    c = registry.client(settings)
    name = settings.model_name
    try:
        aliased = set(c.get_registered_model(name).aliases.values())
    except Exception:  # noqa: BLE001 - no registered model yet: nothing to prune
        return []
    versions = sorted(
        (str(v.version) for v in c.search_model_versions(f"name='{name}'")), key=int, reverse=True
    )
    doomed = [
        v
        for v in versions[settings.retention.keep_versions :]
        if v not in {str(a) for a in aliased}
    ]
    for v in doomed:
        if dry_run:
            continue
        model_id = logged_model_id(c.get_model_version(name, v))
        c.delete_model_version(name, v)
        if model_id:  # the version's files (model.keras, TFLite): the bulk of the store
            location = c.get_logged_model(model_id).artifact_location
            c.delete_logged_model(model_id)
            if location.startswith("file://"):
                shutil.rmtree(Path(urlparse(location).path), ignore_errors=True)
    return doomed


def apply_retention(ds: str, settings: Settings, dry_run: bool = False) -> dict:
    """Remove what the policy no longer keeps; return (and record) what went and how much."""
    check_ds(ds)
    check_policy(settings)
    started = time.perf_counter()
    layout = Layout(settings.data_root)
    cfg = settings.retention
    removed: dict[str, list[str]] = {}
    freed = 0
    now = time.time()
    for parts, setting in KINDS.items():
        base = layout.root.joinpath(*parts)
        doomed = expired_partitions(base, ds, getattr(cfg, setting)) + stale_leftovers(base, now)
        for path in doomed:
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if not dry_run:
                shutil.rmtree(path)
        if doomed:
            removed["/".join(parts)] = [p.name for p in doomed]
    versions = prune_versions(settings, dry_run)
    summary = {
        "ds": ds,
        "dry_run": dry_run,
        "removed_partitions": removed,
        "removed_versions": versions,
        "freed_bytes": freed,
        "seconds": round(time.perf_counter() - started, 2),
    }
    summary = write_summary(layout, summary, CleanupSummary)
    log.info(
        "retention %s: %d partitions, %d model versions, %.1f MB%s",
        ds,
        sum(len(v) for v in removed.values()),
        len(versions),
        freed / 1e6,
        " (dry run)" if dry_run else "",
    )
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", default=dt.date.today().isoformat(), help="today (YYYY-MM-DD)")
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(apply_retention(check_ds(args.ds), load_settings(args.config), args.dry_run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
