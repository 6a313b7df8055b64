"""Writing helpers: JSON that strict readers (XCom, browsers) accept, files written whole;
where a run of the day so far reads and writes."""

from __future__ import annotations

import json
import math

import pytest

from core.layout import HourLayout, Layout, json_safe, read_json, write_json, written_whole


def test_undefined_metrics_are_written_as_null(tmp_path):
    # A segment whose holdout rows are all one class has no AUC: NaN in memory. Airflow's
    # XCom refused that ("Out of range float values are not JSON compliant") in the soak.
    summary = {"segments": {"new_items": {"auc": math.nan, "rows": 14}}, "x": [math.inf, 1.5]}
    path = write_json(tmp_path / "evaluate.json", summary)
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert read_json(path) == {
        "segments": {"new_items": {"auc": None, "rows": 14}},
        "x": [None, 1.5],
    }
    assert json.loads(json.dumps(json_safe(summary), allow_nan=False))["x"] == [None, 1.5]
    assert math.isnan(summary["segments"]["new_items"]["auc"])  # the input is left as it was


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        with written_whole(target) as tmp:
            assert tmp.suffix == ".keras" and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    with written_whole(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]


def test_the_day_so_far_lies_under_the_day_and_reads_history_as_the_night(tmp_path):
    night, hour = Layout(tmp_path), HourLayout(tmp_path, "2026-11-21", 9)
    hours = tmp_path / "intraday" / "dt=2026-11-21" / "hour=09"
    assert hour.examples("2026-11-21") == hours / "examples" / "dt=2026-11-21"
    assert hour.run_dir("2026-11-21") == hours / "runs" / "dt=2026-11-21"
    assert hour.examples("2026-11-20") == night.examples("2026-11-20")  # history: the night's
    assert hour.raw_events("2026-11-21") == night.raw_events("2026-11-21")  # reads the hours
    assert hour.online_store() == night.online_store()
    assert (hour.run_key("2026-11-21"), night.run_key("2026-11-21")) == (
        "2026-11-21T09",
        "2026-11-21",
    )
    for ds in ("2026-11-19", "2026-11-20"):
        (night.examples(ds) / "_SUCCESS").parent.mkdir(parents=True)
        (night.examples(ds) / "_SUCCESS").touch()
    hour.examples("2026-11-21").mkdir(parents=True)
    assert hour.processed_days("examples") == ["2026-11-19", "2026-11-20"]  # not complete yet
    (hour.examples("2026-11-21") / "_SUCCESS").touch()
    assert hour.processed_days("examples") == ["2026-11-19", "2026-11-20", "2026-11-21"]
    assert night.processed_days("examples") == ["2026-11-19", "2026-11-20"]  # not a whole day
    with pytest.raises(ValueError, match="hour must be an integer 0..23"):
        HourLayout(tmp_path, "2026-11-21", 24)
