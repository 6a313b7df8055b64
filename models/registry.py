"""The MLflow side: fetch the champion, register candidates, move aliases, roll back.

Every candidate becomes a version of the registered model (default ``ranker``), logged as
an MLflow pyfunc from code (``serving/model.py``) that serves the int8 TFLite model with the
online store's features, and carries the float ``model.keras`` (with optimizer state, for
tomorrow's warm start) and both TFLite files as artifacts. The run holds metrics, params
and lineage tags. Aliases:

* ``champion``: what serves; moves only when the gate passed;
* ``previous``: the champion before the last promotion, so rollback is one step.

Promotion sets ``previous`` first and ``champion`` second: a crash in between leaves
``champion`` on the old version (still consistent) and a rerun repeats both.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from core.layout import Layout, day_layout
from core.settings import Settings
from core.summaries import (
    CompressSummary,
    EvaluateSummary,
    PreprocessSummary,
    RegisterSummary,
    StrategyDecision,
    TrainSummary,
    ValidateSummary,
    read_summary,
    summary_path,
    write_summary,
)

log = logging.getLogger(__name__)
CHAMPION, PREVIOUS = "champion", "previous"
HISTORY_LENGTH = 50
NIGHTLY_PROMOTION = "gate passed on"  # start of the promotion_reason the pipeline writes
REPO = Path(__file__).resolve().parent.parent
# What serving needs: no TensorFlow (the scorer is LiteRT's), no Spark, MLflow's skinny
# package (pyfunc and scoring server); versions pinned as in requirements.txt.
SERVING_PACKAGES = ("mlflow-skinny", "pandas", "numpy", "xxhash", "ai-edge-litert")


def serving_requirements() -> list[str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[name.strip()] = version.strip()
    pins["mlflow-skinny"] = pins["mlflow"]  # the same release as the full package
    return [f"{p}=={pins[p]}" for p in SERVING_PACKAGES]


def client(settings: Settings):
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def ensure_experiment(settings: Settings) -> str:
    import mlflow

    c = client(settings)
    exp = c.get_experiment_by_name(settings.experiment)
    if exp is None:
        Path(settings.artifact_root).mkdir(parents=True, exist_ok=True)
        location = (Path(settings.artifact_root) / settings.experiment).resolve().as_uri()
        exp_id = c.create_experiment(settings.experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


class RegistryUnavailableError(ConnectionError):
    """The MLflow store did not answer (after MLflow's own retries)."""


def alias_version(settings: Settings, alias: str = CHAMPION) -> str | None:
    """The version holding ``alias``, or None when the model or the alias does not exist.

    Any other failure (store unreachable, server error) raises: an unreachable registry
    must never look like "no champion yet", which would retrain from scratch.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(client(settings).get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryUnavailableError(
            f"MLflow registry at {settings.tracking_uri} failed: {exc.message[:300]}"
        ) from exc


def fetch_version(settings: Settings, version: str, dest: Path) -> dict:
    """Download a version's artifacts; return paths of its ``model.keras`` and int8 TFLite."""
    import mlflow.artifacts

    dest.mkdir(parents=True, exist_ok=True)
    uri = f"models:/{settings.model_name}/{version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    found = {p.name: p for p in local.rglob("*") if p.is_file()}
    missing = {"model.keras", "int8.tflite"} - set(found)
    if missing:
        raise FileNotFoundError(f"{uri} lacks artifacts {sorted(missing)} (downloaded to {local})")
    return {
        "version": str(version),
        "keras": str(found["model.keras"]),
        "int8_tflite": str(found["int8.tflite"]),
    }


def fetch_champion(settings: Settings, dest: Path) -> dict | None:
    version = alias_version(settings, CHAMPION)
    return None if version is None else fetch_version(settings, version, dest)


def register_candidate(
    settings: Settings,
    candidate_dir: Path,
    params: dict,
    metrics: dict,
    tags: dict,
    promote_if: bool,
    artifacts_extra: list[Path] = (),
    state_as_of: str | None = None,
) -> dict:
    """Log a run, register the candidate as a new version, and promote it if ``promote_if``.

    The version serves from the online store under the data root (``serving.model``),
    refusing one older than ``state_as_of`` (the night the candidate's newest examples took
    their features from).

    Reruns of a night are idempotent: a candidate whose int8 model (``model_sha256``) is
    already registered for the same ``ds`` is not registered again, and a night promotes at
    most once: once a version of ``ds`` was promoted, another candidate of that day is
    registered but never moved to ``champion`` by the pipeline (a person can promote it).
    """
    import hashlib

    import mlflow

    from serving.inputs import input_example, signature

    ensure_experiment(settings)
    candidate_dir = Path(candidate_dir)
    ds = str(tags.get("ds", ""))
    sha = hashlib.sha256((candidate_dir / "int8.tflite").read_bytes()).hexdigest()
    same_day = [
        v
        for v in client(settings).search_model_versions(f"name='{settings.model_name}'")
        if ds and v.tags.get("ds") == ds
    ]
    promoted_before = [
        str(v.version)
        for v in same_day
        if v.tags.get("promotion_reason", "").startswith(NIGHTLY_PROMOTION)
    ]
    if promoted_before and promote_if:
        log.info("%s: v%s was already promoted for this day; not again", ds, promoted_before[0])
    for v in same_day:
        if v.tags.get("model_sha256") == sha:
            previous = alias_version(settings, CHAMPION)
            promoted = promote_if and not promoted_before
            if promoted:  # an earlier try registered it and died before promoting
                promote(settings, str(v.version), reason=f"{NIGHTLY_PROMOTION} {ds}")
            return {
                "version": str(v.version),
                "run_id": v.run_id,
                "promoted": promoted,
                "previous": previous,
                "reused": True,
                "already_promoted": promoted_before[0] if promoted_before else None,
            }
    promote_if = promote_if and not promoted_before
    tags = {**tags, "model_sha256": sha, "state_as_of": state_as_of or "none"}
    with mlflow.start_run(run_name=f"nightly-{tags.get('ds', '')}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        mlflow.set_tags({k: str(v)[:5000] for k, v in tags.items()})
        for path in map(Path, artifacts_extra):
            if path.is_dir():  # a site (the validation Data Docs): reports/<its name>/
                mlflow.log_artifacts(str(path), artifact_path=f"reports/{path.name}")
            elif path.exists():
                mlflow.log_artifact(str(path), artifact_path="reports")
        store = Layout(settings.data_root).online_store().resolve()
        info = mlflow.pyfunc.log_model(
            name="ranker",
            python_model=str(REPO / "serving" / "model.py"),  # models-from-code
            artifacts={
                "keras": str(candidate_dir / "model.keras"),
                "int8_tflite": str(candidate_dir / "int8.tflite"),
                "float_tflite": str(candidate_dir / "float.tflite"),
            },
            code_paths=[str(REPO / "core"), str(REPO / "serving")],
            model_config={"online_store": str(store), "state_as_of": state_as_of},
            signature=signature(),
            input_example=input_example(),
            pip_requirements=serving_requirements(),
            registered_model_name=settings.model_name,
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    c = client(settings)
    for key, value in tags.items():
        c.set_model_version_tag(settings.model_name, version, key, str(value)[:5000])
    previous = alias_version(settings, CHAMPION)
    c.set_model_version_tag(settings.model_name, version, "parent_version", previous or "none")
    promoted = False
    if promote_if:
        promote(settings, version, reason=f"{NIGHTLY_PROMOTION} {ds or '?'}")
        promoted = True
    log.info("registered %s v%s (promoted=%s)", settings.model_name, version, promoted)
    return {
        "version": version,
        "run_id": run_id,
        "promoted": promoted,
        "previous": previous,
        "reused": False,
        "already_promoted": promoted_before[0] if promoted_before else None,
    }


def register_day(
    settings: Settings, ds: str, dry_run: bool = False, hour: int | None = None
) -> dict:
    """The pipeline's stage: register the day's candidate with the metrics, parameters and
    lineage the earlier stages recorded; promote it if the gate passed (never on a dry run,
    never twice for one run: a night, or an hour of the day so far). Records
    ``runs/dt=<ds>/register.json`` (an hour: under ``intraday/dt=<ds>/hour=<HH>/``)."""
    started = time.perf_counter()
    layout = day_layout(settings, ds, hour)
    pre = read_summary(layout, ds, PreprocessSummary)
    val = read_summary(layout, ds, ValidateSummary)
    decision = read_summary(layout, ds, StrategyDecision, required=True)
    train = read_summary(layout, ds, TrainSummary, required=True)
    comp = read_summary(layout, ds, CompressSummary, required=True)
    ev = read_summary(layout, ds, EvaluateSummary, required=True)
    sizes = comp.sizes
    metrics = {
        "holdout_rows": ev.holdout_rows,
        "train_rows": train.rows,
        "int8_tflite_bytes": sizes["int8_tflite"]["bytes"],
        "int8_tflite_gzip_bytes": sizes["int8_tflite"]["gzip_bytes"],
        "float_tflite_bytes": sizes["float_tflite"]["bytes"],
        "keras_bytes": sizes["keras"]["bytes"],
        **{k: v for k, v in (ev.latency or {}).items() if k != "threads"},
    }
    for model, by_segment in ev.segments.items():
        for segment, values in by_segment.items():
            prefix = model if segment == "all" else f"{model}.{segment.replace('=', '_')}"
            for name in ("auc", "log_loss", "ece", "ndcg@10"):
                value = values.get(name)
                if value is not None and value == value:  # MLflow rejects NaN
                    metrics[f"{prefix}.{name.replace('@', '_at_')}"] = value
    # Sampled-candidate ranking (ranking/dt=<ds>), e.g. ranking.popularity.hr_at_10, and
    # the gate's intervals, e.g. ranking_vs_champion.low.
    metrics["ranking_cases"] = ev.ranking_cases
    for ranker_name, values in ev.ranking.items():
        for name in ("hr@10", "ndcg@10"):
            value = values.get(name)
            if value is not None and value == value:
                metrics[f"ranking.{ranker_name}.{name.replace('@', '_at_')}"] = value
    for key in ("ranking_vs_champion", "ranking_vs_popularity"):
        for name, value in (getattr(ev, key) or {}).items():
            if name in ("diff", "low", "high") and value is not None and value == value:
                metrics[f"{key}.{name}"] = value
    params = {
        "strategy": decision.strategy,
        "epochs": train.epochs,
        "training_days": ",".join(train.days),
        "target_sparsity": comp.target_sparsity,
        "base_version": (decision.champion or {}).get("version"),
    }
    # The gate judged the candidate against this champion: if another run (a night, an
    # hour) moved the alias since, the verdict is stale and the candidate is not promoted.
    judged = (decision.champion or {}).get("version")
    current = alias_version(settings, CHAMPION)
    moved = current != judged
    promote = ev.gate_passed and not dry_run and not moved
    tags = {
        "ds": layout.run_key(ds),  # the night's day, or the day so far: 2026-11-21T13
        "strategy": decision.strategy,
        "strategy_reasons": "; ".join(decision.reasons),
        "gate_passed": ev.gate_passed,
        "gate_reasons": "; ".join(ev.gate_reasons),
        "dry_run": dry_run,
        "input_partitions": ",".join(str(layout.examples(d)) for d in train.days),
        "rows_in": pre.rows_in if pre else None,
        "rows_clean": pre.clean if pre else None,
        "rows_quarantined": pre.quarantined if pre else None,
        "validation_success": val.success if val else None,
    }
    runs = layout.run_dir(ds)
    reports = [runs / "validation", runs / "report.html"]
    reports += [
        summary_path(layout, cls.STAGE, ds)
        for cls in (
            PreprocessSummary,
            ValidateSummary,
            StrategyDecision,
            TrainSummary,
            CompressSummary,
            EvaluateSummary,
        )
    ]
    candidate = layout.candidate_dir(ds)
    result = register_candidate(
        settings,
        candidate,
        params,
        metrics,
        tags,
        promote,
        reports,
        pre.state_as_of if pre else None,
    )
    if dry_run:
        why = "dry run: never promotes"
    elif ev.gate_passed and moved:
        why = (
            f"gate passed against v{judged}, but the champion moved to v{current} since: "
            "not promoted (a later run judges against the new champion)"
        )
    elif promote and result.get("already_promoted"):
        why = (
            f"gate passed, but v{result['already_promoted']} was already promoted for {ds}: "
            "a rerun never promotes twice"
        )
    elif promote:
        why = "gate passed: " + "; ".join(ev.gate_reasons)
    else:
        why = "gate failed: " + "; ".join(ev.gate_reasons)
    summary = {**result, "ds": ds, "why": why, "seconds": round(time.perf_counter() - started, 2)}
    return write_summary(layout, summary, RegisterSummary)


def promote(settings: Settings, version: str, reason: str) -> None:
    """Move ``champion`` to ``version``, keeping the old champion as ``previous``.

    Every move is appended to the registered model's ``champion_history`` tag (JSON, last
    ``HISTORY_LENGTH`` moves), so the whole lineage of promotions and rollbacks is visible.
    """
    import datetime as dt
    import json

    c = client(settings)
    name = settings.model_name
    current = alias_version(settings, CHAMPION)
    if current == str(version):
        return
    if current is not None:
        c.set_registered_model_alias(name, PREVIOUS, current)
    c.set_registered_model_alias(name, CHAMPION, str(version))
    c.set_model_version_tag(name, str(version), "promotion_reason", reason)
    history = json.loads(c.get_registered_model(name).tags.get("champion_history", "[]"))
    history.append(
        {
            "version": str(version),
            "from": current,
            "reason": reason,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    c.set_registered_model_tag(name, "champion_history", json.dumps(history[-HISTORY_LENGTH:]))


def rollback(settings: Settings, to: str = PREVIOUS, reason: str = "manual rollback") -> str:
    """Point ``champion`` at ``to`` (a version number or ``previous``); return that version."""
    target = alias_version(settings, PREVIOUS) if to == PREVIOUS else str(to)
    if target is None:
        raise ValueError(f"no {PREVIOUS!r} alias on {settings.model_name}: nothing to roll back to")
    client(settings).get_model_version(settings.model_name, target)  # raises if missing
    promote(settings, target, reason=f"rollback: {reason}")
    return target


def main(argv=None) -> int:
    """``python -m models.registry rollback [--to previous|VERSION] --reason TEXT`` and
    ``python -m models.registry show``."""
    import argparse

    from core.settings import load_settings

    parser = argparse.ArgumentParser(description="FreshRank model registry")
    sub = parser.add_subparsers(dest="command", required=True)
    rb = sub.add_parser("rollback", help="move champion back")
    rb.add_argument("--to", default=PREVIOUS, help="version number or 'previous'")
    rb.add_argument("--reason", required=True)
    sub.add_parser("show", help="print the aliases")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "rollback":
        version = rollback(settings, args.to, args.reason)
        print(f"{settings.model_name}@{CHAMPION} -> version {version}")
    for alias in (CHAMPION, PREVIOUS):
        print(f"{settings.model_name}@{alias}: {alias_version(settings, alias)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
