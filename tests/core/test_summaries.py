"""Stage summaries: one writer, checked against the stage's schema on write and on read."""

from __future__ import annotations

import json

import pydantic
import pytest

from core.layout import Layout
from core.summaries import (
    PreprocessSummary,
    StrategyDecision,
    ValidateSummary,
    read_summary,
    write_summary,
)

DS = "2026-11-20"


def test_a_summary_is_written_where_the_next_stage_reads_it(tmp_path):
    layout = Layout(tmp_path)
    written = write_summary(
        layout,
        {"ds": DS, "strategy": "full", "reasons": ["r"], "champion": None, "extra": 1},
        StrategyDecision,
    )
    path = layout.run_dir(DS) / "choose_strategy.json"
    assert json.loads(path.read_text()) == written
    decision = read_summary(layout, DS, StrategyDecision)
    assert decision.strategy == "full" and decision.reasons == ["r"]
    assert decision.model_extra == {"extra": 1}  # details beyond the schema are kept


def test_nan_becomes_null_so_xcom_and_json_accept_it(tmp_path):
    summary = ValidateSummary(
        ds=DS, success=True, problems=[], examples=3, drift_psi={"price": float("nan")}
    )
    written = write_summary(Layout(tmp_path), summary)
    assert written["drift_psi"] == {"price": None}
    assert "NaN" not in (Layout(tmp_path).run_dir(DS) / "validate.json").read_text()


def test_a_summary_missing_a_declared_field_is_refused(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(pydantic.ValidationError, match="train_examples"):
        write_summary(
            layout,
            {"ds": DS, "rows_in": 1, "clean": 1, "quarantined": 0, "duplicates": 0},
            PreprocessSummary,
        )
    assert not layout.run_dir(DS).exists()  # nothing half-written


def test_a_stage_that_did_not_run_is_named(tmp_path):
    layout = Layout(tmp_path)
    assert read_summary(layout, DS, StrategyDecision) is None
    with pytest.raises(FileNotFoundError, match="run choose_strategy for 2026-11-20 first"):
        read_summary(layout, DS, StrategyDecision, required=True)
