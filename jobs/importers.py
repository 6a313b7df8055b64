"""Import public e-commerce logs into the raw data contract, one day directory per UTC date.

Run it with::

    python -m jobs.importers taobao --input UserBehavior.csv --data-root var/data \
        [--fav add_to_cart|drop] [--since 2017-11-25 --until 2017-12-03]
    python -m jobs.importers retail --input online_retail.csv --data-root var/data \
        [--missing-user null|invoice] [--since ... --until ...]

or from Python with :func:`import_file`. It runs on Spark (the session of
:func:`jobs.spark.get_spark`), so a 100M-line file is read in parallel splits and never held
in memory. Input files may be gzipped; text must be UTF-8 (``iconv -f latin1 -t utf8`` the
Kaggle export of Online Retail first). Under the data root it writes:

    raw/events/dt=<day>/part-<format>-<tag>-NNNNN.jsonl.gz   events in the contract (README)
    raw/items/dt=<day>/items-<format>-<tag>-NNNNN.jsonl.gz   the items seen that day
    raw/*/dt=<day>/_SUCCESS                                  written with the day, last
    import_quarantine/<format>/<file name>/                 rows not imported (Parquet):
                                                            ``reason``, the raw ``line``
                                                            and what could be parsed
    runs/import/<format>-<file name>-<UTC time>.json        the summary (also returned)

``<tag>`` is a short hash of the input file's name. Each day directory is built aside and
swapped in whole (``layout.staging_dir``/``publish_dir``), keeping the files other sources
delivered for that day and replacing those of an earlier import of the same file: importing
a file twice leaves the same data, and several files (e.g. monthly exports) add up. Run one
import at a time per data root.

Formats and mapping rules
-------------------------

Tianchi/Taobao ``UserBehavior.csv`` (no header; ``user_id,item_id,category_id,
behavior_type,timestamp`` with unix seconds):

* ``pv`` -> ``click`` (a page view of an item is a click on it), ``cart`` -> ``add_to_cart``,
  ``buy`` -> ``purchase``, ``fav`` -> ``add_to_cart`` (a wish-list save is intent to buy);
  with ``--fav drop`` favourites are dropped and counted (``dropped_by_reason.fav``);
* ``session_id`` is ``<user_id>@<day>`` (the log has no sessions), so negatives are sampled
  away from every item the user touched that day; no request, query, position or price;
* items: ``category`` is the ``category_id`` (the latest of the day), no title/brand/price;
* days are UTC dates, like every day of the pipeline (the data set's Beijing-time days start
  at 16:00 UTC the day before).

Retail invoices like UCI Online Retail (header ``InvoiceNo,StockCode,Description,Quantity,
InvoiceDate,UnitPrice,CustomerID,Country``, in any order; the Online Retail II names
``Invoice``, ``Price`` and ``Customer ID`` work too). Each invoice line becomes one
``purchase``: ``session_id`` = the invoice, ``item_id`` = the stock code, ``price`` = the
unit price, no request id (so preprocessing samples negatives). Dates are ``M/d/yyyy H:mm``
(as in the UCI export), ``yyyy-MM-dd HH:mm:ss`` or ISO-8601; times without a zone are taken
as UTC. ``CustomerID`` ``17850.0`` is read as ``17850``. Items: ``title`` = the description,
``price`` = the unit price (the latest of the day).

* a cancelled invoice (``C...``, negative quantities: returns) is never a purchase: it goes
  to the import quarantine with reason ``return`` and is counted;
* so do bad-debt adjustments (``A...``, reason ``adjustment``), other lines with a quantity
  <= 0 (stock write-offs, ``non_positive_quantity``) and lines whose stock code is not a
  product (postage, discounts, fees: :data:`NON_PRODUCT_CODES`, reason ``non_product``).

Dirty rows
----------

Every line of the input is counted once, as written, quarantined (with the first matching
reason) or dropped by a rule: ``rows_in == rows_written + rows_quarantined + rows_dropped``,
overall and per day (``days``; rows whose time cannot be read are under ``no_day``), with
``rows_in`` counted by a separate pass over the file. Quarantine reasons: ``malformed_line``
(wrong number of fields, broken quoting), ``null_item_id``, ``unknown_behavior``,
``bad_timestamp`` (not a time, or outside 1970-2100), ``out_of_range`` (outside
``--since``/``--until``), and for retail ``null_invoice``, ``return``, ``adjustment``,
``bad_quantity``, ``non_positive_quantity``, ``bad_price``, ``non_product``. Dropped:
``blank_line``, ``header`` (header lines) and ``fav`` (with ``--fav drop``).

A row with a missing user id is written with ``user_id`` null: preprocessing keeps it as a
guest's purchase (item state only) and counts it as ``anonymous`` (``--missing-user
invoice`` instead gives retail rows without a customer the user ``guest-<invoice>``).

``event_id`` is ``<tb|rt>-`` + md5 of the file name and the line's text: re-importing a
file gives the same ids, and two identical lines of one file (a logged retry) get the same
id, so preprocessing counts the second as a duplicate.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.contract import EVENT_FIELDS, ITEM_NAMES
from core.layout import Layout, check_ds, publish_dir, staging_dir, write_json

log = logging.getLogger(__name__)

FORMATS = ("taobao", "retail")
ID_PREFIX = {"taobao": "tb", "retail": "rt"}
WRITTEN, QUARANTINED, DROPPED = "written", "quarantined", "dropped"
OUT_OF_RANGE = object()  # where a rule list checks the --since/--until window

TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
# behaviour -> event type; ``fav`` is configurable (ImportOptions.fav).
TAOBAO_BEHAVIOURS = {"pv": "click", "cart": "add_to_cart", "buy": "purchase"}

RETAIL_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
RETAIL_REQUIRED = RETAIL_COLUMNS[:-1]
# Header names of other exports of the same data (Online Retail II), compared lower-case
# without spaces or underscores.
RETAIL_ALIASES = {"invoice": "InvoiceNo", "price": "UnitPrice"}
RETAIL_DATE_FORMATS = ("M/d/yyyy H:mm", "M/d/yyyy H:mm:ss", "yyyy-MM-dd HH:mm")
# Stock codes of invoice lines that are not products: postage, carriage, discounts, manual
# corrections, bank and marketplace fees, samples, charity, tests.
NON_PRODUCT_CODES = (
    "POST",
    "DOT",
    "C2",
    "D",
    "M",
    "S",
    "B",
    "CRUK",
    "PADS",
    "BANK CHARGES",
    "AMAZONFEE",
    "ADJUST",
    "ADJUST2",
    "TEST001",
    "TEST002",
)
MAX_UNIX_SECONDS = 4_102_444_800  # 2100-01-01: anything later is a broken clock


@dataclass(frozen=True)
class ImportOptions:
    """Choices an import makes; all documented in the module docstring."""

    fav: str = "add_to_cart"  # taobao: "add_to_cart" or "drop"
    missing_user: str = "null"  # retail: "null" (preprocessing quarantines) or "invoice"
    since: str | None = None  # first day kept (YYYY-MM-DD), else out_of_range
    until: str | None = None  # last day kept
    rows_per_file: int = 1_000_000  # events per output file (about 30-60 MB gzipped)

    def __post_init__(self) -> None:
        if self.fav not in ("add_to_cart", "drop"):
            raise ValueError(f"fav must be add_to_cart or drop, got {self.fav!r}")
        if self.missing_user not in ("null", "invoice"):
            raise ValueError(f"missing_user must be null or invoice, got {self.missing_user!r}")
        for day in (self.since, self.until):
            if day is not None:
                check_ds(day)
        if self.rows_per_file < 1:
            raise ValueError("rows_per_file must be positive")


def source_tag(source: str) -> str:
    """Short, stable tag of an input file name, used in output file names."""
    return hashlib.md5(source.encode()).hexdigest()[:8]


def safe_name(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", source) or "input"


# --- read -------------------------------------------------------------------------------
def read_lines(spark, path: Path):
    """The file's lines as column ``value`` (gzip is decompressed by Spark)."""
    return spark.read.text(str(path))


def read_header(path: Path) -> str:
    """First line of a (possibly gzipped) text file, without the line break."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        return fh.readline().rstrip("\r\n")


def retail_columns(header: str) -> list[str]:
    """Canonical column names of a retail CSV header, in file order.

    Unknown columns are kept as ``_extra<i>`` and ignored; missing required columns raise.
    """
    names = next(csv.reader([header]))
    canonical = {c.lower(): c for c in RETAIL_COLUMNS}
    canonical.update(RETAIL_ALIASES)
    out = []
    for i, name in enumerate(names):
        key = re.sub(r"[\s_]", "", name.strip().lstrip("\ufeff")).lower()
        out.append(canonical.get(key, f"_extra{i}"))
    missing = [c for c in RETAIL_REQUIRED if c not in out]
    if missing:
        raise ValueError(
            f"retail header {header!r} lacks {missing}; expected {','.join(RETAIL_COLUMNS)}"
        )
    return out


# --- transforms (pure) ------------------------------------------------------------------
def _event_id(prefix: str, source: str, line):
    from pyspark.sql import functions as F

    return F.concat(F.lit(f"{prefix}-"), F.md5(F.concat(F.lit(f"{source}\n"), line)))


def _text(col):
    """Trimmed string, null when empty."""
    from pyspark.sql import functions as F

    trimmed = F.trim(col)
    return F.when(trimmed != "", trimmed)


def _classify(df, opts: ImportOptions, rules):
    """Add ``day``, then ``reason`` and ``status`` from the first matching rule.

    ``rules`` is an ordered list of ``(condition, reason, status)``; the day window of
    ``opts`` is checked where the rule list holds the marker ``OUT_OF_RANGE``.
    """
    from pyspark.sql import functions as F

    df = df.withColumn("day", F.date_format("event_ts", "yyyy-MM-dd"))
    window = F.lit(False)
    if opts.since:
        window = window | (F.col("day") < F.lit(opts.since))
    if opts.until:
        window = window | (F.col("day") > F.lit(opts.until))
    rules = [(window, "out_of_range", QUARANTINED) if r is OUT_OF_RANGE else r for r in rules]
    reason, status = F.lit(None).cast("string"), F.lit(WRITTEN)
    for cond, name, outcome in reversed(rules):
        cond = F.coalesce(cond, F.lit(False))
        reason = F.when(cond, F.lit(name)).otherwise(reason)
        status = F.when(cond, F.lit(outcome)).otherwise(status)
    return df.withColumn("reason", reason).withColumn("status", status)


def _event_time(ts):
    from pyspark.sql import functions as F

    return F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ss'Z'")


def parse_taobao(lines, source: str, opts: ImportOptions = ImportOptions()):
    """Tag each line of a UserBehavior CSV (column ``value``) with status, reason and the
    contract columns (plus ``category``/``title`` for the items, ``line`` and ``day``)."""
    from pyspark.sql import functions as F

    line = F.rtrim("value", F.lit("\r"))
    parts = F.split(line, ",", -1)

    def field(i):
        return _text(F.try_element_at(parts, F.lit(i + 1)))

    behaviours = dict(TAOBAO_BEHAVIOURS, fav="add_to_cart")
    df = lines.select(
        line.alias("line"),
        F.size(parts).alias("_n_fields"),
        field(0).alias("user_id"),
        field(1).alias("item_id"),
        field(2).alias("category"),
        F.lower(field(3)).alias("_behaviour"),
        field(4).try_cast("long").alias("_seconds"),
    )
    secs = F.col("_seconds")
    df = df.withColumn(
        "event_ts",
        F.when(secs.between(0, MAX_UNIX_SECONDS), F.timestamp_seconds(secs)),
    )
    mapping = F.create_map(*[F.lit(x) for kv in behaviours.items() for x in kv])
    col = F.col
    df = _classify(
        df,
        opts,
        [
            (F.trim(col("line")) == "", "blank_line", DROPPED),
            (F.lower(F.substring("line", 1, 8)) == "user_id,", "header", DROPPED),
            (col("_n_fields") != len(TAOBAO_COLUMNS), "malformed_line", QUARANTINED),
            (col("item_id").isNull(), "null_item_id", QUARANTINED),
            (~col("_behaviour").isin(*behaviours), "unknown_behavior", QUARANTINED),
            (col("event_ts").isNull(), "bad_timestamp", QUARANTINED),
            OUT_OF_RANGE,
            (F.lit(opts.fav == "drop") & (col("_behaviour") == "fav"), "fav", DROPPED),
        ],
    )
    return df.select(
        "status",
        "reason",
        "day",
        _event_id(ID_PREFIX["taobao"], source, F.col("line")).alias("event_id"),
        _event_time(F.col("event_ts")).alias("event_time"),
        "event_ts",
        F.try_element_at(mapping, F.col("_behaviour")).alias("event_type"),
        "user_id",
        F.concat(F.col("user_id"), F.lit("@"), F.col("day")).alias("session_id"),
        F.lit(None).cast("string").alias("request_id"),
        F.lit(None).cast("string").alias("query"),
        "item_id",
        F.lit(None).cast("long").alias("position"),
        F.lit(None).cast("double").alias("price"),
        F.lit(None).cast("string").alias("title"),
        "category",
        F.lit(source).alias("source_file"),
        # The raw text is kept where someone will look at it: in the quarantine.
        F.when(F.col("status") == QUARANTINED, F.col("line")).alias("line"),
    )


def parse_retail(lines, source: str, header: str, opts: ImportOptions = ImportOptions()):
    """Tag each line of a retail invoice CSV (column ``value``, header line included) with
    status, reason and the contract columns; ``header`` is the file's first line."""
    from pyspark.sql import functions as F

    columns = retail_columns(header)
    line = F.rtrim("value", F.lit("\r"))
    ddl = ", ".join(f"`{c}` string" for c in columns) + ", `_corrupt` string"
    parsed = F.from_csv(line, ddl, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    df = lines.select(line.alias("line"), parsed.alias("r"))
    r = lambda c: F.col(f"r.{c}")  # noqa: E731
    invoice = F.upper(_text(r("InvoiceNo")))
    customer = _text(F.regexp_replace(F.trim(r("CustomerID")), r"\.0+$", ""))
    if opts.missing_user == "invoice":
        customer = F.coalesce(customer, F.concat(F.lit("guest-"), invoice))
    date = _text(r("InvoiceDate"))
    ts = F.coalesce(
        F.try_to_timestamp(date), *[F.try_to_timestamp(date, F.lit(f)) for f in RETAIL_DATE_FORMATS]
    )
    df = df.select(
        "line",
        F.col("r._corrupt").alias("_corrupt"),
        invoice.alias("_invoice"),
        F.upper(_text(r("StockCode"))).alias("item_id"),
        _text(r("Description")).alias("title"),
        _text(r("Quantity")).try_cast("double").alias("_quantity"),
        _text(r("UnitPrice")).alias("_price_text"),
        _text(r("UnitPrice")).try_cast("double").alias("price"),
        customer.alias("user_id"),
        ts.alias("event_ts"),
        # The header line (repeated where files were concatenated) is not a row.
        (F.col("line") == F.lit(header.rstrip("\r"))).alias("_is_header"),
    )
    col = F.col
    df = _classify(
        df,
        opts,
        [
            (F.trim(col("line")) == "", "blank_line", DROPPED),
            (col("_is_header"), "header", DROPPED),
            (col("_corrupt").isNotNull(), "malformed_line", QUARANTINED),
            (col("_invoice").isNull(), "null_invoice", QUARANTINED),
            (col("_invoice").startswith("C"), "return", QUARANTINED),
            (col("_invoice").startswith("A"), "adjustment", QUARANTINED),
            (col("item_id").isNull(), "null_item_id", QUARANTINED),
            (col("_quantity").isNull(), "bad_quantity", QUARANTINED),
            (col("_quantity") <= 0, "non_positive_quantity", QUARANTINED),
            (col("_price_text").isNotNull() & col("price").isNull(), "bad_price", QUARANTINED),
            (col("event_ts").isNull(), "bad_timestamp", QUARANTINED),
            OUT_OF_RANGE,
            (col("item_id").isin(*NON_PRODUCT_CODES), "non_product", QUARANTINED),
        ],
    )
    return df.select(
        "status",
        "reason",
        "day",
        _event_id(ID_PREFIX["retail"], source, col("line")).alias("event_id"),
        _event_time(col("event_ts")).alias("event_time"),
        "event_ts",
        F.lit("purchase").alias("event_type"),
        "user_id",
        col("_invoice").alias("session_id"),
        F.lit(None).cast("string").alias("request_id"),
        F.lit(None).cast("string").alias("query"),
        "item_id",
        F.lit(None).cast("long").alias("position"),
        "price",
        "title",
        F.lit(None).cast("string").alias("category"),
        F.lit(source).alias("source_file"),
        # The raw text is kept where someone will look at it: in the quarantine.
        F.when(F.col("status") == QUARANTINED, F.col("line")).alias("line"),
    )


def contract_events(written):
    """The written rows as the raw events contract, plus ``day`` to split by."""
    from pyspark.sql import functions as F

    return written.select(*[F.col(n).cast(t) for n, t in EVENT_FIELDS], "day")


def items_of_days(written):
    """One catalog row per (day, item): the latest non-null attributes seen that day.

    First the distinct attribute variants per item with the time each was last seen (a hash
    aggregation), then the latest per attribute over those few variants: picking over every
    event directly needs a sort of all events.
    """
    from pyspark.sql import functions as F

    attrs = ("title", "category", "price")
    variants = written.groupBy("day", "item_id", *attrs).agg(F.max("event_ts").alias("seen"))
    order = F.struct("seen", *attrs)

    def latest(c):
        return F.max_by(F.col(c), F.when(F.col(c).isNotNull(), order)).alias(c)

    return (
        variants.groupBy("day", "item_id")
        .agg(*[latest(c) for c in attrs])
        .withColumn("brand", F.lit(None).cast("string"))
        .withColumn("launch_date", F.lit(None).cast("string"))
        .select("day", *ITEM_NAMES)
    )


def outcome_counts(tagged):
    """Counts by (day, status, reason, event type): a few hundred rows at most."""
    return tagged.groupBy("day", "status", "reason", "event_type").count()


def summarize_counts(rows) -> dict:
    """Turn :func:`outcome_counts` rows (dicts) into totals, per reason and per day."""
    out = {
        "rows_written": 0,
        "rows_quarantined": 0,
        "rows_dropped": 0,
        "quarantined_by_reason": {},
        "dropped_by_reason": {},
        "written_by_event_type": {},
        "days": {},
        "no_day": {},
    }

    def bump(d: dict, key, n: int) -> None:
        d[key] = d.get(key, 0) + n

    for row in rows:
        status, reason, n = row["status"], row["reason"], row["count"]
        if row["day"] is None:
            day = out["no_day"]
        else:
            day = out["days"].setdefault(
                row["day"],
                {"rows": 0, WRITTEN: 0, QUARANTINED: 0, DROPPED: 0, "by_event_type": {}},
            )
        day.setdefault("rows", 0)
        bump(day, "rows", n)
        bump(day, status, n)
        bump(out, f"rows_{status}", n)
        if status == WRITTEN:
            bump(out["written_by_event_type"], row["event_type"], n)
            bump(day.setdefault("by_event_type", {}), row["event_type"], n)
        else:
            bump(out[f"{status}_by_reason"], reason, n)
            bump(day.setdefault(f"{status}_by_reason", {}), reason, n)
    out["days"] = dict(sorted(out["days"].items()))
    return out


# --- write ------------------------------------------------------------------------------
def _move_parts(src: Path, dest: Path, prefix: str) -> int:
    """Move Spark's part files from ``src`` into ``dest`` as ``<prefix>-NNNNN.jsonl.gz``."""
    parts = sorted(src.glob("part-*")) if src is not None and src.is_dir() else []
    for n, part in enumerate(parts):
        os.replace(part, dest / f"{prefix}-{n:05d}.jsonl.gz")
    return len(parts)


def publish_day(final: Path, new_files: Path | None, prefix: str) -> int:
    """Replace the files named ``<prefix>-*`` of a day directory, keeping every other file.

    The directory is rebuilt aside (other files hard-linked) with a fresh ``_SUCCESS`` and
    swapped in whole, so readers see the old day or the new day, never a mix. A directory
    left without any data file is removed. Returns the number of files moved in.
    """
    tmp = staging_dir(final)
    tmp.mkdir()
    try:
        kept = 0
        if final.is_dir():
            for f in final.iterdir():
                if f.is_file() and not f.name.startswith((f"{prefix}-", "_", ".")):
                    try:
                        os.link(f, tmp / f.name)
                    except OSError:
                        shutil.copy2(f, tmp / f.name)
                    kept += 1
        moved = _move_parts(new_files, tmp, prefix)
        if kept + moved == 0:
            shutil.rmtree(tmp)
            if final.is_dir():
                shutil.rmtree(final)
            return 0
        (tmp / "_SUCCESS").touch()
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return moved


def days_with_files(base: Path, prefix: str) -> set[str]:
    """Days under ``base`` (``dt=<day>`` directories) holding files named ``<prefix>-*``."""
    if not base.is_dir():
        return set()
    return {
        d.name[3:]
        for d in base.iterdir()
        if d.name.startswith("dt=") and any(d.glob(f"{prefix}-*"))
    }


def import_file(
    spark,
    fmt: str,
    input_path: str | os.PathLike,
    data_root: str | os.PathLike,
    opts: ImportOptions = ImportOptions(),
) -> dict:
    """Import one file of format ``fmt`` under ``data_root``; return (and write) the summary."""
    from pyspark.sql import functions as F

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file not found: {input_path}")
    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        raise ValueError("the Spark session must use UTC (jobs.spark.get_spark sets it)")
    started = time.perf_counter()
    layout = Layout(Path(data_root))
    source = input_path.name
    tag = source_tag(source)
    lines = read_lines(spark, input_path)
    if fmt == "taobao":
        tagged = parse_taobao(lines, source, opts)
    else:
        tagged = parse_retail(lines, source, read_header(input_path), opts)
    log.info("import %s %s: reading", fmt, input_path)

    layout.root.mkdir(parents=True, exist_ok=True)
    work = layout.root / f".import-{fmt}-{tag}-{uuid.uuid4().hex}"
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 2)
        return now

    try:
        # One pass over the input: every row, tagged, to Parquet split by status.
        t = time.perf_counter()
        tagged.write.partitionBy("status").parquet(str(work / "tagged"))
        t = lap("parse", t)
        rows_in = lines.count()  # counted apart, so the reconciliation means something
        t = lap("count_input", t)
        stored = spark.read.parquet(str(work / "tagged"))
        counts = summarize_counts([r.asDict() for r in outcome_counts(stored).collect()])
        t = lap("count_outcomes", t)
        written = stored.filter(F.col("status") == WRITTEN)
        days = list(counts["days"])
        per_day = [counts["days"][d][WRITTEN] for d in days]
        buckets = max(1, -(-max(per_day, default=0) // opts.rows_per_file))
        events = (
            contract_events(written)
            .withColumn("_bucket", F.pmod(F.xxhash64("event_id"), F.lit(buckets)))
            .repartition(max(1, len(days) * buckets), "day", "_bucket")
            .drop("_bucket")
        )
        json_options = {"compression": "gzip", "ignoreNullFields": "false"}
        events.write.partitionBy("day").options(**json_options).json(str(work / "events"))
        t = lap("write_events", t)
        items = items_of_days(written).persist()
        items.repartition("day").write.partitionBy("day").options(**json_options).json(
            str(work / "items")
        )
        n_items = {r["day"]: r["count"] for r in items.groupBy("day").count().collect()}
        items.unpersist()
        t = lap("write_items", t)

        # Days this file fills now, and days an earlier import of it filled (to clear).
        stem = f"{fmt}-{tag}"
        ev_prefix, it_prefix = f"part-{stem}", f"items-{stem}"
        publish = {d for d in days if counts["days"][d][WRITTEN]}
        publish |= days_with_files(layout.root / "raw" / "events", ev_prefix)
        publish |= days_with_files(layout.root / "raw" / "items", it_prefix)
        for day in sorted(publish):
            publish_day(layout.raw_events(day), work / "events" / f"day={day}", ev_prefix)
            publish_day(layout.raw_items(day), work / "items" / f"day={day}", it_prefix)
            if day in counts["days"]:
                counts["days"][day]["items"] = n_items.get(day, 0)

        quarantine = layout.root / "import_quarantine" / fmt / safe_name(source)
        tmp = staging_dir(quarantine)
        bad = work / "tagged" / f"status={QUARANTINED}"
        if bad.is_dir():
            os.replace(bad, tmp)
        else:
            tmp.mkdir()
        (tmp / "_SUCCESS").touch()
        publish_dir(tmp, quarantine)
        lap("publish", t)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    accounted = counts["rows_written"] + counts["rows_quarantined"] + counts["rows_dropped"]
    summary = {
        "format": fmt,
        "input": str(input_path),
        "source": source,
        "source_tag": tag,
        "data_root": str(layout.root),
        "options": dataclasses.asdict(opts),
        "rows_in": rows_in,
        **counts,
        "reconciled": rows_in == accounted
        and all(
            d["rows"] == d[WRITTEN] + d[QUARANTINED] + d[DROPPED] for d in counts["days"].values()
        ),
        "quarantine_path": str(quarantine),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "timings": timings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = layout.root / "runs" / "import" / f"{fmt}-{safe_name(source)}-{stamp}.json"
    summary["summary_path"] = str(path)
    write_json(path, summary)
    if not summary["reconciled"]:
        raise RuntimeError(f"import counts do not reconcile: {json.dumps(summary)[:2000]}")
    log.info(
        "import %s %s: %d rows in, %d written over %d days, %d quarantined, %d dropped (%.1fs)",
        fmt,
        source,
        rows_in,
        counts["rows_written"],
        len(counts["days"]),
        counts["rows_quarantined"],
        counts["rows_dropped"],
        summary["seconds"],
    )
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("--input", required=True, help="CSV file (optionally .gz)")
    parser.add_argument("--data-root", help="default: the settings' data root")
    parser.add_argument("--fav", choices=("add_to_cart", "drop"), default="add_to_cart")
    parser.add_argument("--missing-user", choices=("null", "invoice"), default="null")
    parser.add_argument("--since", help="first day to keep (YYYY-MM-DD)")
    parser.add_argument("--until", help="last day to keep (YYYY-MM-DD)")
    parser.add_argument("--rows-per-file", type=int, default=ImportOptions.rows_per_file)
    parser.add_argument("--config", help="settings file (default freshrank.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from core.settings import load_settings
    from jobs.spark import get_spark

    settings = load_settings(args.config)
    opts = ImportOptions(
        fav=args.fav,
        missing_user=args.missing_user,
        since=args.since,
        until=args.until,
        rows_per_file=args.rows_per_file,
    )
    spark = get_spark(settings.preprocess, app_name=f"freshrank-import-{args.format}")
    summary = import_file(
        spark, args.format, args.input, args.data_root or settings.data_root, opts
    )
    short = {k: v for k, v in summary.items() if k not in ("days", "no_day")}
    print(json.dumps(short, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
