"""A day delivered hour by hour: the day so far is preprocessed through an hour, again and
again with the same result, and the night after the hours equals the day delivered whole."""

from __future__ import annotations

import gzip
import shutil

import pandas as pd
import pytest

from core.layout import HourLayout, Layout
from core.settings import settings_under
from jobs.preprocess import BadDeliveryError, MissingDeltaError, delivered_files, preprocess_day
from ops import simulate
from pipeline.nightly import delta_ready

DS = "2026-11-20"
DIRTY = simulate.DirtConfig(0.02, 0.01, 0.005, 0.005, 0.002, 0.002, 0.002)
COUNTS = ("rows_in", "clean", "quarantined", "duplicates", "examples", "ranking_cases")


def lines(files) -> int:
    total = 0
    for f in files:
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def table(path, keys) -> pd.DataFrame:
    df = pd.read_parquet(path)
    return df.sort_values(keys).reset_index(drop=True)


@pytest.fixture
def shops(tmp_path):
    """The same dirty tiny day, delivered by hour and delivered whole."""
    out = {}
    for name, hourly in (("hourly", True), ("whole", False)):
        s = settings_under(tmp_path / name)
        simulate.generate_day(s.data_root, DS, 0, simulate.SCALES["tiny"], DIRTY, True, hourly)
        out[name] = s
    return out


def test_the_day_so_far_is_idempotent_and_the_night_equals_the_whole_day(spark, shops):
    s = shops["hourly"]
    layout = Layout(s.data_root)
    raw = layout.raw_events(DS)
    assert not delivered_files(raw, 13) == delivered_files(raw)  # 14 .. 23 come later

    first = preprocess_day(spark, DS, s, hour=13)
    at13 = HourLayout(s.data_root, DS, 13)
    assert first["through_hour"] == 13
    assert first["rows_in"] == lines(delivered_files(raw, 13))  # hours 00 .. 13, each once
    assert first["rows_in"] == first["clean"] + first["quarantined"] + first["duplicates"]
    assert (
        at13.examples(DS)
        == layout.root / "intraday" / f"dt={DS}" / "hour=13" / "examples" / f"dt={DS}"
    )
    clean = table(at13.clean_events(DS), ["event_id"])
    assert pd.to_datetime(clean["event_time"]).max() < pd.Timestamp(f"{DS}T14:00:00")
    examples = table(at13.examples(DS), ["request_id", "item_id"])

    again = preprocess_day(spark, DS, s, hour=13)  # hour 13 processed twice
    assert {k: again[k] for k in COUNTS} == {k: first[k] for k in COUNTS}
    pd.testing.assert_frame_equal(table(at13.clean_events(DS), ["event_id"]), clean)
    pd.testing.assert_frame_equal(table(at13.examples(DS), ["request_id", "item_id"]), examples)
    assert layout.processed_days("examples") == []  # the day so far is not a processed day
    assert at13.processed_days("examples") == [DS]

    # The night, after its hours, equals the same day delivered whole.
    assert delta_ready(DS, s)
    night = preprocess_day(spark, DS, s)
    whole = preprocess_day(spark, DS, shops["whole"])
    assert night["through_hour"] is None
    assert {k: night[k] for k in COUNTS} == {k: whole[k] for k in COUNTS}
    assert night["rows_in"] == lines(delivered_files(raw)) > first["rows_in"]
    other = Layout(shops["whole"].data_root)
    for path, keys in (("clean_events", ["event_id"]), ("examples", ["request_id", "item_id"])):
        got = table(getattr(layout, path)(DS), keys)
        pd.testing.assert_frame_equal(got, table(getattr(other, path)(DS), keys))
    assert at13.processed_days("examples") == [DS]  # the hour's outputs stay apart


def test_hours_still_arriving_bad_hour_folders_and_a_day_not_yet_complete(spark, shops):
    s = shops["hourly"]
    raw = Layout(s.data_root).raw_events(DS)
    (raw / "_SUCCESS").unlink()
    assert not delta_ready(DS, s)  # hours in, but not the last one: the night waits
    (raw / "hour=09" / "_SUCCESS").unlink()  # hour 09 still being written
    assert all("hour=09" not in str(f) for f in delivered_files(raw, 13))
    shutil.rmtree(raw / "hour=00")
    with pytest.raises(MissingDeltaError, match="through hour 00"):
        preprocess_day(spark, DS, s, hour=0)
    (raw / "hour=24").mkdir()
    with pytest.raises(BadDeliveryError, match=r"hour=24: not an hour of the day"):
        preprocess_day(spark, DS, s, hour=13)
