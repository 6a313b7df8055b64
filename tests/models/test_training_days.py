"""Which days a strategy trains on: days that failed validation never are."""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd
import pytest

from core import features
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


def test_the_gate_pools_recent_ranking_cases_but_never_a_failed_days(days):
    """Held-out cases of the window's days are read together (case ids kept apart by their
    day); a day that failed validation is never judged on either."""
    from models.evaluate import read_ranking_cases

    from .conftest import make_ranking_cases, write_ranking

    for i, ds in enumerate(DAYS):
        write_ranking(days, ds, make_ranking_cases(20, seed=i, candidates=10))
    pooled = read_ranking_cases(days, DAYS[3], window_days=7)
    per_day = pooled["request_id"].str.split("/").str[0].value_counts()
    assert per_day.to_dict() == {DAYS[0]: 200, DAYS[2]: 200, DAYS[3]: 200}  # DAYS[1] failed
    assert (pooled.groupby("request_id")["label_click"].sum() == 1).all()  # 60 distinct cases
    assert pooled["request_id"].nunique() == 60
    assert read_ranking_cases(days, DAYS[3])["request_id"].nunique() == 20  # the day alone
    window = read_ranking_cases(days, DAYS[3], window_days=2)  # DAYS[2] and DAYS[3]
    assert window["request_id"].str.startswith((DAYS[2], DAYS[3])).all() and len(window) == 400
    assert read_ranking_cases(days, "2026-11-01").empty  # before any day


def test_model_inputs_stack_the_array_columns_and_refuse_a_row_of_another_length():
    from models import ranker

    rows = [
        {
            **{c: 3 for c in features.ID_COLUMNS},
            **{c: 0.5 for c in features.DENSE_FEATURES},
            **{c: list(range(1, w + 1)) for c, w in features.ARRAY_WIDTHS.items()},
        }
        for _ in range(3)
    ]
    df = pd.DataFrame(rows)
    x = ranker.to_inputs(df)
    for col, width in features.ARRAY_WIDTHS.items():
        assert x[col].shape == (3, width) and x[col].dtype == features.array_dtype(col)
        assert x[col][2].tolist() == list(range(1, width + 1))
    assert ranker.to_inputs(df.iloc[:0])[features.HISTORY_BUCKETS].shape == (0, 10)
    df.at[1, features.TITLE_TOKENS] = [1, 2]
    with pytest.raises(ValueError, match="title_tokens: row 1 has 2 values"):
        ranker.to_inputs(df)
