"""Turn one day's raw delta into clean events, a catalog snapshot and labelled examples.

Run it with ``python -m jobs.preprocess --ds 2026-11-20`` or from the nightly DAG. Reads
``raw/events/dt=<ds>`` and ``raw/items/dt=<ds>`` (JSON lines, optionally gzipped) under the
data root and writes, each partition replaced in whole:

* ``clean/events/dt=<ds>``: valid events, deduplicated by ``event_id``;
* ``quarantine/events/dt=<ds>`` and ``quarantine/items/dt=<ds>``: rejected rows with a
  ``reason`` column and the raw line where it could not be parsed;
* ``state/items/dt=<ds>``: the catalog after the day's changes (previous snapshot + delta);
* ``examples/dt=<ds>``: one row per (request, item) with hashed ids, dense features,
  click/purchase labels and a train/holdout split;
* ``runs/dt=<ds>/preprocess.json``: counts that reconcile
  (``rows_in == clean + quarantined + duplicates``) and timings.

Rules (documented in README, "Preprocessing rules"):

* a delivery is refused whole (:class:`BadDeliveryError`, before Spark reads it) when a file
  cannot be read to its end (a cut-off gzip), the events files hold no line, or a file's lines
  never carry a key field (renamed or dropped); see :func:`check_delivery`;
* an event is quarantined, with the first matching reason, when the line is not valid JSON or
  a field has the wrong type, a key (event_id, event_type, item_id, event_time) is missing,
  the type is unknown, the time cannot be parsed, lies more than ``future_slack_minutes``
  after the end of the day, or more than ``max_late_days`` before its start, or the price
  or position is negative;
* duplicates by ``event_id`` keep the earliest copy (by event time, then file name, then the
  line first delivered); late events (stamped before the logical
  day but within ``max_late_days``) are kept in the day they arrive unless an event with the
  same id was already cleaned on an earlier day, in which case they count as duplicates;
* an event without a user id (a guest order) is valid: it counts for the item state
  (popularity, trend, recency), never for user state, examples or ranking cases;
* held-out requests (:func:`holdout_flag`, ``holdout_fraction`` of them by a hash of the
  request, or of the session or user where there is none) feed evaluation only: never
  training negatives, never the feature state;
* labels: an impression is clicked (purchased) when a click (purchase) with the same
  ``request_id`` and ``item_id`` exists that day. Logs without impressions get, for each
  positive (user, item), ``negatives_per_positive`` negatives drawn with a seeded hash: a
  ``uniform_negative_share`` of them uniformly from the known items (those seen before the
  day, plus the items of the day's training requests), the rest from the day's training
  positives, so popular items are drawn more often (popularity-sampled negatives);
* ranking cases (:mod:`jobs.ranking`): each held-out positive among sampled candidates,
  with the same features as the examples, in ``ranking/dt=<ds>``.

I/O (``read_*``/``write_*``) is kept apart from the pure DataFrame transforms, which the
tests call on tiny frames.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import logging
import shutil
import time
import zlib
from pathlib import Path

from core import features
from core.contract import EVENT_FIELDS, EVENT_TYPES, ITEM_FIELDS, KEY_FIELDS, POSITIVE_TYPES
from core.layout import Layout, check_ds, check_hour, day_layout, publish_dir, staging_dir
from core.settings import PreprocessSettings, Settings, load_settings
from core.summaries import PreprocessSummary, write_summary
from jobs import ranking
from jobs.feature_state import day_counts, online_tables, read_state, update_state, write_state

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
LINE = "_line"  # increases with the line's place in the delivery
# Clean event columns whose values (nearly) never repeat: no Parquet dictionary for them.
UNIQUE_EVENT_COLUMNS = ("event_id", "session_id", "request_id")


# Fields no record can do without: a file whose lines never carry one of them (a renamed or
# dropped field) is refused whole instead of quarantining every row of the day.
SAMPLE_LINES = 1000  # lines per file whose field names check_delivery looks at


class MissingDeltaError(FileNotFoundError):
    """The day's raw delta is not there (yet)."""


class BadDeliveryError(ValueError):
    """A delivered file cannot be read as the data contract says; the message names it."""


def _schema(fields):
    from pyspark.sql import types as T

    names = {"string": T.StringType(), "long": T.LongType(), "double": T.DoubleType()}
    return T.StructType(
        [T.StructField(n, names[t], True) for n, t in fields]
        + [T.StructField(CORRUPT, T.StringType(), True)]
    )


def data_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(("_", ".")) and ".json" in p.name
    )


def hour_of(folder: Path) -> int:
    """The hour of a ``hour=<HH>`` delivery folder; :class:`BadDeliveryError` if it names
    no hour of the day (``hour=24``, ``hour=1pm``)."""
    try:
        return check_hour(int(folder.name.removeprefix("hour=")))
    except ValueError:
        raise BadDeliveryError(
            f"{folder}: not an hour of the day (expected hour=00 .. hour=23)"
        ) from None


def delivered_files(path: Path, through_hour: int | None = None) -> list[Path]:
    """The files of a day's delivery ``raw/<kind>/dt=<ds>``.

    A day arrives whole (files in the folder), by hour (``hour=<HH>/`` folders, each complete
    once its ``_SUCCESS`` is written), or both. For the night (``through_hour`` None) the
    whole day wins when it is there (it is the consolidated delivery: reading the hours too
    would count each event twice), else every complete hour. An intra-day run reads the
    complete hours up to ``through_hour``; an hour still being written is left for the next
    run, and a late hour is read by the first run after it arrives.
    """
    if through_hour is None and (whole := data_files(path)):
        return whole
    files = []
    for folder in sorted(path.glob("hour=*")) if path.is_dir() else []:
        hour = hour_of(folder)
        if through_hour is not None and hour > through_hour:
            continue
        if (folder / "_SUCCESS").exists():
            files += data_files(folder)
        else:
            log.info("%s: no _SUCCESS yet, left for a later run", folder)
    return files


# --- read -------------------------------------------------------------------------------
def require_events(layout: Layout, ds: str) -> Path:
    """The day's events directory; :class:`MissingDeltaError` when it holds no event file
    (for an intra-day layout: none through its hour)."""
    path = layout.raw_events(check_ds(ds))
    if not delivered_files(path, layout.hour):
        through = "" if layout.hour is None else f" through hour {layout.hour:02d}"
        raise MissingDeltaError(
            f"no event files (*.jsonl[.gz]) in {path} or its complete hour folders{through}"
        )
    return path


def check_delivery(
    path: Path, fields, allow_empty: bool | None = None, through_hour: int | None = None
) -> list[str]:
    """Check a delivery's files before Spark reads them, so a broken one stops with a readable
    :class:`BadDeliveryError` naming the file, not a Java stack trace or a quarantined day:

    * a ``.gz`` file must decompress to its end (a cut-off or corrupt file is refused);
    * the files must hold at least one line, unless ``allow_empty`` (default: only a catalog
      delta, ``ITEM_FIELDS``, may be empty: no changes that day);
    * each key field (:data:`KEY_FIELDS`) of ``fields`` must appear in the first
      :data:`SAMPLE_LINES` JSON objects of every file; the refusal names the fields seen
      instead (a rename such as ``item_id`` -> ``itemId``).

    Fields outside the contract are ignored by the explicit schema; they are logged and
    returned. The files are :func:`delivered_files` (``through_hour``: an intra-day run's).
    """
    files = delivered_files(path, through_hour)
    if not files:
        raise MissingDeltaError(f"no data files (*.jsonl[.gz]) in {path}")
    if allow_empty is None:
        allow_empty = fields == ITEM_FIELDS
    names = [n for n, _ in fields]
    keys = [n for n in KEY_FIELDS if n in names]
    has_lines, unexpected = False, set()
    for file in files:
        lines, seen = _scan_file(file)
        has_lines = has_lines or lines > 0
        extra = sorted(seen - set(names))
        unexpected.update(extra)
        missing = [k for k in keys if seen and k not in seen]
        if missing:
            instead = f"; fields outside the contract: {', '.join(extra)}" if extra else ""
            raise BadDeliveryError(
                f"{file}: no line of the first {lines} has the key field(s) {', '.join(missing)}"
                f" (renamed or dropped?){instead}"
            )
    if not has_lines and not allow_empty:
        raise BadDeliveryError(
            f"{path}: the delivery has no lines ({', '.join(f.name for f in files)} empty)"
        )
    unexpected = sorted(unexpected)
    if unexpected:
        log.warning("%s: fields outside the contract, ignored: %s", path, ", ".join(unexpected))
    return unexpected


def _scan_file(file: Path) -> tuple[int, set[str]]:
    """Non-blank lines among the first :data:`SAMPLE_LINES` and the keys of their JSON
    objects; a ``.gz`` file is read to its end, so a truncated one is found here."""
    lines, seen = 0, set()
    is_gzip = file.name.endswith(".gz")
    try:
        with (gzip.open if is_gzip else open)(file, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                lines += 1
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    seen.update(row)
                if lines >= SAMPLE_LINES:
                    break
            while is_gzip and fh.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise BadDeliveryError(
            f"{file}: cannot be read to its end, truncated or corrupt ({exc}); "
            "deliver the file again"
        ) from None
    return lines, seen


def read_json_lines(spark, path: Path, fields, through_hour: int | None = None):
    """Parse the delivery's JSON lines by an explicit schema, one row per non-blank line.

    The files are checked first (:func:`check_delivery`). A line that is not one JSON object
    of the schema's types (cut off, an array, text where a number belongs) still becomes one
    row, with its text in ``_corrupt_record``: no line is lost or split into several rows, so
    the stage's ``rows_in`` is the number of lines delivered.
    """
    from pyspark.sql import functions as F

    check_delivery(path, fields, through_hour=through_hour)
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    files = delivered_files(path, through_hour)
    lines = spark.read.text([str(p) for p in files]).select(
        "value",
        F.input_file_name().alias("source_file"),
        F.monotonically_increasing_id().alias(LINE),  # the delivery's order, before a shuffle
    )
    df = (
        spread_over_cores(spark, lines)
        .filter(~F.col("value").rlike(r"^\s*$"))
        .select(F.from_json("value", _schema(fields), options).alias("_row"), "source_file", LINE)
        .select("_row.*", "source_file", LINE)
    )
    return df


def spread_over_cores(spark, lines):
    """``lines`` in at least as many partitions as Spark has cores.

    A day often arrives as one .gz file, which Spark reads in one task: reading the text is
    cheap, parsing it is not, so the lines are hash-partitioned by their text before parsing.
    """
    cores = spark.sparkContext.defaultParallelism
    if lines.rdd.getNumPartitions() >= cores:
        return lines
    return lines.repartition(cores, "value")


def read_previous_event_ids(spark, layout: Layout, ds: str, days: int):
    """Event ids cleaned on the ``days`` days before ``ds`` (to drop re-delivered late events)."""
    paths = [str(layout.clean_events(d)) for d in layout.days_before("clean/events", ds, days)]
    if not paths:
        return None
    return spark.read.parquet(*paths).select("event_id")


def read_previous_item_state(spark, layout: Layout, ds: str):
    prev = layout.latest_before("state/items", ds)
    return spark.read.parquet(str(layout.item_state(prev))) if prev else None


# --- transforms (pure) ------------------------------------------------------------------
def quarantine_reason_events(df, ds: str, cfg: PreprocessSettings):
    """Add ``reason``: why an event row is rejected, or null when it is valid."""
    from pyspark.sql import functions as F

    day_start = dt.datetime.fromisoformat(ds)
    latest = day_start + dt.timedelta(days=1, minutes=cfg.future_slack_minutes)
    earliest = day_start - dt.timedelta(days=cfg.max_late_days)
    ts = F.try_to_timestamp(F.col("event_time"))
    blank = lambda c: F.col(c).isNull() | (F.trim(F.col(c)) == "")  # noqa: E731
    checks = [
        (F.col(CORRUPT).isNotNull(), "malformed_line"),
        (blank("event_id"), "null_event_id"),
        (blank("event_type"), "null_event_type"),
        (~F.col("event_type").isin(*EVENT_TYPES), "unknown_event_type"),
        (blank("item_id"), "null_item_id"),
        (blank("event_time") | ts.isNull(), "bad_event_time"),
        (ts > F.lit(latest), "future_event_time"),
        (ts < F.lit(earliest), "too_late"),
        (F.col("price") < 0, "negative_price"),
        (F.col("position") < 0, "negative_position"),
    ]
    reason = F.lit(None).cast("string")
    for cond, name in reversed(checks):
        reason = F.when(cond, F.lit(name)).otherwise(reason)
    # A blank user id is no user id: a guest.
    user = F.when(~blank("user_id"), F.col("user_id"))
    return df.withColumn("reason", reason).withColumn("event_ts", ts).withColumn("user_id", user)


def mark_duplicates(tagged, previous_ids=None):
    """Add ``duplicate``: true for a valid row (``reason`` null) that is not the earliest valid
    copy of its event id, or whose id was already cleaned on an earlier day.

    Every input row stays (one row in, one row out), so one pass over the result counts
    clean, quarantined and duplicate rows together.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    valid = F.col("reason").isNull()
    # Valid rows first, so a valid row's rank counts only the valid copies before it.
    order = Window.partitionBy("event_id").orderBy(valid.desc(), "event_ts", "source_file", LINE)
    ranked = tagged.withColumn("_rank", F.row_number().over(order))
    repeated = F.col("_rank") > 1
    if previous_ids is not None:
        seen = previous_ids.withColumn("_seen", F.lit(True)).dropDuplicates(["event_id"])
        ranked = ranked.join(seen, "event_id", "left")
        repeated = repeated | F.col("_seen").isNotNull()
    return ranked.withColumn("duplicate", valid & repeated).drop("_rank", "_seen")


def keep_raw_for_quarantine(marked):
    """Null the raw ``event_time`` text and ``source_file`` of valid rows: only quarantined
    rows keep them (to show what arrived, from where). The cached frame is then smaller."""
    from pyspark.sql import functions as F

    bad = F.col("reason").isNotNull()
    return marked.withColumn("event_time", F.when(bad, F.col("event_time"))).withColumn(
        "source_file", F.when(bad, F.col("source_file"))
    )


def clean_event_columns(clean, ds: str):
    from pyspark.sql import functions as F

    return clean.select(
        "event_id",
        F.col("event_ts").alias("event_time"),
        "event_type",
        "user_id",
        "session_id",
        "request_id",
        "query",
        "item_id",
        "position",
        "price",
        (F.to_date("event_ts") < F.lit(ds).cast("date")).alias("is_late"),
        F.lit(ds).alias("ds"),
    )


def merge_item_state(previous, changes):
    """Catalog after the day: previous snapshot with the day's changes applied per item."""
    from pyspark.sql import functions as F

    cols = [n for n, _ in ITEM_FIELDS]
    changes = changes.select(*cols)
    if previous is None:
        return changes
    prev = previous.select(*cols).alias("p")
    new = changes.alias("n")
    merged = prev.join(new, F.col("p.item_id") == F.col("n.item_id"), "full_outer")
    return merged.select(
        F.coalesce("n.item_id", "p.item_id").alias("item_id"),
        *[F.coalesce(f"n.{c}", f"p.{c}").alias(c) for c in cols if c != "item_id"],
    )


def clean_items(items):
    """Split raw catalog rows into (valid deduplicated changes, quarantined rows with reason)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    reason = (
        F.when(F.col(CORRUPT).isNotNull(), "malformed_line")
        .when(F.col("item_id").isNull() | (F.trim("item_id") == ""), "null_item_id")
        .when(F.col("price") < 0, "negative_price")
    )
    tagged = items.withColumn("reason", reason)
    bad = tagged.filter(F.col("reason").isNotNull())
    # The last line of a delivery wins when an item changes twice in one day.
    order = Window.partitionBy("item_id").orderBy(F.col(LINE).desc())
    good = (
        tagged.filter(F.col("reason").isNull())
        .withColumn("_rank", F.row_number().over(order))
        .filter("_rank = 1")
        .drop("_rank", "reason", LINE)
    )
    return good, bad


def event_group():
    """The request an event belongs to: its request id, else its session, else its user (the
    same key the examples of a day without impressions are grouped and split by)."""
    from pyspark.sql import functions as F

    return F.coalesce("request_id", "session_id", "user_id")


def holdout_flag(group, fraction: float):
    """True for the groups (requests) held out for evaluation: a seeded hash of the group's
    id, so every stage and every rerun agrees on the split."""
    from pyspark.sql import functions as F

    group = F.col(group) if isinstance(group, str) else group
    return F.pmod(F.xxhash64(F.lit("split"), group), F.lit(10_000)) < int(fraction * 10_000)


def known_items(*frames):
    """Distinct ``item_id`` of the given frames (None skipped): the pool that uniform
    negatives and ranking candidates are drawn from."""
    frames = [f.select("item_id") for f in frames if f is not None]
    pool = frames[0]
    for other in frames[1:]:
        pool = pool.unionByName(other)
    return pool.filter("item_id IS NOT NULL").distinct()


def label_impressions(events):
    """One row per shown (request, item) with click/purchase labels from the same request.

    One aggregation over (request_id, item_id) gives both what was shown and what followed
    it: one pass and one shuffle, no join of impressions with outcomes. The rows are shuffled
    and sorted by the key before it: the aggregation keeps strings (user, query), so Spark
    sorts for it, and sorting once beats a partial aggregation (which would sort, and
    hardly merges rows: a (request, item) has one impression) then a final one.
    """
    from pyspark.sql import functions as F

    kind = F.col("event_type")
    shown = kind == "impression"
    only_shown = lambda c: F.when(shown, F.col(c))  # noqa: E731 - impression's own values
    keys = ["request_id", "item_id"]
    return (
        events.filter(F.col("request_id").isNotNull() & kind.isin("impression", *POSITIVE_TYPES))
        .repartition(*keys)
        .sortWithinPartitions(*keys)
        .groupBy(*keys)
        .agg(
            F.max(shown).alias("_shown"),
            F.first(only_shown("user_id"), ignorenulls=True).alias("user_id"),
            F.first(only_shown("query"), ignorenulls=True).alias("query"),
            F.min(only_shown("position")).alias("position"),
            F.first(only_shown("price"), ignorenulls=True).alias("price"),
            F.max((kind == "click").cast("int")).alias(features.LABEL),
            F.max((kind == "purchase").cast("int")).alias(features.PURCHASE_LABEL),
        )
        .filter("_shown")
        .drop("_shown")
    )


def sample_negatives(events, k: int, seed: int, pool=None, uniform_share=0.0, holdout=0.0):
    """Labelled rows for logs without impressions: positives plus ``k`` sampled negatives each.

    A positive is a (user, item) with a click, add-to-cart or purchase in a request (or
    session when there is no request id). Of its ``k`` negatives, ``round(k *
    uniform_share)`` are drawn uniformly from ``pool`` (a frame of ``item_id``: every known
    item equally often) and the rest from the positive events of the training requests, so
    an item is drawn in proportion to its popularity that day. Uniform negatives let the
    model learn popularity; popularity-drawn ones make it learn what beyond popularity makes
    a user buy. Neither draws from held-out requests (``holdout``: their share, see
    :func:`holdout_flag`): an item bought only there would otherwise be taught as a
    negative. Draws are a seeded hash, never an item the group acted on.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    acts = events.filter(F.col("event_type").isin(*POSITIVE_TYPES)).withColumn(
        "group_id", event_group()
    )
    positives = acts.groupBy("group_id", "user_id", "item_id").agg(
        F.first("query", ignorenulls=True).alias("query"),
        F.first("price", ignorenulls=True).alias("price"),
        F.lit(1).alias(features.LABEL),
        F.max((F.col("event_type") == "purchase").cast("int")).alias(features.PURCHASE_LABEL),
    )
    k_uniform = round(k * uniform_share) if pool is not None else 0
    popular = acts.filter(~holdout_flag("group_id", holdout)).select(
        F.lit("p").alias("_src"), F.col("item_id").alias("neg_item_id"),
        F.col("price").alias("neg_price"),
    )  # fmt: skip
    sources = [popular]
    if k_uniform:
        sources.append(
            pool.select(
                F.lit("u").alias("_src"),
                F.col("item_id").alias("neg_item_id"),
                F.lit(None).cast("double").alias("neg_price"),  # the catalog's price
            )  # fmt: skip
        )
    draws_from = sources[0] if len(sources) == 1 else sources[0].unionByName(sources[1])
    draws_from = draws_from.withColumn(
        "_idx", F.row_number().over(Window.partitionBy("_src").orderBy("neg_item_id")) - 1
    )
    sizes = {r["_src"]: r["n"] for r in draws_from.groupBy("_src").count().withColumnRenamed(
        "count", "n").collect()}  # fmt: skip
    n_pool = F.when(F.col("_src") == "u", F.lit(sizes.get("u", 0))).otherwise(
        F.lit(sizes.get("p", 0))
    )
    draws = (
        positives.select("group_id", "user_id", F.col("item_id").alias("_pos_item"), "query")
        .withColumn("_j", F.explode(F.sequence(F.lit(1), F.lit(k))))
        .withColumn("_src", F.when(F.col("_j") <= k_uniform, "u").otherwise("p"))
        .filter(n_pool > 0)
    )
    # The positive's item is part of the hash: k draws per positive, not per group.
    draws = draws.withColumn(
        "_idx",
        F.pmod(F.xxhash64(F.lit(seed), "group_id", "user_id", "_pos_item", "_j"), n_pool),
    ).join(draws_from, ["_src", "_idx"])
    negatives = (
        draws.select(
            "group_id",
            "user_id",
            F.col("neg_item_id").alias("item_id"),
            "query",
            F.col("neg_price").alias("price"),
        )
        .join(positives.select("group_id", "item_id"), ["group_id", "item_id"], "left_anti")
        .dropDuplicates(["group_id", "item_id"])
        .withColumn(features.LABEL, F.lit(0))
        .withColumn(features.PURCHASE_LABEL, F.lit(0))
    )
    return (
        positives.unionByName(negatives)
        .withColumnRenamed("group_id", "request_id")
        .withColumn("position", F.lit(None).cast("long"))
    )


def build_examples(labelled, item_state, cfg: PreprocessSettings, ds: str, feature_state=None):
    """Join catalog attributes and point-in-time state features, hash ids, build dense
    features and the holdout split. ``feature_state`` must be as of a day before ``ds``."""
    from pyspark.sql import functions as F

    from jobs.feature_state import add_state_features

    catalog = item_state.select(
        "item_id",
        "title",
        "category",
        "brand",
        "launch_date",
        F.col("price").alias("catalog_price"),
    )
    df = labelled.join(catalog, "item_id", "left")
    df = add_state_features(df, feature_state, ds, cfg)
    price = F.coalesce("price", "catalog_price")
    df = df.withColumn("price", price)
    for name, (source, _) in features.ID_FEATURES.items():
        df = df.withColumn(features.id_column(name), features.spark_hash_bucket(name, source))
    for column, source in features.TEXT_SOURCES.items():
        df = df.withColumn(column, features.spark_tokens(column, source))
    holdout = holdout_flag("request_id", cfg.holdout_fraction)
    df = (
        df.withColumn("log_price", features.spark_log_price("price"))
        .withColumn("position", features.spark_position_feature("position"))
        .withColumn("split", F.when(holdout, "holdout").otherwise("train"))
    )
    return df.select(*[F.col(c).cast(t).alias(c) for c, t in features.EXAMPLE_SCHEMA.items()])


def build_ranking(spark, layout: Layout, ds: str, positives, pool, acted, catalog, feature_state,
                  cfg: PreprocessSettings):  # fmt: skip
    """Ranking cases of day ``ds`` (:mod:`jobs.ranking`): each of ``positives`` among
    candidates drawn from ``pool``, never one of ``acted`` (the user's actions that day),
    with the examples' features (``catalog`` and ``feature_state`` as :func:`build_examples`
    takes them) and the reference ``popularity`` of the days before."""
    from pyspark.sql import functions as F

    cases = ranking.case_rows(positives, pool, acted, cfg.ranking_candidates, cfg.seed)
    rows = build_examples(cases, catalog, cfg, ds, feature_state)
    counts = ranking.popularity(spark, layout, ds, cfg.popularity_days)
    rows = ranking.with_popularity(rows.withColumn("split", F.lit("holdout")), counts)
    return rows.select(*ranking.RANKING_COLUMNS)


# --- write ------------------------------------------------------------------------------
class StagedWrites:
    """The partitions of one run, each written to a staging directory beside its final place
    and published together (:meth:`publish`) once all are written and the counts reconcile:
    a run that fails or is killed half-way publishes nothing, and a rerun replaces whole."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def write(self, df, final: Path, partitions: int | None = None, plain=()) -> Path:
        """Write ``df`` aside for ``final``; returns the staging path (to read it back).

        ``plain`` names columns of (nearly) unique values, such as ids, written without a
        Parquet dictionary: building one costs time for no gain in size.
        """
        tmp = staging_dir(final)
        options = {f"parquet.enable.dictionary#{c}": "false" for c in plain}
        out = df.coalesce(partitions) if partitions else df
        out.write.options(**options).mode("overwrite").parquet(str(tmp))
        self.pending.append((tmp, final))
        return tmp

    @staticmethod
    def read(spark, staged: Path):
        """Read a staged partition back (by its files: Spark skips a directory named ``.*``)."""
        files = sorted(str(p) for p in Path(staged).glob("*.parquet"))
        return spark.read.parquet(*(files or [str(staged)]))

    def publish(self) -> None:
        for tmp, final in self.pending:
            publish_dir(tmp, final)
        self.pending = []

    def discard(self) -> None:
        for tmp, _ in self.pending:
            shutil.rmtree(tmp, ignore_errors=True)
        self.pending = []


# --- the stage --------------------------------------------------------------------------
def preprocess_day(spark, ds: str, settings: Settings, hour: int | None = None) -> dict:
    """Run the whole stage for logical date ``ds``; return the run summary (small dict).
    With ``hour``: the day so far (its complete hours through ``hour``), into the day's
    hour partitions (:class:`core.layout.HourLayout`).

    Nothing of the day is published unless every output is written and the rows written
    reconcile with the rows read: ``rows_in == clean + quarantined + duplicates``.
    """
    layout = day_layout(settings, ds, hour)
    log.info("preprocess %s: reading %s", ds, require_events(layout, ds))
    staged = StagedWrites()
    try:
        summary = _preprocess(spark, ds, settings, layout, staged)
        staged.publish()
    except BaseException:
        staged.discard()
        raise
    summary = write_summary(layout, summary, PreprocessSummary)
    log.info(
        "preprocess %s: %d rows in, %d clean, %d quarantined, %d duplicates, %d examples (%.1fs)",
        ds, summary["rows_in"], summary["clean"], summary["quarantined"],
        summary["duplicates"], summary["examples"], summary["seconds"],
    )  # fmt: skip
    return summary


class _Steps:
    """Seconds per step of the stage, logged as they end (progress on a long day)."""

    def __init__(self, ds: str) -> None:
        self.ds, self.seconds, self.started = ds, {}, time.perf_counter()
        self._last = self.started

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 2)
        self._last = now
        log.info("preprocess %s: %s done in %.1fs", self.ds, step, self.seconds[step])

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.started, 2)


def _preprocess(spark, ds: str, settings: Settings, layout: Layout, staged: StagedWrites) -> dict:
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    cfg = settings.preprocess
    steps = _Steps(ds)

    # Events: parse, tag the reason of each bad row, mark duplicates; one cached frame with
    # every input row, counted in one pass.
    raw = read_json_lines(spark, layout.raw_events(ds), EVENT_FIELDS, layout.hour)
    tagged = quarantine_reason_events(raw, ds, cfg)
    previous_ids = read_previous_event_ids(spark, layout, ds, cfg.max_late_days)
    marked = keep_raw_for_quarantine(mark_duplicates(tagged, previous_ids)).cache()
    is_clean = F.col("reason").isNull() & ~F.col("duplicate")
    late = is_clean & (F.to_date("event_ts") < F.lit(ds).cast("date"))
    counts = (
        marked.groupBy("reason", "duplicate", (F.col("event_type") == "impression").alias("imp"))
        .agg(
            F.count("*").alias("n"),
            F.sum(late.cast("int")).alias("late"),
            F.sum((is_clean & F.col("user_id").isNull()).cast("int")).alias("anonymous"),
        )
        .collect()
    )
    rows_in = sum(r["n"] for r in counts)
    by_reason: dict[str, int] = {}
    for r in counts:
        if r["reason"] is not None:
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + r["n"]
    n_bad = sum(by_reason.values())
    n_dupes = sum(r["n"] for r in counts if r["reason"] is None and r["duplicate"])
    n_clean = rows_in - n_bad - n_dupes
    n_late = sum(r["late"] or 0 for r in counts)
    n_anonymous = sum(r["anonymous"] or 0 for r in counts)
    has_impressions = any(r["reason"] is None and not r["duplicate"] and r["imp"] for r in counts)
    steps.done("parse_dedupe_count")

    quarantine_cols = ["reason", "source_file", CORRUPT] + [n for n, _ in EVENT_FIELDS]
    # One file, gathered by a (small) shuffle: coalesce(1) would scan every row in one task.
    bad = marked.filter(F.col("reason").isNotNull()).select(*quarantine_cols).repartition(1)
    bad_path = staged.write(bad, layout.quarantine_events(ds))
    clean = clean_event_columns(marked.filter(is_clean), ds)
    clean_path = staged.write(clean, layout.clean_events(ds), plain=UNIQUE_EVENT_COLUMNS)
    # Reconcile what was written (Parquet footers) with what was read, before any publish.
    written = {
        "clean": staged.read(spark, clean_path).count(),
        "quarantined": staged.read(spark, bad_path).count(),
    }
    # (n_clean is rows_in - n_bad - n_dupes: matching both counts is the reconciliation.)
    if written != {"clean": n_clean, "quarantined": n_bad}:
        raise RuntimeError(
            f"row counts do not reconcile for {ds}: {rows_in} rows in; written {written}, "
            f"{n_dupes} duplicates; expected clean {n_clean}, quarantined {n_bad}"
        )
    steps.done("write_events")

    # Catalog: previous snapshot + today's valid changes.
    items_in = items_bad = 0
    items_raw = None
    items_path = layout.raw_items(ds)
    previous_state = read_previous_item_state(spark, layout, ds)
    if delivered_files(items_path, layout.hour):
        items_raw = read_json_lines(spark, items_path, ITEM_FIELDS, layout.hour).cache()
        items_in = items_raw.count()
        changes, items_rejected = clean_items(items_raw)
        rejected_path = staged.write(
            items_rejected.select("reason", "source_file", CORRUPT, *[n for n, _ in ITEM_FIELDS]),
            layout.quarantine_items(ds),
            1,
        )
        items_bad = staged.read(spark, rejected_path).count()
        state = merge_item_state(previous_state, changes)
    elif previous_state is not None:
        state = previous_state
    else:
        state = spark.createDataFrame([], _schema(ITEM_FIELDS)).drop(CORRUPT)
    state = staged.read(spark, staged.write(state, layout.item_state(ds), 2))
    steps.done("catalog")

    # Examples and ranking cases need a user; guests' events feed the item state only.
    known = clean.filter(F.col("user_id").isNotNull())
    acted = known.filter(F.col("event_type").isin(*POSITIVE_TYPES))
    in_holdout = holdout_flag(event_group(), cfg.holdout_fraction)
    previous = read_state(spark, layout, ds)  # as of the day before: point in time
    # Items known before the day, plus those chosen in its training requests.
    pool = known_items(
        previous_state, previous.item_stats if previous else None, acted.filter(~in_holdout)
    ).cache()
    labelled = (
        label_impressions(known)
        if has_impressions
        else sample_negatives(
            known,
            cfg.negatives_per_positive,
            cfg.seed,
            pool,
            cfg.uniform_negative_share,
            cfg.holdout_fraction,
        )  # fmt: skip
    ).cache()
    examples = build_examples(labelled, state, cfg, ds, previous)
    # Counted while written (an observation), not by reading the files again.
    seen = Observation(f"examples {ds}")
    examples = examples.observe(
        seen,
        F.count(F.lit(1)).alias("n"),
        F.sum((F.col("split") == "holdout").cast("long")).alias("holdout"),
        F.sum(features.LABEL).alias("clicks"),
    )
    staged.write(examples, layout.examples(ds), 2, plain=("request_id",))
    n_examples, n_holdout, clicks = (seen.get[k] or 0 for k in ("n", "holdout", "clicks"))
    steps.done("examples")

    held_out = labelled.filter(
        (F.col(features.LABEL) == 1) & holdout_flag("request_id", cfg.holdout_fraction)
    )
    rows = build_ranking(spark, layout, ds, held_out, pool, acted, state, previous, cfg)
    case_count = Observation(f"ranking {ds}")
    rows = rows.observe(case_count, F.sum(features.LABEL).alias("cases"))
    staged.write(rows, layout.ranking(ds), 2, plain=("request_id",))
    n_cases = case_count.get["cases"] or 0
    steps.done("ranking_cases")

    # Held-out requests never feed the state (evaluation data stays unseen by training);
    # guests' are never evaluated, so all of theirs count.
    evaluated = in_holdout & F.col("user_id").isNotNull()
    day = day_counts(clean.filter(~evaluated), state, ds)
    written = write_state(
        update_state(previous, day, cfg.feature_half_life_days), layout, staged, spark
    )
    steps.done("feature_state")
    # What the online store serves tomorrow (serving.store loads it: the DAG's materialize).
    for name, table in online_tables(written, state, cfg).items():
        staged.write(table, layout.online_table(name, ds), 1)
    steps.done("online_features")
    labelled.unpersist()
    pool.unpersist()
    marked.unpersist()
    if items_raw is not None:
        items_raw.unpersist()
    return {
        "ds": ds,
        "through_hour": layout.hour,
        "rows_in": rows_in,
        "clean": n_clean,
        "quarantined": n_bad,
        "quarantined_by_reason": by_reason,
        "duplicates": n_dupes,
        "late_events": n_late,
        "anonymous": n_anonymous,
        "reconciled": True,  # checked against the written rows above, before publishing
        "items_in": items_in,
        "items_quarantined": items_bad,
        "catalog_items": state.count(),
        "labels_from": "impressions" if has_impressions else "sampled_negatives",
        "examples": n_examples,
        "train_examples": n_examples - n_holdout,
        "holdout_examples": n_holdout,
        "ranking_cases": n_cases,
        "state_as_of": previous.as_of if previous else None,
        "click_rate": clicks / n_examples if n_examples else 0.0,
        "examples_path": str(layout.examples(ds)),
        "step_seconds": steps.seconds,
        "seconds": steps.total,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--config", help="settings file (default freshrank.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from jobs.spark import get_spark

    settings = load_settings(args.config)
    summary = preprocess_day(get_spark(settings.preprocess), check_ds(args.ds), settings)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
