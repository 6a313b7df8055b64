"""The promotion gate: may this candidate become ``champion``?

A pure function of the evaluation metrics and ``[gate]`` settings. All checks are reported,
not just the first failure, so the registry tag lists every reason:

* absolute floor: candidate int8 AUC >= ``min_auc``;
* int8 vs float: the int8 model loses at most ``max_int8_auc_gap`` AUC against the float
  TFLite of the same pruned model (quantization alone: catches silent calibration
  failures; what pruning cost shows in the comparison with the champion);
* against the champion (both int8, same holdout): candidate AUC >= champion AUC -
  ``max_auc_drop`` (a small drop is tolerated, so noise does not freeze the model);
* segment guard: on new users and new items the candidate may lose at most
  ``max_segment_auc_drop`` AUC against the champion, where the segment has at least
  ``min_segment_rows`` holdout rows (smaller segments are reported, not judged);
* first run (no champion): only the first two checks apply.
"""

from __future__ import annotations

import math

from core.settings import GateSettings


def decide(candidate: dict, champion: dict | None, cfg: GateSettings) -> tuple[bool, list[str]]:
    """``candidate`` has ``auc_int8`` and ``auc_float`` (the same pruned model in float);
    ``champion`` has ``auc_int8`` or is None.

    Returns ``(passed, reasons)``.
    """
    reasons, passed = [], True
    auc8, aucf = candidate.get("auc_int8"), candidate.get("auc_float")
    if auc8 is None or math.isnan(auc8):
        return False, ["candidate int8 AUC is undefined (holdout has one class or no rows)"]
    if auc8 < cfg.min_auc:
        passed = False
        reasons.append(f"int8 AUC {auc8:.4f} below floor {cfg.min_auc}")
    else:
        reasons.append(f"int8 AUC {auc8:.4f} >= floor {cfg.min_auc}")
    if aucf is not None and aucf - auc8 > cfg.max_int8_auc_gap:
        passed = False
        reasons.append(f"int8 loses {aucf - auc8:.4f} AUC vs float (max {cfg.max_int8_auc_gap})")
    if champion is None:
        reasons.append("first run: no champion to compare with")
    else:
        champ = champion["auc_int8"]
        delta = auc8 - champ
        if delta < -cfg.max_auc_drop:
            passed = False
            reasons.append(
                f"int8 AUC {auc8:.4f} vs champion {champ:.4f}: drop {-delta:.4f} > "
                f"{cfg.max_auc_drop}"
            )
        else:
            reasons.append(f"int8 AUC {auc8:.4f} vs champion {champ:.4f} ({delta:+.4f})")
        for seg in GUARDED_SEGMENTS:
            ok, reason = _segment_guard(seg, candidate, champion, cfg)
            passed &= ok
            if reason:
                reasons.append(reason)
    return passed, reasons


GUARDED_SEGMENTS = ("new_users", "new_items")


def _segment_guard(seg: str, candidate: dict, champion: dict, cfg: GateSettings):
    cand = (candidate.get("segments") or {}).get(seg)
    champ = (champion.get("segments") or {}).get(seg)
    if not cand or not champ:
        return True, None
    # An undefined AUC (one class in the segment) is NaN in memory and null in JSON.
    a, b = (float("nan") if x is None else x for x in (cand.get("auc"), champ.get("auc")))
    if cand.get("rows", 0) < cfg.min_segment_rows or math.isnan(a) or math.isnan(b):
        return True, f"{seg}: {cand.get('rows', 0)} rows, too few to judge"
    if a < b - cfg.max_segment_auc_drop:
        return (
            False,
            f"{seg}: AUC {a:.4f} vs champion {b:.4f} drops more than {cfg.max_segment_auc_drop}",
        )
    return True, f"{seg}: AUC {a:.4f} vs champion {b:.4f}"
