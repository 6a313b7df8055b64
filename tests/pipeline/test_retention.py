"""Retention keeps what the stages read back and removes the rest, never raw data by default."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from core.layout import Layout, shift_ds
from pipeline.retention import apply_retention

TODAY = "2026-12-31"


def _partition(path, size=1000):
    path.mkdir(parents=True)
    (path / "part-0.parquet").write_bytes(b"x" * size)
    (path / "_SUCCESS").touch()


def _fill(layout: Layout, days: int):
    for i in range(days):
        ds = shift_ds(TODAY, -i)
        for path in (
            layout.raw_events(ds),
            layout.clean_events(ds),
            layout.quarantine_events(ds),
            layout.examples(ds),
            layout.item_state(ds),
            layout.model_dir(ds),
            layout.run_dir(ds),
        ):
            _partition(path)


def _days(base):
    return sorted(p.name[3:] for p in base.iterdir() if p.name.startswith("dt="))


def test_keeps_the_configured_windows_and_never_raw(settings):
    layout = Layout(settings.data_root)
    _fill(layout, 40)
    crashed = layout.root / "examples" / ".dt=2026-11-01.abc.staging"
    crashed.mkdir()
    old = time.time() - 3 * 86400
    os.utime(crashed, (old, old))
    fresh_staging = layout.root / "examples" / ".dt=2026-12-31.def.staging"
    fresh_staging.mkdir()  # a write in progress right now: left alone

    summary = apply_retention(TODAY, settings)

    cfg = settings.retention
    assert _days(layout.root / "examples") == [shift_ds(TODAY, -i) for i in range(30)][::-1]
    assert len(_days(layout.root / "clean" / "events")) == cfg.data_days
    assert len(_days(layout.root / "state" / "items")) == cfg.state_days
    assert len(_days(layout.root / "models")) == cfg.model_days
    assert len(_days(layout.root / "runs")) == 40  # a year of summaries
    assert len(_days(layout.root / "raw" / "events")) == 40  # the users' data is theirs
    assert not crashed.exists() and fresh_staging.exists()
    removed = summary["removed_partitions"]
    assert len(removed["examples"]) == 11  # 10 old days + the crashed staging dir
    assert summary["freed_bytes"] == (10 * 3 + 33 * 2) * 1000  # 10 old days x 3 kinds, 33 x 2
    assert (layout.run_dir(TODAY) / "cleanup.json").exists()

    again = apply_retention(TODAY, settings)  # idempotent
    assert again["removed_partitions"] == {} and again["freed_bytes"] == 0


def test_dry_run_deletes_nothing(settings):
    layout = Layout(settings.data_root)
    _fill(layout, 35)
    summary = apply_retention(TODAY, settings, dry_run=True)
    assert len(summary["removed_partitions"]["examples"]) == 5
    assert len(_days(layout.root / "examples")) == 35


def test_a_window_shorter_than_what_training_reads_is_refused(settings):
    short = dataclasses.replace(
        settings, retention=dataclasses.replace(settings.retention, data_days=3)
    )
    with pytest.raises(ValueError, match="data_days=3 is below"):
        apply_retention(TODAY, short)


def test_old_model_versions_go_but_aliased_ones_stay(settings, tmp_path):
    from models import registry

    c = registry.client(settings)
    name = settings.model_name
    c.create_registered_model(name)
    source = tmp_path / "model"
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n")
    for _ in range(6):
        c.create_model_version(name, source=str(source))
    c.set_registered_model_alias(name, "previous", "1")
    c.set_registered_model_alias(name, "champion", "2")
    keep3 = dataclasses.replace(
        settings, retention=dataclasses.replace(settings.retention, keep_versions=3)
    )

    summary = apply_retention(TODAY, keep3)

    assert summary["removed_versions"] == ["3"]
    left = sorted(int(v.version) for v in c.search_model_versions(f"name='{name}'"))
    assert left == [1, 2, 4, 5, 6]
    assert registry.alias_version(keep3) == "2"
    assert registry.alias_version(keep3, "previous") == "1"


def test_a_pruned_version_takes_its_model_files_with_it(settings):
    # As the pipeline registers: log_model(registered_model_name=...). The soak found the
    # files of pruned versions left behind (21 MB a night): MLflow 3 leaves model_id empty.
    import mlflow

    from models import registry

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [0.5] * len(model_input)

    registry.ensure_experiment(settings)
    locations = []
    for _ in range(3):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="ranker", python_model=Constant(), pip_requirements=["pandas"],
                registered_model_name=settings.model_name,
            )  # fmt: skip
        loc = registry.client(settings).get_logged_model(info.model_id).artifact_location
        locations.append(Path(loc.removeprefix("file://")))
    assert all(p.is_dir() and any(p.iterdir()) for p in locations)
    registry.client(settings).set_registered_model_alias(settings.model_name, "champion", "3")
    keep1 = dataclasses.replace(
        settings, retention=dataclasses.replace(settings.retention, keep_versions=1)
    )

    assert apply_retention(TODAY, keep1)["removed_versions"] == ["2", "1"]
    assert [p.exists() for p in locations] == [False, False, True]
