"""Great Expectations validation: good days pass, each kind of bad day stops with a reason."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from core.layout import Layout
from core.summaries import PreprocessSummary, ValidateSummary, read_summary, write_summary
from jobs.validate import (
    DataValidationError,
    constant_inputs,
    drift_reference,
    psi,
    validate_day,
)
from tests.models.conftest import make_examples, write_day

DS = "2026-11-20"


def write_events(layout: Layout, ds: str, df: pd.DataFrame) -> None:
    path = layout.clean_events(ds)
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "part-0.parquet", index=False)
    (path / "_SUCCESS").touch()


def good_events(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": pd.Timestamp("2026-11-20T10:00:00"),
            "event_type": "impression",
            "user_id": "u1",
            "session_id": "s1",
            "request_id": "r1",
            "query": "q",
            "item_id": [f"i{i}" for i in range(n)],
            "position": 1,
            "price": 10.0,
        }
    )


def failed_in_docs(layout: Layout, ds: str) -> dict[tuple[str, str], str]:
    """The Data Docs' failed sections: ``{(suite, column or "Table-Level Expectations"):
    text}``, read from the validation result pages of ``runs/dt=<ds>/validation/``."""
    failed = {}
    for page in (layout.run_dir(ds) / "validation" / "validations").rglob("*.html"):
        suite = page.relative_to(layout.run_dir(ds) / "validation" / "validations").parts[0]
        for section in page.read_text().split('class="ge-section')[1:]:
            header = re.search(r"<h5[^>]*>\s*(.*?)\s*</h5>", section, re.S)
            if header and "fa-times text-danger" in section:
                text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
                failed[(suite, header.group(1))] = text
    return failed


@pytest.fixture
def day(settings):
    layout = Layout(settings.data_root)

    def deliver(examples=None, events=None, ds=DS):
        write_day(layout, ds, make_examples(1000, seed=1) if examples is None else examples)
        write_events(layout, ds, good_events() if events is None else events)
        return layout

    return deliver


def test_good_day_passes_and_writes_report(spark, settings, day):
    layout = day()
    summary = validate_day(spark, DS, settings)
    assert summary["success"] and summary["expectations_failed"] == 0
    assert summary["expectations_evaluated"] >= 30
    assert (layout.run_dir(DS) / "validate.json").exists()
    index = (layout.run_dir(DS) / "validation" / "index.html").read_text()
    for suite in ("clean_events", "examples"):  # both suites' results, linked from the index
        assert f"validations/{suite}/{DS}/" in index
    assert "validate.json" in index  # says where the volume, quarantine and drift checks are
    assert failed_in_docs(layout, DS) == {}


def _broken(column, value, rows=slice(0, 12)):
    df = make_examples(1000, seed=1)
    df[column] = df[column].astype(object)
    df.loc[df.index[rows], column] = value
    return df


@pytest.mark.parametrize(
    ("examples", "events", "message"),
    [
        (
            _broken("user_bucket", None),
            None,
            "expect_column_values_to_not_be_null(user_bucket) failed: 12 unexpected of 1000",
        ),
        (
            _broken("item_bucket", 1 << 20),
            None,
            "expect_column_values_to_be_between(item_bucket) failed: 12 unexpected",
        ),
        (
            _broken("label_click", 2),
            None,
            "expect_column_values_to_be_in_set(label_click) failed: 12 unexpected",
        ),
        (make_examples(50, seed=1), None, "expect_table_row_count_to_be_between(table)"),
        (
            _broken("label_click", 1, slice(0, 900)),
            None,
            "expect_column_mean_to_be_between(label_click)",
        ),
        (
            None,
            pd.concat([good_events(), good_events(3)]),
            "clean_events: expect_column_values_to_be_unique(event_id) failed: 6 unexpected",
        ),
        (
            None,
            good_events().assign(price=-1.0),
            "expect_column_values_to_be_between(price) failed: 50 unexpected",
        ),
    ],
)
def test_bad_days_fail_naming_expectation_column_and_count(
    spark, settings, day, examples, events, message
):
    layout = day(examples, events)
    with pytest.raises(DataValidationError) as err:
        validate_day(spark, DS, settings)
    assert message in str(err.value)
    report = (layout.run_dir(DS) / "validate.json").read_text()
    assert '"success": false' in report  # written before raising
    # The Data Docs too, showing the failed expectation under its column, with its count.
    column, count = re.search(r"\((\w+)\)(?: failed: (\d+) unexpected)?", message).groups()
    section = "Table-Level Expectations" if column == "table" else column
    failed = {c: text for (_, c), text in failed_in_docs(layout, DS).items()}
    assert section in failed, failed.keys()
    if count:
        assert f"{count} unexpected values found" in failed[section]


def test_volume_spike_fails_and_drift_is_only_recorded(spark, settings, day):
    day()
    validate_day(spark, DS, settings)
    # Next day: a different category mix (drift) at normal volume passes with a flag.
    shifted = make_examples(1000, seed=2, items=[0, 7, 14])  # all in category c0
    day(shifted, ds="2026-11-21")
    summary = validate_day(spark, "2026-11-21", settings)
    assert summary["success"]
    assert summary["drift_psi"]["category"] > settings.validate.drift_psi_warn
    assert "category" in summary["drift_flagged"]
    # A day 30x larger than the recent mean is a hard failure.
    day(make_examples(30_000, seed=3), ds="2026-11-22")
    with pytest.raises(DataValidationError, match="volume: 30000 examples"):
        validate_day(spark, "2026-11-22", settings)


def test_psi_is_zero_for_equal_and_large_for_disjoint():
    assert psi({"a": 5, "b": 5}, {"a": 50, "b": 50}) == pytest.approx(0)
    assert psi({"a": 10}, {"b": 10}) > 5


def test_drift_is_measured_from_the_newest_day_that_passed(tmp_path):
    layout = Layout(tmp_path)
    assert drift_reference(layout, DS) == (None, None)  # first day: nothing to compare with
    for day, passed in (("2026-11-17", True), ("2026-11-18", True), ("2026-11-19", False)):
        (layout.examples(day)).mkdir(parents=True)
        (layout.examples(day) / "_SUCCESS").touch()
        summary = ValidateSummary(
            ds=day, success=passed, problems=[], examples=10, histograms={"price": {"1": 10}}
        )
        write_summary(layout, summary)
    # 11-19 failed validation (a bad day must not become the baseline); 11-21 is later.
    day, summary = drift_reference(layout, DS)
    assert day == "2026-11-18" and summary["success"]


# --- shares judged against recent days ---------------------------------------------------
def history(layout: Layout, days: dict[str, tuple[float, bool]]) -> None:
    """Earlier days as validation left them: ``{ds: (anonymous share, passed)}``."""
    for ds, (share, passed) in days.items():
        layout.examples(ds).mkdir(parents=True)
        (layout.examples(ds) / "_SUCCESS").touch()
        summary = ValidateSummary(
            ds=ds,
            success=passed,
            problems=[] if passed else ["anonymous: ..."],
            examples=1000,
            quarantine_share=0.01,
            anonymous_share=share,
        )
        write_summary(layout, summary)


def preprocessed(layout: Layout, rows_in=1000, quarantined=0, anonymous=0, ds=DS) -> None:
    """Today's preprocess summary: ``anonymous`` of the clean events have no user id."""
    clean = rows_in - quarantined
    write_summary(
        layout,
        PreprocessSummary(
            ds=ds,
            rows_in=rows_in,
            clean=clean,
            quarantined=quarantined,
            quarantined_by_reason={"malformed_line": quarantined} if quarantined else {},
            duplicates=0,
            examples=1000,
            train_examples=800,
            holdout_examples=200,
            anonymous=anonymous,
        ),
    )


def guest_events(n: int = 50, guests: int = 38) -> pd.DataFrame:
    """Clean events of a day on which ``guests`` of ``n`` orders came without a user id."""
    df = good_events(n).assign(event_type="purchase")
    df["user_id"] = df["user_id"].astype(object)
    df.loc[df.index[:guests], "user_id"] = None
    return df


def test_guest_heavy_day_passes_after_days_with_similar_shares(spark, settings, day):
    # A shop whose recent days had 55-70% guest orders (UCI Online Retail: up to 77%).
    layout = day(events=guest_events())
    history(layout, {f"2026-11-{d}": (s, True) for d, s in ((16, 0.55), (17, 0.7), (19, 0.6))})
    preprocessed(layout, anonymous=770)
    summary = validate_day(spark, DS, settings)
    assert summary["success"]
    assert summary["anonymous"]["limit"] == pytest.approx(0.9)
    assert summary["anonymous"]["limit_from"] == "max of 3 recent days 0.70 + 0.2"
    # Reported, not a failure: make_examples gives every id the default state features.
    assert "item_ctr" in summary["constant_inputs"]
    assert "log_price" not in summary["constant_inputs"]
    # Recorded for the next days to judge theirs against.
    recorded = read_summary(layout, DS, ValidateSummary)
    assert recorded.anonymous_share == 0.77 and recorded.quarantine_share == 0.0


def test_sudden_jump_in_guest_share_stops_the_day(spark, settings, day):
    layout = day(events=guest_events(guests=45))
    history(layout, {f"2026-11-{d}": (s, True) for d, s in ((15, 0.2), (16, 0.22), (18, 0.19))})
    preprocessed(layout, anonymous=900)  # within the absolute cap: only history catches it
    with pytest.raises(DataValidationError) as err:
        validate_day(spark, DS, settings)
    assert "anonymous share 0.90 > limit 0.42 (max of 3 recent days 0.22 + 0.2)" in str(err.value)
    assert "900 of 1000 (90%) clean events without a user id" in str(err.value)
    recorded = read_summary(layout, DS, ValidateSummary)
    assert not recorded.success and recorded.anonymous_share == 0.9


def test_a_failed_day_is_not_history(spark, settings, day):
    layout = day(events=guest_events(guests=43))
    # The newest day had 90% guests and failed: it must not raise the limit to 1.
    history(
        layout,
        {
            "2026-11-15": (0.2, True),
            "2026-11-16": (0.2, True),
            "2026-11-17": (0.25, True),
            "2026-11-19": (0.9, False),
        },
    )
    preprocessed(layout, anonymous=850)
    with pytest.raises(DataValidationError, match=r"limit 0\.45 \(max of 3 recent days 0\.25"):
        validate_day(spark, DS, settings)


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"anonymous": 850}, None),  # a guest-heavy first week passes under the 0.9 cap
        (
            {"anonymous": 950},
            "anonymous share 0.95 > limit 0.90 (max_anonymous_share; only 2 recent days to "
            "judge by, 3 needed)",
        ),
        (
            {"quarantined": 600},
            "quarantine: quarantine share 0.60 > limit 0.50 (max_quarantine_share; only 2 "
            "recent days to judge by, 3 needed); 600 of 1000 (60%) rows quarantined "
            "(malformed_line: 600); see ",
        ),
    ],
)
def test_with_too_little_history_the_absolute_caps_apply(spark, settings, day, shares, message):
    layout = day(events=guest_events())
    history(layout, {"2026-11-18": (0.1, True), "2026-11-19": (0.1, True)})
    preprocessed(layout, **shares)
    if message is None:
        assert validate_day(spark, DS, settings)["success"]
        return
    with pytest.raises(DataValidationError) as err:
        validate_day(spark, DS, settings)
    assert message in str(err.value)


def test_constant_inputs_are_named(spark):
    df = make_examples(200, seed=1).assign(position=0.0)  # e.g. a log without positions
    constant = constant_inputs(spark.createDataFrame(df))
    assert "position" in constant and "item_ctr" in constant  # make_examples: all-default state
    assert "log_price" not in constant and "item_bucket" not in constant


def test_the_examples_suite_expects_exactly_the_example_columns():
    import json

    from core import features
    from jobs.validate import SUITES_DIR

    suite = json.loads((SUITES_DIR / "examples.json").read_text())
    (columns,) = [
        e["kwargs"]["column_set"]
        for e in suite["expectations"]
        if e["type"] == "expect_table_columns_to_match_set"
    ]
    assert columns == list(features.EXAMPLE_SCHEMA)
