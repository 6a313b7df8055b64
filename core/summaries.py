"""What each stage did: one typed record per stage, at ``runs/dt=<ds>/<stage>.json``.

A stage function builds its record and writes it with :func:`write_summary`, the only
writer; later stages, the registry and the benchmarks read it back with
:func:`read_summary`. The declared fields are what other code and users rely on, checked on
write and on read; a stage may add details (timings, per-layer figures) as extra fields.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from core.layout import Layout, json_safe, read_json, write_json

S = TypeVar("S", bound="StageSummary")


class StageSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    STAGE: ClassVar[str]

    ds: str
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN as None): it travels through XCom, which refuses NaN."""
        return json_safe(self.model_dump(mode="json"))


class PreprocessSummary(StageSummary):
    STAGE = "preprocess"
    rows_in: int
    clean: int
    quarantined: int
    quarantined_by_reason: dict[str, int] = {}
    duplicates: int
    examples: int
    train_examples: int
    holdout_examples: int
    # Clean events without a user id (guest orders): they feed item statistics only.
    anonymous: int = 0
    # Held-out positives written to ranking/dt=<ds>/, each among sampled candidates.
    ranking_cases: int = 0
    # The night whose feature state the examples joined (None: the first day, none yet).
    state_as_of: str | None = None
    # An intra-day run: the day so far through this hour (None: the whole day, the night).
    through_hour: int | None = None
    # "impressions" (labels of what was shown) or "sampled_negatives" (positives-only logs).
    labels_from: str | None = None


class MaterializeSummary(StageSummary):
    STAGE = "materialize"
    # The night whose features the online store serves now, and its rows per table.
    state_as_of: str
    rows: dict[str, int]
    loaded: bool  # False: the store already held a later night (a backfill), left as it was


class ValidateSummary(StageSummary):
    STAGE = "validate"
    success: bool
    problems: list[str]
    examples: int
    drift_psi: dict[str, float | None] = {}
    histograms: dict[str, dict[str, int]] = {}
    # The day's shares, which later days judge theirs against (None: not measured).
    quarantine_share: float | None = None
    anonymous_share: float | None = None
    # Model inputs with a single value over the day's examples (they carry nothing).
    constant_inputs: list[str] = []


class StrategyDecision(StageSummary):
    STAGE = "choose_strategy"
    strategy: str
    reasons: list[str]
    champion: dict[str, Any] | None = None
    # Held-out ranking cases of the day, and the champion's and popularity's score on them:
    # {"metric", "champion", "popularity", "cases"} (None: no champion or too few cases).
    ranking_cases: int = 0
    ranking_today: dict[str, Any] | None = None


class TrainSummary(StageSummary):
    STAGE = "fine_tune"
    strategy: str
    base_model: str | None
    model_path: str
    workers: int
    days: list[str]
    rows: int
    epochs: int


class CompressSummary(StageSummary):
    STAGE = "compress"
    sizes: dict[str, dict[str, int]]
    target_sparsity: float
    float_tflite_path: str
    int8_tflite_path: str


class EvaluateSummary(StageSummary):
    STAGE = "evaluate"
    holdout_rows: int
    segments: dict[str, dict[str, dict[str, Any]]]
    latency: dict[str, Any] | None = None
    # Sampled-candidate ranking on ranking/dt=<ds>: {ranker: {"hr@10", "ndcg@10", "cases"}}
    # and the gate's intervals of candidate int8 minus champion / popularity:
    # {"metric", "diff", "low", "high", "confidence", "cases", "users"}.
    ranking_cases: int = 0
    ranking: dict[str, dict[str, Any]] = {}
    ranking_vs_champion: dict[str, Any] | None = None
    ranking_vs_popularity: dict[str, Any] | None = None
    gate_passed: bool
    gate_reasons: list[str]


class RegisterSummary(StageSummary):
    STAGE = "register"
    promoted: bool
    why: str


class CleanupSummary(StageSummary):
    STAGE = "cleanup"
    dry_run: bool
    freed_bytes: int


class FailureSummary(StageSummary):
    STAGE = "failure"
    failed_stage: str
    reason: str
    at: str


def failed_validation(layout: Layout, ds: str) -> bool:
    """True when the day's ``validate.json`` records a failure: its data is never trained or
    judged on. A day never validated (stages run by hand) is not failed."""
    summary = read_summary(layout, ds, ValidateSummary)
    return summary is not None and not summary.success


def summary_path(layout: Layout, stage: str, ds: str):
    return layout.run_dir(ds) / f"{stage}.json"


def write_summary(layout: Layout, summary: StageSummary | dict, cls: type[S] | None = None):
    """Check ``summary`` against its schema and write it; return it as a JSON-safe dict."""
    record = summary if isinstance(summary, StageSummary) else cls.model_validate(summary)
    payload = record.to_dict()
    write_json(summary_path(layout, record.STAGE, record.ds), payload)
    return payload


def read_summary(layout: Layout, ds: str, cls: type[S], required: bool = False) -> S | None:
    """The stage's record of ``ds``; None when the stage has not run (or raise, if
    ``required``, naming the file and the stage to run)."""
    path = summary_path(layout, cls.STAGE, ds)
    raw = read_json(path)
    if raw is None:
        if required:
            raise FileNotFoundError(f"{path} is missing: run {cls.STAGE} for {ds} first")
        return None
    return cls.model_validate(raw)
