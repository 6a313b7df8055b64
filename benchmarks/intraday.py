"""Intra-day benchmark: what hourly updates are worth, and how soon an hour is the champion.

    python -m benchmarks.intraday --out var/bench        # make bench-intraday

A simulated shop (``--scale``, demo by default) in a throwaway world under
``<out>/intraday-world``:

* ``--warm-days`` days delivered whole, each through the nightly pipeline
  (:func:`pipeline.nightly.run_all`; the first one retrains): the nightly champion;
* a **trend day** delivered hour by hour: from ``--trend-hour`` a category trends, some of its
  items are on flash sale, items launch and some users' interests move
  (:class:`ops.simulate.IntradayConfig`); then its night (the nightly run consolidates it);
* a **quiet day**, delivered hour by hour, without an intra-day event.

On each of the two days, hours ``0 .. --first-hour - 1`` are delivered at once, then for
each hour ``H`` from ``--first-hour`` to ``--last-hour``: the hour is delivered
(:func:`ops.simulate.generate_hour`) and the intra-day update runs on the day so far
(:func:`pipeline.nightly.run_all` with ``hour=H``: preprocess, validate, ``light``
fine-tune, compress, the gate, register and promote). ``delivery_to_champion_seconds`` is
from the hour's delivery to its version being the champion (hours whose candidate the gate
refused have none: ``promoted`` false). Then both models are scored on hour ``H + 1``'s
impressions (the examples of the next run's day so far whose request was shown in that
hour; neither model has trained on them): ``nightly_only`` (the champion of the night
before, all day) and ``hourly`` (the champion after hour ``H``), by AUC of the clicks, with
the simulator's true click probability as the ``oracle``.

Keys: ``hours`` (one row per evaluated hour), ``delivery_to_champion_seconds`` (``p50``,
``max``, over the hours whose candidate was promoted), ``auc_gain_after_trend`` (hourly minus
nightly-only, mean over the trend day's hours from the trend hour), ``quiet_day_auc_change``
(the same over the quiet day). Targets (issue "Fresher than nightly"): p50 <= 300 s, gain
>= 0.01, quiet change >= -0.002. Writes ``<out>/intraday.json`` and ``<out>/intraday.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from core.layout import HourLayout, shift_ds
from core.settings import settings_under

log = logging.getLogger("bench.intraday")
START = "2026-11-20"
TARGETS = {
    "delivery_to_champion_p50_seconds": ("<=", 300.0),
    "auc_gain_after_trend": (">=", 0.01),
    "quiet_day_auc_change": (">=", -0.002),
}


def hour_rows(settings, ds: str, hour: int):
    """The examples of the day so far through ``hour`` whose request was shown in ``hour``,
    with the true click probability of each impression."""
    import pandas as pd
    import pyarrow.parquet as pq

    from models import ranker
    from ops import simulate

    layout = HourLayout(settings.data_root, ds, hour)
    events = pq.read_table(
        str(layout.clean_events(ds)),
        columns=["event_id", "event_type", "event_time", "request_id", "item_id"],
    ).to_pandas()
    shown = events[(events["event_type"] == "impression")]
    shown = shown[pd.to_datetime(shown["event_time"]).dt.hour == hour]
    truth = pd.read_parquet(simulate.truth_dir(settings.data_root, ds) / "truth.parquet")
    known = shown.merge(truth, on="event_id").drop_duplicates(["request_id", "item_id"])
    examples = ranker.read_examples([layout.examples(ds)])
    return examples.merge(known[["request_id", "item_id", "p_click"]], on=["request_id", "item_id"])


def score(rows, models: dict[str, str]) -> dict[str, float | None]:
    """AUC of the clicks for each int8 model (and the oracle) on ``rows``."""
    from models import ranker
    from models.metrics import auc
    from serving.scorer import TFLiteScorer

    y = rows["label_click"].to_numpy(np.float64)
    x = ranker.to_inputs(rows)
    out = {name: auc(y, TFLiteScorer(path).predict(x)) for name, path in models.items()}
    out["oracle"] = auc(y, rows["p_click"].to_numpy(np.float64))
    return out


def champion_int8(settings, dest: Path) -> dict:
    from models.registry import fetch_champion

    found = fetch_champion(settings, dest)
    return {"version": found["version"], "int8": found["int8_tflite"]}


def run_day(settings, day_index: int, kind: str, config, first: int, last: int, tmp: Path):
    """Deliver day ``day_index`` hour by hour with an intra-day update after each hour from
    ``first`` to ``last``; per hour the scores on the next hour and the update's times."""
    from ops import simulate
    from pipeline import nightly

    ds = shift_ds(START, day_index)
    nightly_only = champion_int8(settings, tmp / f"{ds}-nightly")
    for hour in range(first):
        simulate.generate_hour(settings.data_root, START, day_index, hour, config)
    rows, hourly = [], nightly_only
    for hour in range(first, last + 1):
        simulate.generate_hour(settings.data_root, START, day_index, hour, config)
        delivered = time.perf_counter()
        try:
            result = nightly.run_all(ds, settings, hour=hour)
        except Exception as exc:  # noqa: BLE001 - a failed hour is a row, not the end
            log.warning("%s hour %02d failed: %s", ds, hour, exc)
            result = {"failed": f"{type(exc).__name__}: {exc}"}
        seconds = time.perf_counter() - delivered
        if hour > first and "failed" not in result:  # what served this hour: as of hour - 1
            scores = score(
                hour_rows(settings, ds, hour),
                {"nightly_only": nightly_only["int8"], "hourly": hourly["int8"]},
            )
            rows[-1].update(
                next_hour=hour,
                auc=scores,
                auc_gain=scores["hourly"] - scores["nightly_only"],
            )
        promoted = bool(result.get("promoted"))
        if promoted:
            hourly = champion_int8(settings, tmp / f"{ds}-{hour:02d}")
        rows.append(
            {
                "day": kind,
                "ds": ds,
                "hour": hour,
                "strategy": result.get("strategy"),
                "promoted": promoted,
                "why": result.get("why") or result.get("failed"),
                "run_seconds": round(seconds, 1),
                "delivery_to_champion_seconds": round(seconds, 1) if promoted else None,
                "champion": hourly["version"],
            }
        )
        log.info("%s hour %02d: %s in %.0fs; %s", ds, hour, "promoted" if promoted else
                 "not promoted", seconds, rows[-2].get("auc") if len(rows) > 1 else "")  # fmt: skip
    return [r for r in rows if "auc" in r]  # the last hour (and a failed one's) unscored


def mean(values) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return float(np.mean(values)) if values else None


def summarise(hours: list[dict], trend_hour: int) -> dict:
    times = [h["delivery_to_champion_seconds"] for h in hours if h["delivery_to_champion_seconds"]]
    after = [h["auc_gain"] for h in hours if h["day"] == "trend" and h["next_hour"] >= trend_hour]
    quiet = [h["auc_gain"] for h in hours if h["day"] == "quiet"]
    return {
        "delivery_to_champion_seconds": {
            "p50": float(np.median(times)) if times else None,
            "max": float(max(times)) if times else None,
            "promoted_hours": len(times),
            "hours": len(hours),
        },
        "auc_gain_after_trend": mean(after),
        "quiet_day_auc_change": mean(quiet),
    }


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, day in zip(axes, ("trend", "quiet"), strict=True):
        hours = [h for h in result["hours"] if h["day"] == day]
        x = [h["next_hour"] for h in hours]
        for name, style in (("oracle", ":"), ("nightly_only", "--"), ("hourly", "-")):
            ax.plot(x, [h["auc"][name] for h in hours], style, marker="o", label=name)
        if day == "trend":
            ax.axvline(result["trend_hour"], color="grey", lw=0.8)
        ax.set_title(f"{day} day: AUC on the next hour's impressions")
        ax.set_xlabel("hour (UTC)")
    axes[0].set_ylabel("AUC")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def bench_intraday(out: Path, scale: str, warm_days: int, trend_hour: int, first: int, last: int):
    from models.registry import promote
    from ops import simulate
    from pipeline import nightly

    world = out / "intraday-world"
    shutil.rmtree(world, ignore_errors=True)
    settings = settings_under(world)
    event = simulate.IntradayConfig(day=warm_days, hour=trend_hour)
    config = dataclasses.replace(simulate.SCALES[scale], intraday=event)
    tmp = world / "bench"
    started = time.perf_counter()
    for k in range(warm_days):  # the nightly champion
        simulate.generate_day(settings.data_root, START, k, config)
        night = nightly.run_all(
            shift_ds(START, k), settings, override="retrain" if k == 0 else None
        )
        if k == 0 and not night.get("promoted"):
            promote(settings, night["version"], "intraday benchmark: the first champion")
    hours = run_day(settings, warm_days, "trend", config, first, last, tmp)
    for hour in range(last + 1, 24):  # the rest of the trend day, then its night
        simulate.generate_hour(settings.data_root, START, warm_days, hour, config)
    night = nightly.run_all(shift_ds(START, warm_days), settings)
    hours += run_day(settings, warm_days + 1, "quiet", config, first, last, tmp)
    result = {
        "scale": scale,
        "trend_hour": trend_hour,
        "trend_day": shift_ds(START, warm_days),
        "quiet_day": shift_ds(START, warm_days + 1),
        "trend_night": {k: night.get(k) for k in ("strategy", "promoted", "why")},
        **summarise(hours, trend_hour),
        "hours": hours,
    }
    values = {
        "delivery_to_champion_p50_seconds": result["delivery_to_champion_seconds"]["p50"],
        "auc_gain_after_trend": result["auc_gain_after_trend"],
        "quiet_day_auc_change": result["quiet_day_auc_change"],
    }
    result["targets"] = {
        key: {"target": f"{op} {bound}", "value": values[key],
              "met": values[key] is not None
              and (values[key] <= bound if op == "<=" else values[key] >= bound)}
        for key, (op, bound) in TARGETS.items()
    }  # fmt: skip
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="var/bench")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--warm-days", type=int, default=2)
    parser.add_argument("--trend-hour", type=int, default=12)
    parser.add_argument("--first-hour", type=int, default=8)
    parser.add_argument("--last-hour", type=int, default=21)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = bench_intraday(
        out, args.scale, args.warm_days, args.trend_hour, args.first_hour, args.last_hour
    )
    (out / "intraday.json").write_text(json.dumps(result, indent=2, default=str))
    plot(result, out / "intraday.png")
    print(json.dumps({k: result[k] for k in ("delivery_to_champion_seconds",
          "auc_gain_after_trend", "quiet_day_auc_change", "targets")}, indent=2))  # fmt: skip
    print(f"wrote {out / 'intraday.json'} and {out / 'intraday.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
