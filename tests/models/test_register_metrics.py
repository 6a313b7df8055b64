"""What the register stage logs to MLflow from the evaluation (the store itself is faked)."""

from __future__ import annotations

from core.layout import Layout
from core.summaries import (
    CompressSummary,
    EvaluateSummary,
    PreprocessSummary,
    StrategyDecision,
    TrainSummary,
    write_summary,
)
from models import registry

DS = "2026-11-20"


def test_register_logs_the_ranking_figures_and_intervals(settings, monkeypatch):
    layout = Layout(settings.data_root)
    write_summary(
        layout,
        PreprocessSummary(ds=DS, rows_in=10, clean=10, quarantined=0, duplicates=0, examples=10,
                          train_examples=8, holdout_examples=2, state_as_of="2026-11-19"),
    )  # fmt: skip
    write_summary(layout, StrategyDecision(ds=DS, strategy="full", reasons=["r"]))
    write_summary(
        layout,
        TrainSummary(ds=DS, strategy="full", base_model=None, model_path="m", workers=1,
                     days=[DS], rows=10, epochs=1),
    )  # fmt: skip
    sizes = {k: {"bytes": 1, "gzip_bytes": 1} for k in ("int8_tflite", "float_tflite", "keras")}
    write_summary(
        layout,
        CompressSummary(ds=DS, sizes=sizes, target_sparsity=0.5, float_tflite_path="f",
                        int8_tflite_path="i"),
    )  # fmt: skip
    ci = {"metric": "ndcg@10", "diff": 0.02, "low": 0.01, "high": 0.03, "confidence": 0.9,
          "cases": 500, "users": 300}  # fmt: skip
    write_summary(
        layout,
        EvaluateSummary(
            ds=DS,
            holdout_rows=100,
            segments={"candidate_int8": {"all": {"auc": 0.7, "ndcg@10": 0.4, "rows": 100}}},
            ranking_cases=500,
            ranking={
                "candidate_int8": {"hr@10": 0.5, "ndcg@10": 0.3, "cases": 500},
                "popularity": {"hr@10": 0.4, "ndcg@10": float("nan"), "cases": 500},
            },
            ranking_vs_champion=ci,
            ranking_vs_popularity={**ci, "low": float("nan")},
            gate_passed=True,
            gate_reasons=["credibly better than the champion"],
        ),
    )
    logged = {}

    def fake_register(settings, candidate, params, metrics, tags, promote, reports, state_as_of):
        logged.update(metrics=metrics, promote=promote, state_as_of=state_as_of)
        return {"version": "2", "promoted": promote, "already_promoted": None}

    monkeypatch.setattr(registry, "register_candidate", fake_register)
    registry.register_day(settings, DS)
    metrics = logged["metrics"]
    assert logged["promote"] is True
    assert logged["state_as_of"] == "2026-11-19"  # the serving store may not be older
    assert metrics["ranking_cases"] == 500
    assert metrics["ranking.candidate_int8.hr_at_10"] == 0.5
    assert metrics["ranking.popularity.hr_at_10"] == 0.4
    assert "ranking.popularity.ndcg_at_10" not in metrics  # NaN: MLflow refuses it
    assert metrics["ranking_vs_champion.low"] == 0.01
    assert metrics["ranking_vs_popularity.diff"] == 0.02
    assert "ranking_vs_popularity.low" not in metrics
    assert metrics["candidate_int8.ndcg_at_10"] == 0.4
    assert not any("recall" in name for name in metrics)
