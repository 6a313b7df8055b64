"""Settings for every stage: ``freshrank.toml``, an optional user file, the environment.

``freshrank.toml`` at the repository root holds every setting, its default value and its
comment; the frozen dataclasses below only name and type them (one per ``[section]``).
:func:`load_settings` reads that file, then overlays the file that ``path`` or
``FRESHRANK_CONFIG`` names (it needs only the keys it changes), then the environment:
``FRESHRANK__<SECTION>__<KEY>`` (e.g. ``FRESHRANK__TRAIN__FULL_EPOCHS=2``),
``FRESHRANK__<KEY>`` for the top-level keys, and the store locations
``FRESHRANK_DATA_ROOT``, ``MLFLOW_TRACKING_URI`` and ``FRESHRANK_ARTIFACT_ROOT``
(:func:`world_env` sets all three for a throwaway world). Values are cast to the field's
annotated type; relative paths in files or the environment, and a relative
``sqlite:///`` path in a file, are relative to the repository.

Nothing happens at import time: call :func:`load_settings` (or :func:`defaults`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "freshrank.toml"
SQLITE = "sqlite:///"


@dataclass(frozen=True)
class PreprocessSettings:
    """``[preprocess]``: the Spark session and the cleaning and labelling job."""

    spark_master: str
    spark_conn_id: str
    spark_driver_memory: str
    shuffle_partitions: int
    max_late_days: int
    future_slack_minutes: int
    holdout_fraction: float
    negatives_per_positive: int
    uniform_negative_share: float
    ranking_candidates: int
    popularity_days: int
    feature_half_life_days: float
    ctr_prior_strength: float
    seed: int


@dataclass(frozen=True)
class ValidateSettings:
    """``[validate]``: data-quality thresholds of the validation stage."""

    min_examples: int
    min_click_rate: float
    max_click_rate: float
    max_price: float
    max_quarantine_share: float
    max_anonymous_share: float
    share_window_days: int
    max_share_rise: float
    min_share_history_days: int
    min_volume_ratio: float
    max_volume_ratio: float
    volume_window_days: int
    drift_psi_warn: float


@dataclass(frozen=True)
class StrategySettings:
    """``[strategy]``: thresholds of the update-strategy policy (models/strategy.py)."""

    skip_below_examples: int
    light_below_examples: int
    retrain_psi: float
    retrain_below_popularity: float


@dataclass(frozen=True)
class TrainSettings:
    """``[train]``: the ranker, its training and its distributed workers."""

    embedding_dim: int
    hidden_units: tuple[int, ...]
    cross_layers: int
    embedding_dropout: float
    batch_size: int
    learning_rate: float
    finetune_learning_rate: float
    retrain_epochs: int
    full_epochs: int
    light_epochs: int
    replay_days: int
    replay_fraction: float
    retrain_history_days: int
    seed: int
    workers: int
    backup_every_steps: int
    worker_timeout_s: int
    cores_per_worker: int
    executor_memory: str
    cluster_wait_s: int
    cluster_attempts: int


@dataclass(frozen=True)
class CompressSettings:
    """``[compress]``: pruning and int8 quantization (models/compress.py)."""

    target_sparsity: float
    prune_epochs: int
    prune_max_rows: int
    representative_rows: int


@dataclass(frozen=True)
class GateSettings:
    """``[gate]``: the promotion gate's thresholds (models/gate.py)."""

    min_auc: float
    max_int8_auc_gap: float
    max_segment_auc_drop: float
    min_segment_rows: int
    min_ranking_cases: int
    ranking_window_days: int
    ranking_metric: str
    confidence: float
    bootstrap_samples: int


@dataclass(frozen=True)
class RetentionSettings:
    """``[retention]``: days of each kind of output to keep (pipeline/retention.py)."""

    data_days: int
    state_days: int
    model_days: int
    runs_days: int
    raw_days: int
    keep_versions: int


@dataclass(frozen=True)
class Settings:
    """Everything: the top-level keys (stores, names) and one field per section."""

    data_root: Path
    tracking_uri: str
    artifact_root: Path
    model_name: str
    experiment: str
    preprocess: PreprocessSettings
    validate: ValidateSettings
    strategy: StrategySettings
    train: TrainSettings
    compress: CompressSettings
    gate: GateSettings
    retention: RetentionSettings


_SECTIONS = {
    "preprocess": PreprocessSettings,
    "validate": ValidateSettings,
    "strategy": StrategySettings,
    "train": TrainSettings,
    "compress": CompressSettings,
    "gate": GateSettings,
    "retention": RetentionSettings,
}
# The short environment names of the three store locations.
_STORE_ENV = {
    "FRESHRANK_DATA_ROOT": "data_root",
    "MLFLOW_TRACKING_URI": "tracking_uri",
    "FRESHRANK_ARTIFACT_ROOT": "artifact_root",
}


@functools.cache
def _types(cls) -> dict[str, typing.Any]:
    """Field name -> annotated type (resolved: this module's annotations are strings)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if cls is Settings:
        names = [n for n in names if n not in _SECTIONS]
    return {n: hints[n] for n in names}


def _coerce(cls, key: str, value, where: str):
    """Cast a TOML or environment value to the annotated type of dataclass field ``key``."""
    types = _types(cls)
    if key not in types:
        raise ValueError(f"{where}: unknown setting {key!r}; known: {sorted(types)}")
    kind = types[key]
    try:
        if kind is bool:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(item(v) for v in items)
        if kind is Path:
            path = Path(value)
            return path if path.is_absolute() else REPO_ROOT / path
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: bad value {value!r} for {key}: {exc}") from exc


def _repo_uri(uri):
    """A ``sqlite:///`` URI with a relative path names a database under the repository."""
    if not isinstance(uri, str) or not uri.startswith(SQLITE):
        return uri
    path = uri[len(SQLITE) :]
    if path.startswith(":memory:") or Path(path).is_absolute():
        return uri
    return f"{SQLITE}{REPO_ROOT / path}"


def _read(path: Path) -> dict[str, dict[str, tuple[object, str]]]:
    """A TOML file's values by section ("" for the top level), each with where it is from."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    out: dict[str, dict[str, tuple[object, str]]] = {"": {}, **{s: {} for s in _SECTIONS}}
    for key, value in raw.items():
        if key not in _SECTIONS:
            out[""][key] = (_repo_uri(value) if key == "tracking_uri" else value, str(path))
        elif isinstance(value, dict):
            out[key].update((k, (v, f"{path} [{key}]")) for k, v in value.items())
        else:
            raise ValueError(f"{path}: {key!r} must be a [{key}] section")
    return out


def _missing(values: dict[str, dict]) -> list[str]:
    top = [repr(k) for k in _types(Settings) if k not in values[""]]
    return top + [
        f"{k!r} in [{s}]" for s, cls in _SECTIONS.items() for k in _types(cls) if k not in values[s]
    ]


def load_settings(
    path: str | os.PathLike | None = None,
    env: typing.Mapping[str, str] | None = None,
    *,
    base: str | os.PathLike = DEFAULT_CONFIG,
) -> Settings:
    """``base`` (the repository's freshrank.toml: every key), then the file ``path`` or
    ``FRESHRANK_CONFIG`` names (only the keys it changes), then environment overrides."""
    env = os.environ if env is None else env
    base = Path(base)
    values = _read(base)
    if missing := _missing(values):
        raise ValueError(f"{base}: missing setting {', '.join(missing)}: this file needs every key")
    user = path or env.get("FRESHRANK_CONFIG")
    if user and Path(user).resolve() != base.resolve():
        for section, layer in _read(Path(user)).items():
            values[section].update(layer)

    for key, value in env.items():
        if not key.startswith("FRESHRANK__"):
            continue
        parts = key.split("__")
        if len(parts) == 3 and parts[1].lower() in _SECTIONS:
            values[parts[1].lower()][parts[2].lower()] = (value, f"environment {key}")
        elif len(parts) == 2:
            values[""][parts[1].lower()] = (value, f"environment {key}")
        else:
            raise ValueError(f"environment: cannot place override {key}")
    for key, name in _STORE_ENV.items():
        if env.get(key):
            values[""][name] = (env[key], f"environment {key}")

    def build(cls, layer: dict[str, tuple[object, str]]):
        return cls(**{k: _coerce(cls, k, v, where) for k, (v, where) in layer.items()})

    sections = {name: build(cls, values[name]) for name, cls in _SECTIONS.items()}
    top = {k: _coerce(Settings, k, v, where) for k, (v, where) in values[""].items()}
    return Settings(**top, **sections)


def defaults() -> Settings:
    """The repository's freshrank.toml alone: no user file, no environment. Tests and
    callers that need one section build theirs from it, e.g.
    ``dataclasses.replace(defaults().train, batch_size=64)``."""
    return load_settings(env={})


def world_env(root: str | os.PathLike) -> dict[str, str]:
    """The environment variables that put every store of a throwaway world under ``root``:
    data in ``root/data``, the MLflow database ``root/mlflow.db``, artifacts in
    ``root/artifacts``. Pass it to :func:`load_settings` or into a subprocess's environment."""
    root = Path(root)
    return {
        "FRESHRANK_DATA_ROOT": str(root / "data"),
        "MLFLOW_TRACKING_URI": f"{SQLITE}{root / 'mlflow.db'}",
        "FRESHRANK_ARTIFACT_ROOT": str(root / "artifacts"),
    }


def settings_under(root: str | os.PathLike, env: dict | None = None) -> Settings:
    """Settings whose data root and MLflow store (SQLite + artifacts) all live under
    ``root``: a throwaway world for benchmarks and scenario runs. ``env`` adds overrides."""
    return load_settings(env={**os.environ, **world_env(root), **(env or {})})
