"""The intra-day update: the nightly stages on the day so far, hour after hour, then the night.

A tiny world: day 0 delivered whole trains the first champion at night; day 1 arrives hour
by hour. An hour fine-tunes the champion (``light``) and registers a version tagged with the
hour; the same hour again registers and promotes nothing new; a failed hour is recorded and
does not stop the next; the night after the hours consolidates the day as usual.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from core.layout import HourLayout, Layout
from core.settings import settings_under
from core.summaries import FailureSummary, PreprocessSummary, read_summary
from jobs.preprocess import BadDeliveryError
from models.registry import alias_version, client, promote
from ops import simulate
from pipeline import nightly

pytestmark = pytest.mark.slow
DAYS = ["2026-11-20", "2026-11-21"]
TINY = simulate.SCALES["tiny"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("intraday")
    # A tiny day holds a few dozen held-out cases: judge them anyway (as the e2e test does).
    settings = settings_under(root, {"FRESHRANK__GATE__MIN_RANKING_CASES": "10"})
    simulate.generate_day(settings.data_root, DAYS[0], 0, TINY)
    simulate.generate_day(settings.data_root, DAYS[0], 1, TINY, hourly=True)
    night = nightly.run_all(DAYS[0], settings, override="retrain")
    assert night["promoted"]
    return settings


def versions(settings) -> list:
    return client(settings).search_model_versions(f"name='{settings.model_name}'")


def test_an_hour_fine_tunes_the_champion_on_the_day_so_far_once(world):
    settings = world
    before = alias_version(settings)
    result = nightly.run_all(DAYS[1], settings, hour=15)
    at15 = HourLayout(settings.data_root, DAYS[1], 15)
    decision = nightly.decision_of(DAYS[1], settings, 15)
    assert decision.strategy == "light" and decision.champion["version"] == before
    mine = [v for v in versions(settings) if v.tags.get("ds") == f"{DAYS[1]}T15"]
    assert [str(v.version) for v in mine] == [result["version"]]
    assert (at15.run_dir(DAYS[1]) / "register.json").exists()
    assert not (Layout(settings.data_root).run_dir(DAYS[1]) / "register.json").exists()
    # The same hour again: the same candidate, not registered or promoted twice.
    champion = alias_version(settings)
    again = nightly.run_all(DAYS[1], settings, hour=15)
    assert again["version"] == result["version"] and again.get("reused")
    assert alias_version(settings) == champion
    assert len([v for v in versions(settings) if v.tags.get("ds") == f"{DAYS[1]}T15"]) == 1


def test_a_failed_hour_is_recorded_and_the_next_hour_and_the_night_run(world):
    settings = world
    raw = Layout(settings.data_root).raw_events_hour(DAYS[1], 16)
    part = next(raw.glob("part-*"))
    delivered = part.read_bytes()
    part.write_bytes(delivered[:-40])  # a truncated gzip: the delivery is refused
    with pytest.raises(BadDeliveryError, match="truncated or corrupt"):
        nightly.run_all(DAYS[1], settings, hour=16)
    at16 = HourLayout(settings.data_root, DAYS[1], 16)
    failure = read_summary(at16, DAYS[1], FailureSummary)
    assert failure.failed_stage == "preprocess" and "truncated" in failure.reason
    part.write_bytes(delivered)  # delivered again

    # The next hour reads hour 16 too. While it trains, a person moves the champion: the
    # hour's gate judged another champion, so it promotes nothing.
    for stage in ("preprocess", "validate", "choose_strategy", "fine_tune", "compress"):
        getattr(nightly, stage)(DAYS[1], settings, hour=17)
    nightly.evaluate(DAYS[1], settings, hour=17)
    decision = nightly.decision_of(DAYS[1], settings, 17)
    assert decision.strategy == "light"  # an hour's strategy, given no other
    judged = decision.champion["version"]
    other = next(str(v.version) for v in versions(settings) if str(v.version) != judged)
    promote(settings, other, "a person picks another champion")
    result = nightly.register(DAYS[1], settings, hour=17)
    assert not result["promoted"] and alias_version(settings) == other
    at17 = HourLayout(settings.data_root, DAYS[1], 17)
    assert read_summary(at17, DAYS[1], FailureSummary) is None
    assert read_summary(at17, DAYS[1], PreprocessSummary).through_hour == 17

    nightly.run_all(DAYS[1], settings)  # the night consolidates the whole day
    layout = Layout(settings.data_root)
    assert layout.processed_days("examples") == DAYS
    assert (at17.examples(DAYS[1]) / "_SUCCESS").exists()  # apart from the night's
    night = read_summary(layout, DAYS[1], PreprocessSummary)
    assert (
        night.through_hour is None
        and night.rows_in > read_summary(at17, DAYS[1], PreprocessSummary).rows_in
    )


def _hold_lock(settings, seconds):
    with nightly.training_lock(settings, "a night"):
        time.sleep(seconds)


def test_a_night_and_an_hour_never_train_at_the_same_time(tmp_path):
    settings = settings_under(tmp_path)
    holder = multiprocessing.get_context("spawn").Process(target=_hold_lock, args=(settings, 3))
    holder.start()
    lock = Layout(settings.data_root).root / "runs" / "training.lock"
    deadline = time.time() + 30
    while not (lock.exists() and lock.read_text()):
        assert time.time() < deadline
        time.sleep(0.05)
    started = time.perf_counter()
    with nightly.training_lock(settings, "an hour"):
        waited = time.perf_counter() - started
        assert "an hour" in lock.read_text()
    holder.join()
    assert waited > 1.0  # it waited for the night's training to end
    assert lock.read_text() == ""
