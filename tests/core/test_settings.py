"""The settings loader: freshrank.toml as the defaults, a user file on top, the environment."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from core import settings as settings_mod
from core.settings import (
    DEFAULT_CONFIG,
    REPO_ROOT,
    TrainSettings,
    defaults,
    load_settings,
    settings_under,
    world_env,
)


def test_the_repository_file_holds_every_key_and_nothing_else():
    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    fields = {f.name for f in dataclasses.fields(settings_mod.Settings)}
    top = {k for k in raw if k not in settings_mod._SECTIONS}
    assert top == fields - set(settings_mod._SECTIONS)
    for name, cls in settings_mod._SECTIONS.items():
        assert set(raw[name]) == {f.name for f in dataclasses.fields(cls)}, name
    # Every key has its comment: on the lines above it, or shared with the keys just above.
    lines = DEFAULT_CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        if line[:1].isalpha():
            above = i - 1
            while lines[above][:1].isalpha():
                above -= 1
            assert lines[above].startswith("#"), f"no comment for {line!r}"


def test_file_defaults():
    s = defaults()
    assert s == load_settings(env={})
    assert s.data_root == REPO_ROOT / "var" / "data"
    assert s.artifact_root == REPO_ROOT / "var" / "mlflow" / "artifacts"
    # The relative sqlite path in the file is a database under the repository.
    assert s.tracking_uri == f"sqlite:///{REPO_ROOT / 'var' / 'mlflow' / 'mlflow.db'}"
    assert s.train.hidden_units == (64, 32) and s.train.batch_size == 512
    assert s.preprocess.spark_conn_id == "" and s.validate.max_price == 1_000_000.0
    assert s.retention.raw_days == 0
    # The dataclasses hold no defaults of their own.
    with pytest.raises(TypeError):
        TrainSettings()


def test_user_file_needs_only_the_keys_it_changes(tmp_path):
    cfg = tmp_path / "f.toml"
    cfg.write_text('data_root = "/srv/shop"\n[train]\nhidden_units = [8, 4]\n')
    s = load_settings(cfg, env={})
    base = defaults()
    assert s.data_root == Path("/srv/shop")
    assert s.train == dataclasses.replace(base.train, hidden_units=(8, 4))
    assert dataclasses.replace(s, data_root=base.data_root, train=base.train) == base
    # The same through FRESHRANK_CONFIG; a relative path or sqlite path is in the repository.
    cfg.write_text('tracking_uri = "sqlite:///elsewhere/m.db"\n[gate]\nmin_auc = 0.7\n')
    s = load_settings(env={"FRESHRANK_CONFIG": str(cfg)})
    assert s.tracking_uri == f"sqlite:///{REPO_ROOT / 'elsewhere' / 'm.db'}"
    assert s.gate.min_auc == 0.7 and s.gate.confidence == base.gate.confidence
    cfg.write_text('tracking_uri = "sqlite:////abs/m.db"\n')
    assert load_settings(cfg, env={}).tracking_uri == "sqlite:////abs/m.db"
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_settings(tmp_path / "missing.toml", env={})
    with pytest.raises(FileNotFoundError, match="gone.toml"):
        load_settings(env={"FRESHRANK_CONFIG": str(tmp_path / "gone.toml")})


def test_environment_overrides_the_files(tmp_path):
    cfg = tmp_path / "f.toml"
    cfg.write_text("[train]\nbatch_size = 32\n")
    env = {
        "FRESHRANK__TRAIN__BATCH_SIZE": "64",
        "FRESHRANK__MODEL_NAME": "other",
        "MLFLOW_TRACKING_URI": "x",
        "FRESHRANK_DATA_ROOT": "rel/data",
        "FRESHRANK_ARTIFACT_ROOT": "/abs/artifacts",
    }
    s = load_settings(cfg, env=env)
    assert s.train.batch_size == 64 and s.model_name == "other"
    assert s.tracking_uri == "x"  # the environment's URI is used as given
    assert s.data_root == REPO_ROOT / "rel" / "data"
    assert s.artifact_root == Path("/abs/artifacts")
    with pytest.raises(ValueError, match="FRESHRANK__TRAIN__BATCH_SIZE: bad value 'many'"):
        load_settings(cfg, env={"FRESHRANK__TRAIN__BATCH_SIZE": "many"})
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        load_settings(env={"FRESHRANK__TRAIN__NOPE": "1"})
    with pytest.raises(ValueError, match="cannot place override"):
        load_settings(env={"FRESHRANK__A__B__C": "1"})


def test_unknown_keys_fail_naming_file_and_section(tmp_path):
    cfg = tmp_path / "f.toml"
    cfg.write_text('data_root = "/srv/shop"\n[train]\nepochs_unused = 1\n')
    with pytest.raises(ValueError, match=r"f\.toml \[train\]: unknown setting 'epochs_unused'"):
        load_settings(cfg, env={})
    cfg.write_text("[trian]\nbatch_size = 1\n")
    with pytest.raises(ValueError, match=r"f\.toml: unknown setting 'trian'"):
        load_settings(cfg, env={})
    cfg.write_text("train = 3\n")
    with pytest.raises(ValueError, match=r"'train' must be a \[train\] section"):
        load_settings(cfg, env={})


def test_a_key_missing_from_the_base_file_fails_at_load(tmp_path):
    text = DEFAULT_CONFIG.read_text()
    base = tmp_path / "base.toml"
    base.write_text(
        text.replace("worker_timeout_s = 3600\n", "").replace('model_name = "ranker"\n', "")
    )
    named = r"base\.toml: missing setting 'model_name', 'worker_timeout_s' in \[train\]"
    with pytest.raises(ValueError, match=named):
        load_settings(env={}, base=base)
    # A user file may not fill the hole: the base file is the one place for defaults.
    user = tmp_path / "user.toml"
    user.write_text('model_name = "x"\n[train]\nworker_timeout_s = 1\n')
    with pytest.raises(ValueError, match="missing setting"):
        load_settings(user, env={}, base=base)
    base.write_text(text)
    assert load_settings(env={}, base=base) == defaults()


def test_values_are_cast_to_the_annotated_types():
    @dataclasses.dataclass(frozen=True)
    class Kinds:
        flag: bool
        sizes: tuple[int, ...]
        where: Path
        rate: float
        count: int

    coerce = settings_mod._coerce
    assert coerce(Kinds, "flag", True, "t") is True
    assert coerce(Kinds, "flag", "yes", "t") is True and coerce(Kinds, "flag", "0", "t") is False
    assert coerce(Kinds, "sizes", [8, 4], "t") == (8, 4)
    assert coerce(Kinds, "sizes", "16,8", "t") == (16, 8)
    assert coerce(Kinds, "where", "var/x", "t") == REPO_ROOT / "var" / "x"
    assert coerce(Kinds, "where", "/abs", "t") == Path("/abs")
    assert coerce(Kinds, "rate", 1, "t") == 1.0 and isinstance(coerce(Kinds, "rate", 1, "t"), float)
    assert coerce(Kinds, "rate", "0.25", "t") == 0.25
    assert coerce(Kinds, "count", "7", "t") == 7
    with pytest.raises(ValueError, match="t: bad value 'x' for count"):
        coerce(Kinds, "count", "x", "t")
    # Loaded settings: an int in the file for a float field is a float.
    s = load_settings(env={"FRESHRANK__GATE__MIN_AUC": "1", "FRESHRANK__TRAIN__HIDDEN_UNITS": "4"})
    assert isinstance(s.gate.min_auc, float) and s.train.hidden_units == (4,)


def test_world_env_puts_every_store_under_the_root(tmp_path):
    env = world_env(tmp_path)
    assert env == {
        "FRESHRANK_DATA_ROOT": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRESHRANK_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    s = load_settings(env=env)
    assert s.data_root == tmp_path / "data" and s.artifact_root == tmp_path / "artifacts"
    assert s.tracking_uri == env["MLFLOW_TRACKING_URI"]
    under = settings_under(tmp_path, {"FRESHRANK__TRAIN__WORKERS": "2"})
    assert under.data_root == s.data_root and under.train.workers == 2
