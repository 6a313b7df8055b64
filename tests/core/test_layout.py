"""Writing helpers: JSON that strict readers (XCom, browsers) accept, files written whole."""

from __future__ import annotations

import json
import math

import pytest

from core.layout import json_safe, read_json, write_json, written_whole


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
