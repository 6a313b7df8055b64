"""Validate a preprocessed day with Great Expectations; measure drift; stop on bad data.

Run with ``python -m jobs.validate --ds 2026-11-20`` or from the nightly DAG. Checks:

* the suites in ``expectations/<name>.json`` (versioned JSON, loaded into an ephemeral GE
  context) on ``clean/events/dt=<ds>`` and ``examples/dt=<ds>``. Thresholds that belong to
  settings or to the feature spec are ``{"$PARAMETER": ...}`` in the JSON and are filled at
  run time from ``[validate]`` settings and ``core.features`` (see :func:`suite_parameters`);
* volume: today's examples against the mean of the last ``volume_window_days`` validated
  days, hard failure outside ``[min_volume_ratio, max_volume_ratio]``;
* shares, judged against recent days (:func:`share_check`): of the day's rows, the share
  preprocessing quarantined; of its clean events, the share without a user id (guest
  orders). Both come from ``runs/dt=<ds>/preprocess.json``. Hard failure above the highest
  share of the last ``share_window_days`` days that passed validation plus
  ``max_share_rise``, or, with fewer than ``min_share_history_days`` such days, above
  ``max_quarantine_share`` / ``max_anonymous_share``: a delivery broken as a whole (a field
  whose type changed) or a sudden flood of guests must not pass as a small day, while a
  shop whose days are often guest-heavy is not stopped for being itself;
* constant inputs (reported, never a failure): the model inputs with a single value over
  the day's examples carry nothing on this source (on a purchase-only log: CTR, position,
  query);
* drift (soft, never fails the run): population stability index of the category mix, price,
  position and click rate against the previous processed day; above ``drift_psi_warn`` is
  flagged and handed to the strategy decision.

Writes ``runs/dt=<ds>/validate.json`` (every check, FreshRank's own volume, shares,
constant inputs and drift included; later days judge their shares against the ones recorded
there) and Great Expectations' Data Docs of the day's suite results
(``runs/dt=<ds>/validation/index.html``) *before* raising :class:`DataValidationError`, whose
message names each failed expectation (its column and the unexpected count) and each share
over its limit (the limit and how it was derived).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from core import features
from core.layout import Layout, check_ds, day_layout, publish_dir, staging_dir
from core.settings import REPO_ROOT, Settings, ValidateSettings, load_settings
from core.summaries import PreprocessSummary, ValidateSummary, read_summary, write_summary

log = logging.getLogger(__name__)
SUITES_DIR = REPO_ROOT / "expectations"
PSI_EPS = 1e-4
DOCS_SITE = "freshrank"
DOCS_NOTE = (
    '<div class="alert alert-info m-3">FreshRank {ds}: these pages show the Great Expectations '
    "suites only; the volume, share, constant-input and drift checks (and the day's verdict) "
    'are in <a href="../validate.json">validate.json</a>.</div>'
)


class DataValidationError(ValueError):
    """The day's data failed a hard check; the message says which, where and how many."""


def load_suite(name: str):
    import great_expectations as gx

    path = SUITES_DIR / f"{name}.json"
    spec = json.loads(path.read_text())
    suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"])
    if len(suite.expectations) != len(spec["expectations"]):
        raise ValueError(f"{path}: some expectations are invalid (see the log above)")
    return suite


def suite_parameters(cfg: ValidateSettings) -> dict:
    params = {
        "min_examples": cfg.min_examples,
        "min_click_rate": cfg.min_click_rate,
        "max_click_rate": cfg.max_click_rate,
        "max_price": cfg.max_price,
        "max_log_price": math.log1p(cfg.max_price),
    }
    params.update({f"max_{n}_bucket": size - 1 for n, (_, size) in features.ID_FEATURES.items()})
    return params


def gx_context():
    """An ephemeral (in-memory) Great Expectations context: suites and results live only as
    long as it does; :func:`write_data_docs` renders its results to files."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    return context


def run_suite(name: str, df, params: dict, context=None, run_id=None) -> list[dict]:
    """Run suite ``name`` on a Spark DataFrame; one dict per expectation.

    First with result format ``BOOLEAN_ONLY`` (pass or fail only: Great Expectations folds
    the checks into a few Spark jobs, about 2.5x faster on a 1M-row day); only when an
    expectation fails is the suite run again with ``SUMMARY``, for the counts and observed
    values the failure message names. A passing day's report therefore shows no counts.
    The result is kept in ``context``'s validation results store (for the Data Docs); the
    ``SUMMARY`` rerun has the first run's id, so it replaces the pass/fail-only result there.
    """
    vd = _validation_definition(context or gx_context(), name)
    result = _run(vd, df, params, "BOOLEAN_ONLY", run_id)
    if not result.success:
        result = _run(vd, df, params, "SUMMARY", result.meta["run_id"])
    out = []
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        out.append(
            {
                "suite": name,
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "unexpected_count": res.get("unexpected_count"),
                "element_count": res.get("element_count"),
                "observed_value": _jsonable(res.get("observed_value")),
                "error": (r.exception_info or {}).get("exception_message")
                if r.exception_info and r.exception_info.get("raised_exception")
                else None,
            }
        )
    return out


def _validation_definition(context, name: str):
    import great_expectations as gx

    suite = context.suites.add(load_suite(name))
    # persist=False: by default GE caches the whole frame (deserialized, every column) before
    # computing anything, and never releases it. Reading Parquet, each metric query reads
    # only its columns: about half the time on a 1M-row day, and no cache left behind.
    batch = (
        context.data_sources.add_or_update_spark(name=f"spark_{name}", persist=False)
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("whole")
    )
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )


def _run(vd, df, params: dict, result_format: str, run_id):
    return vd.run(
        batch_parameters={"dataframe": df},
        expectation_parameters=params,
        result_format=result_format,
        run_id=run_id,
    )


def write_data_docs(context, target: Path, ds: str) -> Path:
    """Build Great Expectations' Data Docs of every result in ``context`` into ``target``
    (a local folder, replaced in whole: a rerun of the day never mixes in an older run's
    pages); returns its ``index.html``. The index says where FreshRank's own checks are."""
    staging = staging_dir(target)
    try:
        context.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(staging),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        context.build_data_docs(site_names=[DOCS_SITE])
        pages = "".join(path.read_text() for path in staging.rglob("*.html"))
        for asset in (staging / "static").rglob("*"):
            if asset.is_file() and asset.name not in pages:
                asset.unlink()  # GE's tutorial GIFs, unused fonts: 4 MB a night in MLflow
        index = staging / "index.html"
        page = index.read_text()
        anchor = page.find("<body")
        if anchor >= 0:
            anchor = page.index(">", anchor) + 1
            index.write_text(page[:anchor] + DOCS_NOTE.format(ds=ds) + page[anchor:])
        publish_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "index.html"


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def psi(expected: dict, actual: dict) -> float:
    """Population stability index between two {bin: count} distributions."""
    bins = set(expected) | set(actual)
    e_total, a_total = sum(expected.values()) or 1, sum(actual.values()) or 1
    total = 0.0
    for b in bins:
        e = max(expected.get(b, 0) / e_total, PSI_EPS)
        a = max(actual.get(b, 0) / a_total, PSI_EPS)
        total += (a - e) * math.log(a / e)
    return total


def feature_histograms(df) -> dict[str, dict]:
    """Small binned distributions of the drift features, computed by Spark in one pass:
    ``{feature: {bin: count}}``, each feature's counts summing to the number of rows."""
    from pyspark.sql import functions as F

    bins = {
        "category": F.col("category_bucket"),
        "price": F.floor(F.col("log_price") * 2).cast("int"),
        "position": F.round(F.col("position") * features.MAX_POSITION).cast("int"),
        "click": F.col(features.LABEL),
    }
    stacked = F.explode(
        F.array(
            *[
                F.struct(F.lit(name).alias("feature"), value.cast("string").alias("bin"))
                for name, value in bins.items()
            ]
        )
    )
    counts = df.select(stacked.alias("h")).groupBy("h.feature", "h.bin").count().collect()
    out: dict[str, dict] = {name: {} for name in bins}
    for r in counts:
        out[r["feature"]][str(r["bin"])] = r["count"]
    return out


def drift_against(previous: dict, today: dict) -> dict[str, float]:
    return {k: round(psi(previous[k], today[k]), 4) for k in today if k in previous}


def passed_days(layout: Layout, ds: str) -> Iterator[tuple[str, ValidateSummary]]:
    """The days before ``ds`` that passed validation, newest first, with their summaries:
    the only history the checks compare with. A day that failed (absurd prices, a broken
    delivery, a flood of guests) must not become a baseline."""
    for day in reversed(layout.processed_days("examples")):
        if day < ds:
            summary = read_summary(layout, day, ValidateSummary)
            if summary and summary.success:
                yield day, summary


def drift_reference(layout: Layout, ds: str) -> tuple[str | None, dict | None]:
    """The newest earlier day that passed validation (and has histograms), and its summary."""
    for day, summary in passed_days(layout, ds):
        if summary.histograms:
            return day, summary.to_dict()
    return None, None


def volume_check(layout: Layout, ds: str, n: int, cfg: ValidateSettings) -> dict:
    """Today's examples against the mean of the last ``volume_window_days`` passed days (a
    day so far, :class:`core.layout.HourLayout`, is not a day's volume: not checked)."""
    if layout.hour is not None:
        return {"success": True, "ratio": None, "reference_days": 0, "partial_day": True}
    history = [s.examples for _, s in islice(passed_days(layout, ds), cfg.volume_window_days)]
    if not history:
        return {"success": True, "ratio": None, "reference_days": 0}
    ratio = n / (sum(history) / len(history))
    ok = cfg.min_volume_ratio <= ratio <= cfg.max_volume_ratio
    return {"success": ok, "ratio": round(ratio, 3), "reference_days": len(history)}


class Share(NamedTuple):
    """A share of the day that :func:`share_check` judges: ``count`` of ``total`` (fields of
    the preprocess summary), recorded in validate.json as ``<name>_share``."""

    count: str
    total: str
    cap: str  # the [validate] setting that limits it while there is too little history
    what: str  # what the counted rows are, for the failure message


SHARES: dict[str, Share] = {
    "quarantine": Share("quarantined", "rows_in", "max_quarantine_share", "rows quarantined"),
    "anonymous": Share(
        "anonymous", "clean", "max_anonymous_share", "clean events without a user id"
    ),
}


def share_limit(name: str, history: list[float], cfg: ValidateSettings) -> tuple[float, str]:
    """The highest share ``name`` may have today, and how it was derived.

    From history (the share on recent passed days): their maximum plus ``max_share_rise``,
    at most 1. A shop is judged against itself: its usual guest-heavy days pass, a sudden
    jump above anything it has recently shown does not. With fewer than
    ``min_share_history_days`` days, the absolute cap of :data:`SHARES` applies.
    """
    if len(history) >= cfg.min_share_history_days:
        top = max(history)
        limit = min(1.0, top + cfg.max_share_rise)
        why = f"max of {len(history)} recent days {top:.2f} + {cfg.max_share_rise:g}"
        return round(limit, 4), why + (", capped at 1" if limit == 1.0 else "")
    cap = SHARES[name].cap
    days = f"{len(history)} recent day{'' if len(history) == 1 else 's'}"
    return getattr(cfg, cap), f"{cap}; only {days} to judge by, {cfg.min_share_history_days} needed"


def share_check(
    name: str,
    preprocessed: PreprocessSummary | None,
    recent: list[ValidateSummary],
    cfg: ValidateSettings,
) -> dict:
    """Today's share ``name`` (see :data:`SHARES`) against :func:`share_limit` of the shares
    that ``recent`` (the last ``share_window_days`` passed days) recorded. Days validated
    before shares were recorded do not count. No share (no preprocess summary, or nothing
    to divide by) passes."""
    share = SHARES[name]
    history = [value for s in recent if (value := getattr(s, f"{name}_share")) is not None]
    limit, why = share_limit(name, history, cfg)
    check = {"limit": limit, "limit_from": why, "history_days": len(history)}
    total = getattr(preprocessed, share.total, 0) if preprocessed else 0
    if not total:
        return {"success": True, "share": None, **check}
    value = round(getattr(preprocessed, share.count) / total, 4)
    counts = {share.count: getattr(preprocessed, share.count), share.total: total}
    return {"success": value <= limit, "share": value, **check, **counts}


def describe_share(name: str, check: dict) -> str:
    """The failure message: the share, today's value, the limit and how it was derived, the
    counts, and for the quarantine its reasons and where its rows are."""
    share = SHARES[name]
    text = (
        f"{name}: {name} share {check['share']:.2f} > limit {check['limit']:.2f} "
        f"({check['limit_from']}); {check[share.count]} of {check[share.total]} "
        f"({check['share']:.0%}) {share.what}"
    )
    if "by_reason" in check:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(check["by_reason"].items()))
        text += f" ({reasons}); see {check['rows_at']}"
    return text


def constant_inputs(df) -> list[str]:
    """The model inputs (dense features and id buckets) with a single value over ``df``, in
    one Spark aggregation: an input that never varies on a source carries nothing for the
    model there (on a purchase-only log: CTR, position, query). An input with no value at
    all counts as constant."""
    from pyspark.sql import functions as F

    names = [*features.DENSE_FEATURES, *features.ID_COLUMNS]
    row = df.agg(
        *[F.min(n).alias(f"min_{i}") for i, n in enumerate(names)],
        *[F.max(n).alias(f"max_{i}") for i, n in enumerate(names)],
    ).first()
    return [n for i, n in enumerate(names) if row[f"min_{i}"] == row[f"max_{i}"]]


def validate_day(spark, ds: str, settings: Settings, hour: int | None = None) -> dict:
    """Run every check for ``ds`` (with ``hour``: the day so far); write the summary and
    report; raise on a hard failure."""
    from great_expectations.core.run_identifier import RunIdentifier

    check_ds(ds)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    started = time.perf_counter()
    cfg = settings.validate
    layout = day_layout(settings, ds, hour)
    examples = spark.read.parquet(str(layout.examples(ds)))
    events = spark.read.parquet(str(layout.clean_events(ds)))
    params = suite_parameters(cfg)
    context = gx_context()
    run_id = RunIdentifier(run_name=ds, run_time=dt.datetime.now(dt.UTC))
    results = run_suite("clean_events", events, params, context, run_id)
    results += run_suite("examples", examples, params, context, run_id)
    histograms = feature_histograms(examples)
    n_examples = sum(histograms["click"].values())

    constant = constant_inputs(examples)
    if constant:
        log.warning(
            "validate %s: inputs constant on this day (they carry nothing): %s", ds, constant
        )

    volume = volume_check(layout, ds, n_examples, cfg)
    preprocessed = read_summary(layout, ds, PreprocessSummary)
    recent = [s for _, s in islice(passed_days(layout, ds), cfg.share_window_days)]
    shares = {name: share_check(name, preprocessed, recent, cfg) for name in SHARES}
    if preprocessed:  # why and where the quarantined rows are (message and report)
        shares["quarantine"].update(
            by_reason=preprocessed.quarantined_by_reason,
            rows_at=str(layout.quarantine_events(ds)),
        )
    previous_ds, previous = drift_reference(layout, ds)
    drift = drift_against(previous["histograms"], histograms) if previous else {}
    failures = [r for r in results if not r["success"]]
    problems = [_describe(r) for r in failures]
    if not volume["success"]:
        problems.append(
            f"volume: {n_examples} examples is {volume['ratio']}x the mean of the last "
            f"{volume['reference_days']} days (allowed {cfg.min_volume_ratio}-"
            f"{cfg.max_volume_ratio}x)"
        )
    problems[:0] = [  # first: a share explains the failures it causes (empty tables, volume)
        describe_share(name, check) for name, check in shares.items() if not check["success"]
    ]
    summary = {
        "ds": ds,
        "success": not problems,
        "problems": problems,
        "examples": n_examples,
        "expectations_evaluated": len(results),
        "expectations_failed": len(failures),
        "results": results,
        "volume": volume,
        **{f"{name}_share": check["share"] for name, check in shares.items()},
        **shares,
        "constant_inputs": constant,
        "drift_reference": previous_ds,
        "drift_psi": drift,
        "drift_flagged": sorted(k for k, v in drift.items() if v > cfg.drift_psi_warn),
        "histograms": histograms,
        "seconds": round(time.perf_counter() - started, 2),
    }
    runs = layout.run_dir(ds)
    write_summary(layout, summary, ValidateSummary)
    write_data_docs(context, runs / "validation", ds)
    if problems:
        raise DataValidationError(f"validation of {ds} failed:\n  " + "\n  ".join(problems))
    log.info("validate %s: %d expectations passed, drift %s", ds, len(results), drift)
    return {k: v for k, v in summary.items() if k not in ("results", "histograms")}


def _describe(r: dict) -> str:
    where = f"({r['column']})" if r["column"] else "(table)"
    if r["error"]:
        return f"{r['suite']}: {r['expectation']}{where} could not run: {r['error']}"
    if r["unexpected_count"] is not None:
        return (
            f"{r['suite']}: {r['expectation']}{where} failed: {r['unexpected_count']} "
            f"unexpected of {r['element_count']} rows"
        )
    return f"{r['suite']}: {r['expectation']}{where} failed: observed {r['observed_value']}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from jobs.spark import get_spark

    settings = load_settings(args.config)
    try:
        print(validate_day(get_spark(settings.preprocess), check_ds(args.ds), settings))
    except DataValidationError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
