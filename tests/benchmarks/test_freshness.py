"""The freshness benchmark end to end on a tiny world: structure and sanity of what it writes.

Runs ``python -m benchmarks.freshness --quick`` smaller still (tiny scale, 2 bootstrap
days, 2 nights, float full retrain): the real nightly pipeline, Spark and all, in a few
minutes. The numbers of so small a world say nothing about the targets; this checks that
every series is there, aligned and plausible.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import freshness as bench_freshness

pytestmark = pytest.mark.slow
SERIES = ("oracle", "stale", "incremental", "full_retrain")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--out", str(out), "--quick", "--scale", "tiny"]
    argv += ["--bootstrap-days", "2", "--nightly-days", "2", "--full-retrain-model", "float"]
    assert bench_freshness.main(argv) == 0
    return out, json.loads((out / "freshness.json").read_text())


def test_writes_aligned_series_for_every_night(bench):
    out, result = bench
    days = result["days"]
    assert days == ["2026-11-03", "2026-11-04"]
    assert result["eval_day"] == ["2026-11-04", "2026-11-05"]
    assert result["bootstrap"] == ["2026-11-01", "2026-11-02"]
    for key in ("auc", "log_loss"):
        assert set(result[key]) == set(SERIES)
        assert all(len(result[key][s]) == len(days) for s in SERIES)
    for key in ("strategy", "promoted", "champion_version", "oracle_matched_rows"):
        assert len(result[key]) == len(days), key
    assert set(result["train_seconds"]) == {"incremental", "full_retrain"}
    assert all(len(v) == len(days) for v in result["train_seconds"].values())
    assert set(result["strategy"]) <= {"skip", "light", "full", "retrain"}
    assert result["full_retrain_model"] == "float"
    assert result["world"]["requests_per_day"] == 400  # the tiny preset, as it is
    assert len(result["impressions_per_day"]) == 5  # 2 bootstrap + 2 nights + 1 to score
    assert result["total_seconds"] > 0
    png = out / "freshness.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_scores_are_plausible(bench):
    _, result = bench
    auc, loss = result["auc"], result["log_loss"]
    for s in SERIES:
        assert all(0.5 < a <= 1.0 for a in auc[s]), (s, auc[s])
        assert all(0.0 < v < 1.0 for v in loss[s]), (s, loss[s])
    # The truth knows best: on average no model beats the true click probabilities.
    for s in ("stale", "incremental", "full_retrain"):
        assert np.mean(auc["oracle"]) >= np.mean(auc[s]), s
        assert np.mean(loss["oracle"]) <= np.mean(loss[s]), s
    # A clean delivery: every example row found its true p_click.
    assert result["oracle_matched_rows"] == result["example_rows"]
    assert all(n > 1000 for n in result["example_rows"])
    # Night 2 trains from scratch on all 4 days so far; the bootstrap model on 2.
    assert result["full_retrain_days"] == [3, 4]
    assert all(s > 0 for s in result["train_seconds"]["full_retrain"])


def test_summary_and_targets_follow_the_series(bench):
    _, result = bench
    summary, targets = result["summary"], result["targets"]
    for s in SERIES:
        assert summary["mean_auc"][s] == pytest.approx(np.mean(result["auc"][s]))
        assert summary["last_day_auc"][s] == result["auc"][s][-1]
    gap = summary["mean_auc"]["full_retrain"] - summary["mean_auc"]["incremental"]
    assert summary["auc_gap_full_retrain_minus_incremental"] == pytest.approx(gap)
    assert targets["incremental_mean_auc_within_0.002_of_full_retrain"] == (gap <= 0.002)
    assert set(targets) == {
        "incremental_mean_auc_within_0.002_of_full_retrain",
        "incremental_mean_auc_within_0.010_of_oracle",
        "stale_ge_0.02_below_incremental_last_day",
        "incremental_train_time_le_10pct_of_full_retrain_last_day",
    }
    assert all(isinstance(v, bool) for v in targets.values())
    # The bootstrap champion is what the stale series scores; it is recorded either way.
    assert result["bootstrap_model"]["version"] == "1"
    assert isinstance(result["bootstrap_model"]["forced_promotion"], bool)


def test_refuses_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        bench_freshness.main(["--out", str(tmp_path), "--nightly-days", "0"])
    with pytest.raises(ValueError, match="unknown scale"):
        bench_freshness.world_config("huge", False, None, 7)
