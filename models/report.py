"""The evaluation report of one night: a self-contained HTML page with plots.

Shows the gate's decision with every reason, the sampled-candidate ranking (HR@10 and
NDCG@10 of candidate, champion, and popularity and random as reference rows) with the
intervals the gate judged, candidate vs champion on the held-out requests (overall and per
segment), score distributions, the calibration curve, and the AUC of champion and
candidate over recent nights, so decay is visible. Written to
``models/dt=<ds>/candidate/report.html`` and ``runs/dt=<ds>/report.html``; the register
stage logs it to MLflow with the run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from core.layout import Layout, read_json
from models.metrics import calibration_curve

METRICS = ("auc", "log_loss", "ece", "ndcg@10", "rows")
RANKING_COLUMNS = ("hr@10", "ndcg@10", "cases")
REFERENCES = ("popularity", "random")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(layout: Layout, ds: str, result: dict, y, scores: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, p in scores.items():
        if len(p):  # no holdout rows: nothing to draw
            ax.hist(p, bins=50, histtype="step", label=name, density=True)
    ax.set_xlabel("predicted click probability")
    ax.set_title("score distributions")
    if len(y):
        ax.legend(fontsize=7)
    out["scores"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    top = 0.0
    for name, p in scores.items():
        curve = calibration_curve(y, p, bins=20)
        xs, ys = [c["predicted"] for c in curve], [c["observed"] for c in curve]
        top = max([top, *xs, *ys])
        ax.plot(xs, ys, marker=".", label=name)
    top = top or 1.0  # no holdout rows: an empty plot
    ax.set_xlim(0, min(1, top * 1.1))
    ax.set_ylim(0, min(1, top * 1.1))
    ax.set_xlabel("predicted")
    ax.set_ylabel("observed click rate")
    ax.set_title("calibration")
    ax.legend(fontsize=7)
    out["calibration"] = _png(fig)

    segs = list(result["segments"]["candidate_int8"])
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / len(result["segments"])
    for i, (name, by_seg) in enumerate(result["segments"].items()):
        vals = [by_seg[s]["auc"] for s in segs]
        ax.bar(np.arange(len(segs)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(segs)) + width * (len(result["segments"]) - 1) / 2)
    ax.set_xticklabels(segs, rotation=20, fontsize=7)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("AUC")
    ax.set_title("AUC by segment")
    ax.legend(fontsize=7)
    out["segments"] = _png(fig)

    history = auc_history(layout, ds)
    if history:
        fig, ax = plt.subplots(figsize=(6, 3))
        days = [h["ds"][5:] for h in history]
        ax.plot(days, [h["candidate"] for h in history], marker="o", label="candidate int8")
        ax.plot(days, [h["champion"] for h in history], marker="s", label="champion int8")
        ax.set_ylabel("holdout AUC")
        ax.set_title("recent nights")
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.legend(fontsize=7)
        out["history"] = _png(fig)
    return out


def auc_history(layout: Layout, ds: str, days: int = 14) -> list[dict]:
    """Candidate and champion AUC of the last ``days`` evaluated nights up to ``ds``."""
    out = []
    for day in [d for d in layout.processed_days("examples") if d <= ds][-days:]:
        ev = read_json(layout.run_dir(day) / "evaluate.json")
        if day == ds or ev is None:
            continue
        champ = (ev.get("champion") or {}).get("int8") or {}
        out.append({"ds": day, "candidate": ev["candidate"]["int8"]["auc"],
                    "champion": champ.get("auc", math.nan)})  # fmt: skip
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def ranking_table(result: dict) -> str:
    """Sampled HR@10/NDCG@10 per ranker (references marked) and the gate's intervals."""
    from models.gate import describe_interval

    ranking = result.get("ranking") or {}
    head = "".join(f"<th>{m}</th>" for m in RANKING_COLUMNS)
    rows = []
    for name, values in ranking.items():
        label = f"{name} (reference)" if name in REFERENCES else name
        cells = "".join(f"<td>{_fmt(values.get(m))}</td>" for m in RANKING_COLUMNS)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    intervals = [
        describe_interval(ci, other)
        for other, ci in (
            ("champion", result.get("ranking_vs_champion")),
            ("popularity", result.get("ranking_vs_popularity")),
        )
        if ci
    ]
    items = "".join(f"<li>candidate int8: {html.escape(i)}</li>" for i in intervals)
    return (
        f"<h2>Ranking: {result.get('ranking_cases', 0)} held-out cases, each a positive among "
        f"sampled candidates</h2><table><tr><th>ranker</th>{head}</tr>{''.join(rows)}</table>"
        f"<ul>{items}</ul>"
    )


def render(ds: str, result: dict, images: dict[str, str]) -> str:
    segs = list(result["segments"]["candidate_int8"])
    head = "".join(f"<th>{m}</th>" for m in METRICS)
    rows = []
    for seg in segs:
        for model, by_seg in result["segments"].items():
            cells = "".join(f"<td>{_fmt(by_seg[seg].get(m))}</td>" for m in METRICS)
            rows.append(f"<tr><td>{html.escape(seg)}</td><td>{model}</td>{cells}</tr>")
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result["gate_reasons"])
    latency = result.get("latency") or {}
    lat = ", ".join(f"{k} {_fmt(v)}" for k, v in latency.items()) or "-"
    imgs = "".join(
        f'<img alt="{k}" src="data:image/png;base64,{v}" style="margin:4px">'
        for k, v in images.items()
    )
    verdict = "PASSED: may become champion" if result["gate_passed"] else "FAILED: not promoted"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>FreshRank evaluation {ds}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:right}}
td:first-child,td:nth-child(2){{text-align:left}}</style></head><body>
<h1>Evaluation of {ds}: gate {verdict}</h1><ul>{reasons}</ul>
{ranking_table(result)}
<h2>Held-out requests</h2>
<p>{result["holdout_rows"]} held-out rows, click rate {_fmt(result["holdout_click_rate"])}.
int8 latency (one thread): {lat}</p>
<table><tr><th>segment</th><th>model</th>{head}</tr>{"".join(rows)}</table>
<div>{imgs}</div></body></html>"""


def write_report(layout: Layout, ds: str, result: dict, y, scores: dict, out_dir: Path) -> Path:
    page = render(ds, result, plots(layout, ds, result, y, scores))
    path = Path(out_dir) / "report.html"
    path.write_text(page)
    run_copy = layout.run_dir(ds) / "report.html"
    run_copy.parent.mkdir(parents=True, exist_ok=True)
    run_copy.write_text(page)
    return path
