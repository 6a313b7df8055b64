"""The update-strategy policy: skip, light, full fine-tune or retrain from scratch.

:func:`choose_strategy` is a pure function of the day's facts and the thresholds in
``[strategy]`` settings; the DAG records its decision and reasons in the run summary and
MLflow. Order of the rules, first match wins:

1. no champion yet -> ``retrain`` (first training);
2. fewer than ``skip_below_examples`` training rows -> ``skip`` (nothing worth learning);
3. the champion's AUC on today's data below ``retrain_champion_auc`` -> ``retrain``
   (the model collapsed on the new data);
4. any feature drift PSI above ``retrain_psi`` -> ``retrain``;
5. fewer than ``light_below_examples`` rows -> ``light``;
6. otherwise ``full``.
"""

from __future__ import annotations

from core.settings import StrategySettings


def choose_strategy(
    train_examples: int,
    has_champion: bool,
    champion_auc_today: float | None,
    drift_psi: dict[str, float] | None,
    cfg: StrategySettings,
    override: str | None = None,
) -> tuple[str, list[str]]:
    """Return ``(strategy, reasons)``."""
    if override:
        if override not in ("skip", "light", "full", "retrain"):
            raise ValueError(f"unknown strategy override {override!r}")
        if override in ("light", "full") and not has_champion:
            return "retrain", [f"override {override} needs a champion; none exists, retraining"]
        return override, [f"override requested: {override}"]
    if not has_champion:
        return "retrain", ["no champion yet: first training from scratch"]
    if train_examples < cfg.skip_below_examples:
        return "skip", [f"{train_examples} training rows < {cfg.skip_below_examples}"]
    if champion_auc_today is not None and champion_auc_today < cfg.retrain_champion_auc:
        return "retrain", [
            f"champion AUC on today's data {champion_auc_today:.4f} < {cfg.retrain_champion_auc}"
        ]
    drifted = {k: v for k, v in (drift_psi or {}).items() if v is not None and v > cfg.retrain_psi}
    if drifted:
        worst = max(drifted, key=drifted.get)
        return "retrain", [f"drift: PSI of {worst} {drifted[worst]:.3f} > {cfg.retrain_psi}"]
    if train_examples < cfg.light_below_examples:
        return "light", [f"{train_examples} training rows < {cfg.light_below_examples}"]
    return "full", [f"{train_examples} training rows: full fine-tune with replay"]
