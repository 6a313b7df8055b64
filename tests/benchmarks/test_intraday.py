"""The intra-day benchmark's figures from its hour rows (the runs themselves: bench-intraday)."""

from __future__ import annotations

import pytest

from benchmarks.intraday import summarise


def row(day, next_hour, gain, seconds):
    return {"day": day, "next_hour": next_hour, "auc_gain": gain,
            "delivery_to_champion_seconds": seconds}  # fmt: skip


def test_gains_count_the_hours_after_the_trend_and_times_only_promoted_hours():
    hours = [
        row("trend", 10, -0.5, 100.0),  # before the trend: not in the gain
        row("trend", 12, 0.02, None),  # refused by the gate: no delivery-to-champion time
        row("trend", 13, 0.04, 300.0),
        row("quiet", 10, -0.001, 200.0),
        row("quiet", 11, 0.003, None),
    ]
    got = summarise(hours, trend_hour=12)
    assert got["auc_gain_after_trend"] == pytest.approx(0.03)
    assert got["quiet_day_auc_change"] == pytest.approx(0.001)
    assert got["delivery_to_champion_seconds"] == {
        "p50": 200.0, "max": 300.0, "promoted_hours": 3, "hours": 5,
    }  # fmt: skip
