"""Settings for every stage: one TOML file plus environment overrides.

The file is ``freshrank.toml`` at the repository root unless ``FRESHRANK_CONFIG`` names
another. Each ``[section]`` fills one frozen dataclass below. Any value can be overridden
from the environment as ``FRESHRANK__<SECTION>__<KEY>`` (e.g.
``FRESHRANK__TRAIN__FULL_EPOCHS=2``); the two locations users change most have short forms:
``FRESHRANK_DATA_ROOT`` and ``MLFLOW_TRACKING_URI``.

Nothing happens at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "freshrank.toml"


@dataclass(frozen=True)
class PreprocessSettings:
    spark_master: str = "local[2]"
    # In Airflow: take the master from this Spark connection instead (e.g. "spark_default").
    spark_conn_id: str = ""
    spark_driver_memory: str = "2g"
    shuffle_partitions: int = 4
    # Events older than this many days before the logical date are quarantined as too late.
    max_late_days: int = 3
    # Events stamped later than the end of the logical day plus this slack are quarantined.
    future_slack_minutes: int = 60
    # Share of requests (by hash of request id) kept out of training for evaluation.
    holdout_fraction: float = 0.1
    # Logs without impressions: negatives sampled from the day's items per positive.
    negatives_per_positive: int = 4
    # Feature state: counts halve every this many days; smoothed CTRs start from the global
    # CTR with this many pseudo-impressions.
    feature_half_life_days: float = 7.0
    ctr_prior_strength: float = 20.0
    seed: int = 7


@dataclass(frozen=True)
class ValidateSettings:
    min_examples: int = 100
    min_click_rate: float = 0.001
    max_click_rate: float = 0.8
    max_price: float = 1_000_000.0
    # Hard failure when more than this share of the day's rows was quarantined.
    max_quarantine_share: float = 0.5
    # Examples today vs the mean of recent days: hard failure outside [min, max] ratio.
    min_volume_ratio: float = 0.1
    max_volume_ratio: float = 20.0
    volume_window_days: int = 7
    # Population stability index of feature distributions vs the previous day.
    drift_psi_warn: float = 0.2


@dataclass(frozen=True)
class StrategySettings:
    skip_below_examples: int = 50
    light_below_examples: int = 2_000
    retrain_psi: float = 0.5
    # Retrain from scratch when the champion's AUC on today's data falls below this.
    retrain_champion_auc: float = 0.55


@dataclass(frozen=True)
class TrainSettings:
    embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (64, 32)
    cross_layers: int = 2  # DCN-v2 cross layers before the MLP (0: plain MLP)
    batch_size: int = 512
    learning_rate: float = 0.002
    finetune_learning_rate: float = 0.001
    retrain_epochs: int = 2
    full_epochs: int = 1
    light_epochs: int = 1
    # Replay: a sample of recent days is mixed into the fine-tune to bound forgetting.
    replay_days: int = 3
    replay_fraction: float = 0.2
    # A from-scratch retrain reads at most this many recent days.
    retrain_history_days: int = 14
    seed: int = 7
    # Training processes: 1 trains in the calling process; N > 1 starts N local workers under
    # tf.distribute.MultiWorkerMirroredStrategy (models.distributed). batch_size stays global.
    workers: int = 1
    # BackupAndRestore saves the training state every this many steps (0: after each epoch)
    # under <out dir>/backup, so a killed run resumes; the backup is removed after success.
    backup_every_steps: int = 100
    # A distributed run still going after this many seconds is stopped and fails.
    worker_timeout_s: int = 3600


@dataclass(frozen=True)
class CompressSettings:
    target_sparsity: float = 0.5
    prune_epochs: int = 1
    prune_max_rows: int = 50_000
    representative_rows: int = 512


@dataclass(frozen=True)
class GateSettings:
    min_auc: float = 0.55
    # The candidate may be at most this much below the champion (both int8, same holdout).
    max_auc_drop: float = 0.002
    # The int8 model may lose at most this much AUC against its own float model.
    max_int8_auc_gap: float = 0.01
    # Segment guard: new users / new items may lose at most this much AUC vs the champion,
    # judged only where the segment has enough rows (and both classes) in the holdout.
    max_segment_auc_drop: float = 0.02
    min_segment_rows: int = 300


@dataclass(frozen=True)
class RetentionSettings:
    """How many days of each kind of output to keep (see pipeline/retention.py)."""

    data_days: int = 30  # clean/, quarantine/, examples/
    state_days: int = 7  # state/ snapshots
    model_days: int = 7  # models/dt=<ds>/: candidates, champion downloads, checkpoints
    runs_days: int = 365  # runs/: small JSON summaries and reports
    raw_days: int = 0  # raw/: the delivered logs; 0 = never delete
    keep_versions: int = 10  # newest registered versions kept (aliased ones always)


@dataclass(frozen=True)
class Settings:
    data_root: Path = REPO_ROOT / "var" / "data"
    tracking_uri: str = f"sqlite:///{REPO_ROOT / 'var' / 'mlflow' / 'mlflow.db'}"
    artifact_root: Path = REPO_ROOT / "var" / "mlflow" / "artifacts"
    model_name: str = "ranker"
    experiment: str = "freshrank"
    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    validate: ValidateSettings = field(default_factory=ValidateSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    compress: CompressSettings = field(default_factory=CompressSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)


_SECTIONS = {
    "preprocess": PreprocessSettings,
    "validate": ValidateSettings,
    "strategy": StrategySettings,
    "train": TrainSettings,
    "compress": CompressSettings,
    "gate": GateSettings,
    "retention": RetentionSettings,
}


def _coerce(cls, key: str, value, where: str):
    """Cast a TOML or environment value to the type of dataclass field ``key``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ValueError(f"{where}: unknown setting {key!r}; known: {sorted(fields)}")
    default = getattr(cls(), key)
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, tuple):
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(type(default[0])(v) for v in items)
        if isinstance(default, Path):
            path = Path(value)
            return path if path.is_absolute() else REPO_ROOT / path
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: bad value {value!r} for {key}: {exc}") from exc


def load_settings(path: str | os.PathLike | None = None, env: dict | None = None) -> Settings:
    """Read the config file, then apply environment overrides."""
    env = os.environ if env is None else env
    path = Path(path or env.get("FRESHRANK_CONFIG") or DEFAULT_CONFIG)
    raw: dict = {}
    if path.exists():
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    elif "FRESHRANK_CONFIG" in env or path != DEFAULT_CONFIG:
        raise FileNotFoundError(f"config file not found: {path}")

    top = {k: v for k, v in raw.items() if k not in _SECTIONS}
    sections = {name: dict(raw.get(name, {})) for name in _SECTIONS}
    for key, value in env.items():
        if not key.startswith("FRESHRANK__"):
            continue
        parts = key.split("__")
        if len(parts) == 3 and parts[1].lower() in _SECTIONS:
            sections[parts[1].lower()][parts[2].lower()] = value
        elif len(parts) == 2:
            top[parts[1].lower()] = value
        else:
            raise ValueError(f"environment: cannot place override {key}")
    if env.get("FRESHRANK_DATA_ROOT"):
        top["data_root"] = env["FRESHRANK_DATA_ROOT"]
    if env.get("MLFLOW_TRACKING_URI"):
        top["tracking_uri"] = env["MLFLOW_TRACKING_URI"]
    if env.get("FRESHRANK_ARTIFACT_ROOT"):
        top["artifact_root"] = env["FRESHRANK_ARTIFACT_ROOT"]

    kwargs = {k: _coerce(Settings, k, v, str(path)) for k, v in top.items()}
    for name, cls in _SECTIONS.items():
        values = {k: _coerce(cls, k, v, f"{path} [{name}]") for k, v in sections[name].items()}
        kwargs[name] = cls(**values)
    return Settings(**kwargs)


def settings_under(root: str | os.PathLike, env: dict | None = None) -> Settings:
    """Settings whose data root and MLflow store (SQLite + artifacts) all live under
    ``root``: a throwaway world for benchmarks and scenario runs. ``env`` adds overrides."""
    root = Path(root)
    stores = {
        "FRESHRANK_DATA_ROOT": str(root / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "FRESHRANK_ARTIFACT_ROOT": str(root / "artifacts"),
    }
    return load_settings(env={**os.environ, **stores, **(env or {})})
