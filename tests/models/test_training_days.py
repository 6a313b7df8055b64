"""Which days a strategy trains on: days that failed validation never are."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from core.layout import Layout
from core.settings import defaults
from core.summaries import ValidateSummary, write_summary
from models.fit import load_training_frame, training_days

from .conftest import make_examples, write_day

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"]
TRAIN = dataclasses.replace(defaults().train, replay_days=3, retrain_history_days=14)


def _validated(layout: Layout, ds: str, success: bool) -> None:
    problems = [] if success else ["examples: label_click has 0 positives"]
    write_summary(layout, ValidateSummary(ds=ds, success=success, problems=problems, examples=1))


@pytest.fixture
def days(tmp_path):
    layout = Layout(tmp_path)
    for i, ds in enumerate(DAYS):
        write_day(layout, ds, make_examples(60, seed=i))
    _validated(layout, DAYS[0], True)
    _validated(layout, DAYS[1], False)  # a bad delivery: the night stopped at validate
    # DAYS[2] has no validate.json (stages run by hand): used.
    _validated(layout, DAYS[3], True)
    return layout


@pytest.mark.parametrize("strategy", ["full", "retrain"])
def test_a_day_that_failed_validation_is_never_replayed_or_retrained_on(days, strategy, caplog):
    with caplog.at_level(logging.WARNING, logger="models.fit"):
        used = training_days(days, DAYS[3], strategy, TRAIN)
    assert used == [DAYS[0], DAYS[2], DAYS[3]]
    assert f"failed validation: ['{DAYS[1]}']" in caplog.text
    # What is read follows: no row of the failed day.
    df, read = load_training_frame(days, DAYS[3], strategy, TRAIN, columns=["request_id"])
    assert read == used
    assert not df["request_id"].str.startswith("r1_").any()
    assert df["request_id"].str.startswith("r2_").any()


def test_light_and_skip_windows_hold_only_the_day(days):
    assert training_days(days, DAYS[3], "light", TRAIN) == [DAYS[3]]


def test_training_a_day_that_failed_validation_is_refused(days):
    with pytest.raises(ValueError, match=f"{DAYS[1]} failed validation .*never trained on"):
        training_days(days, DAYS[1], "light", TRAIN)


def test_without_a_failed_day_nothing_is_left_out(days, caplog):
    _validated(days, DAYS[1], True)  # the day was redelivered and passed
    with caplog.at_level(logging.WARNING, logger="models.fit"):
        assert training_days(days, DAYS[3], "full", TRAIN) == DAYS
    assert "failed validation" not in caplog.text
