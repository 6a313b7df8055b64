"""The promotion gate: may this candidate become ``champion``?

A pure function of the evaluation's figures and ``[gate]`` settings. Every check is
reported, not just the first failure, so the registry tag lists every reason. In order:

1. absolute floor: candidate int8 AUC on the held-out requests >= ``min_auc`` (an
   undefined AUC, e.g. a day without holdout rows, fails);
2. int8 vs float: the int8 model loses at most ``max_int8_auc_gap`` AUC against the float
   TFLite of the same pruned model (quantization alone: catches silent calibration
   failures; what pruning cost shows in the comparison with the champion);
3. enough evidence: at least ``min_ranking_cases`` held-out ranking cases (each a held-out
   positive among sampled candidates, of the last ``ranking_window_days`` days), else "too
   few cases to judge" and rules 4-5 are not judged;
4. popularity: the candidate (int8) must not rank credibly worse than the popularity
   ranking: fails when the upper bound of the ``confidence`` interval of the
   candidate-minus-popularity ``ranking_metric`` difference is below 0;
5. champion (both int8, same cases): promoted only when credibly better: the lower bound
   of the candidate-minus-champion interval must be above 0; a noisy tie is not a
   promotion (the intervals: paired bootstrap over users, ``models.metrics``);
6. segment guard: on new users and new items the candidate may lose at most
   ``max_segment_auc_drop`` AUC against the champion, where the segment has at least
   ``min_segment_rows`` holdout rows (smaller segments are reported, not judged).

First run (no champion): rules 1-4 only.
"""

from __future__ import annotations

import math

from core.settings import GateSettings


def decide(candidate: dict, champion: dict | None, cfg: GateSettings) -> tuple[bool, list[str]]:
    """``candidate`` has ``auc_int8``, ``auc_float`` (the same pruned model in float),
    ``segments``, ``ranking_cases`` and the intervals ``vs_popularity`` and (with a
    champion) ``vs_champion``: ``{"metric", "diff", "low", "high", "confidence", ...}`` of
    candidate minus the other ranker. ``champion`` has ``auc_int8`` and ``segments``, or is
    None (first run).

    Returns ``(passed, reasons)``.
    """
    reasons, passed = [], True
    auc8, aucf = _number(candidate.get("auc_int8")), _number(candidate.get("auc_float"))
    if math.isnan(auc8):
        passed = False
        reasons.append(
            f"candidate int8 AUC is undefined ({candidate.get('holdout_rows', 0)} holdout rows, "
            "or one class only)"
        )
    elif auc8 < cfg.min_auc:
        passed = False
        reasons.append(f"int8 AUC {auc8:.4f} below floor {cfg.min_auc}")
    else:
        reasons.append(f"int8 AUC {auc8:.4f} >= floor {cfg.min_auc}")
    if aucf - auc8 > cfg.max_int8_auc_gap:
        passed = False
        reasons.append(f"int8 loses {aucf - auc8:.4f} AUC vs float (max {cfg.max_int8_auc_gap})")

    cases = int(candidate.get("ranking_cases") or 0)
    if cases < cfg.min_ranking_cases:
        passed = False
        reasons.append(f"too few cases to judge: {cases} ranking cases < {cfg.min_ranking_cases}")
    else:
        ok, reason = _not_worse_than_popularity(candidate.get("vs_popularity"))
        passed &= ok
        reasons.append(reason)
        if champion is not None:
            ok, reason = _credibly_better_than_champion(candidate.get("vs_champion"))
            passed &= ok
            reasons.append(reason)

    if champion is None:
        reasons.append("first run: no champion to compare with")
    else:
        reasons.append(
            f"int8 AUC {auc8:.4f} vs champion {_number(champion.get('auc_int8')):.4f} "
            "(reported, not judged)"
        )
        for seg in GUARDED_SEGMENTS:
            ok, reason = _segment_guard(seg, candidate, champion, cfg)
            passed &= ok
            if reason:
                reasons.append(reason)
    return passed, reasons


GUARDED_SEGMENTS = ("new_users", "new_items")


def _number(value) -> float:
    """An undefined figure is NaN in memory and null in JSON: NaN either way."""
    return float("nan") if value is None else float(value)


def describe_interval(ci: dict, other: str) -> str:
    """``ndcg@10 -0.0123 vs popularity (90% CI -0.0200 .. -0.0050; 812 cases, 640 users)``."""
    return (
        f"{ci.get('metric', '?')} {_number(ci.get('diff')):+.4f} vs {other} "
        f"({round(100 * ci.get('confidence', float('nan')))}% CI "
        f"{_number(ci.get('low')):+.4f} .. {_number(ci.get('high')):+.4f}; "
        f"{ci.get('cases', 0)} cases, {ci.get('users', 0)} users)"
    )


def _not_worse_than_popularity(ci: dict | None) -> tuple[bool, str]:
    if not ci or math.isnan(_number(ci.get("high"))):
        return False, "no comparison with popularity on the ranking cases"
    if _number(ci["high"]) < 0:
        return False, f"ranks worse than popularity: {describe_interval(ci, 'popularity')}"
    return True, f"not worse than popularity: {describe_interval(ci, 'popularity')}"


def _credibly_better_than_champion(ci: dict | None) -> tuple[bool, str]:
    if not ci or math.isnan(_number(ci.get("low"))):
        return False, "no comparison with the champion on the ranking cases"
    if _number(ci["low"]) > 0:
        return True, f"credibly better than the champion: {describe_interval(ci, 'champion')}"
    if _number(ci["high"]) < 0:
        return False, f"worse than the champion: {describe_interval(ci, 'champion')}"
    return False, (
        f"not credibly better than the champion (the interval includes 0): "
        f"{describe_interval(ci, 'champion')}"
    )


def _segment_guard(seg: str, candidate: dict, champion: dict, cfg: GateSettings):
    cand = (candidate.get("segments") or {}).get(seg)
    champ = (champion.get("segments") or {}).get(seg)
    if not cand or not champ:
        return True, None
    a, b = _number(cand.get("auc")), _number(champ.get("auc"))
    if cand.get("rows", 0) < cfg.min_segment_rows or math.isnan(a) or math.isnan(b):
        return True, f"{seg}: {cand.get('rows', 0)} rows, too few to judge"
    if a < b - cfg.max_segment_auc_drop:
        return (
            False,
            f"{seg}: AUC {a:.4f} vs champion {b:.4f} drops more than {cfg.max_segment_auc_drop}",
        )
    return True, f"{seg}: AUC {a:.4f} vs champion {b:.4f}"
