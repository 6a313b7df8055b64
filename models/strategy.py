"""The update-strategy policy: skip, light, full fine-tune or retrain from scratch.

:func:`choose_strategy` is a pure function of the day's facts and the thresholds in
``[strategy]`` settings; the DAG records its decision and reasons in the run summary and
MLflow. An override (the DAG Param ``strategy``) wins; otherwise the rules in order, first
match wins:

1. fewer than ``[gate] min_ranking_cases`` recent held-out ranking cases (``[gate]
   ranking_window_days``) -> ``skip`` (too small to evaluate: whatever it trained could
   not pass the gate, so nothing is trained);
2. no champion yet, or a champion without every input of this version's model (trained
   before a feature was added) -> ``retrain`` (first training; a warm start needs the same
   inputs);
3. fewer than ``skip_below_examples`` training rows -> ``skip`` (nothing worth learning);
4. the champion ranks the recent cases below ``retrain_below_popularity`` x the popularity
   ranking's score (the gate's ``ranking_metric``) -> ``retrain`` (the model collapsed on
   the new data; a champion that beats popularity is never collapsed);
5. any feature drift PSI above ``retrain_psi`` -> ``retrain``;
6. fewer than ``light_below_examples`` rows -> ``light``;
7. otherwise ``full``.
"""

from __future__ import annotations

from core.settings import StrategySettings

STRATEGIES = ("skip", "light", "full", "retrain")
OLD = "the champion lacks inputs this version's model takes (trained before they were added)"


def choose_strategy(
    train_examples: int,
    ranking_cases: int,
    has_champion: bool,
    ranking_today: dict | None,
    drift_psi: dict[str, float] | None,
    cfg: StrategySettings,
    min_ranking_cases: int,
    override: str | None = None,
    champion_current: bool = True,
) -> tuple[str, list[str]]:
    """Return ``(strategy, reasons)``.

    ``ranking_today`` is the champion's and popularity's score on today's ranking cases,
    ``{"metric": "ndcg@10", "champion": ..., "popularity": ..., "cases": ...}``, or None
    (no champion, or not measured). ``champion_current``: whether the champion takes every
    input of this version's model.
    """
    if override:
        if override not in STRATEGIES:
            raise ValueError(f"unknown strategy override {override!r}")
        if override in ("light", "full") and not has_champion:
            return "retrain", [f"override {override} needs a champion; none exists, retraining"]
        if override in ("light", "full") and not champion_current:
            return "retrain", [f"override {override} needs a champion of this version: {OLD}"]
        return override, [f"override requested: {override}"]
    if ranking_cases < min_ranking_cases:
        return "skip", [f"too small to evaluate: {ranking_cases} cases < {min_ranking_cases}"]
    if not has_champion:
        return "retrain", ["no champion yet: first training from scratch"]
    if not champion_current:
        return "retrain", [f"{OLD}: training from scratch"]
    if train_examples < cfg.skip_below_examples:
        return "skip", [f"{train_examples} training rows < {cfg.skip_below_examples}"]
    if _collapsed(ranking_today, cfg):
        r = ranking_today
        return "retrain", [
            f"champion collapsed: {r['metric']} {r['champion']:.4f} on today's {r['cases']} "
            f"cases < {cfg.retrain_below_popularity} x popularity's {r['popularity']:.4f}"
        ]
    drifted = {k: v for k, v in (drift_psi or {}).items() if v is not None and v > cfg.retrain_psi}
    if drifted:
        worst = max(drifted, key=drifted.get)
        return "retrain", [f"drift: PSI of {worst} {drifted[worst]:.3f} > {cfg.retrain_psi}"]
    if train_examples < cfg.light_below_examples:
        return "light", [f"{train_examples} training rows < {cfg.light_below_examples}"]
    return "full", [f"{train_examples} training rows: full fine-tune with replay"]


def _collapsed(ranking_today: dict | None, cfg: StrategySettings) -> bool:
    if not ranking_today:
        return False
    champ, pop = ranking_today.get("champion"), ranking_today.get("popularity")
    if champ is None or pop is None or champ != champ or pop != pop:  # not measured (NaN)
        return False
    return champ < pop and champ < cfg.retrain_below_popularity * pop
