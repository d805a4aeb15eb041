"""Carry a threshold validated on the CV models over to the final models, by the share of recordings flagged.

`steth train`'s threshold is pooled over the five CV models' out-of-fold scores, then applied to other
models: the final ones, trained on all development data with another seed. A model's scores can sit
higher or lower than another's on the same recordings while ranking them alike, and the threshold does not
carry that: in session 15 the final screening pair flagged fewer test recordings than the CV figures
promised at every seed (PhysioNet sensitivity 0.52-0.63 against 0.62-0.65 in CV).

What does carry over is the operating point as a share of a population: on recordings that none of these
models trained on, the CV models flag some share r_ref at the threshold; the final model should flag the
same share. ``transfer`` measures both shares and, when they differ by ``MIN_GAP`` or more, gives the final
model's score at which it flags r_ref (quantile matching). It reads no label: only the models' scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# A smaller gap is within what 953 recordings (the screening test split) and the CV models' own spread
# can show by chance: 0.02 is about 19 recordings (docs/screening_all_sources/ensemble/SHIP_RULE_OPERATING_POINT.md).
MIN_GAP = 0.02


def flag_rate(scores: np.ndarray, threshold: float) -> float:
    """The share of recordings flagged (score >= threshold: the device's own rule)."""
    return float(np.mean(np.asarray(scores) >= threshold))


def matched_threshold(scores: np.ndarray, rate: float) -> float:
    """The threshold at which ``scores`` flag the share ``rate``: halfway between the last score flagged and
    the first one not flagged, so that a score near the cut is not decided by rounding."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = round(rate * len(s))
    if n <= 0:
        return float(min(1.0, s[0] + 1e-6))
    if n >= len(s):
        return float(s[-1])
    return float((s[n - 1] + s[n]) / 2)


def transfer(
    reference: list[np.ndarray], final: np.ndarray, threshold: float, min_gap: float = MIN_GAP
) -> dict[str, Any]:
    """``reference``: each CV model's P(positive) on the same unseen recordings as ``final`` (the final
    model's); ``threshold``: the one validated on the CV models. The record of what was measured, with
    ``threshold`` the one to ship (moved only when the shares differ by ``min_gap`` or more)."""
    final = np.asarray(final, dtype=np.float64)
    if not reference or any(len(r) != len(final) for r in reference) or len(final) == 0:
        raise ValueError("every reference model must score the same, non-empty set of recordings as the final one")
    per_model = [flag_rate(r, threshold) for r in reference]
    r_ref, r_final = float(np.mean(per_model)), flag_rate(final, threshold)
    moved = abs(r_final - r_ref) >= min_gap
    shipped = matched_threshold(final, r_ref) if moved else threshold
    return {
        "n_recordings": len(final),
        "validated_threshold": threshold,
        "reference_flag_rates": [round(r, 4) for r in per_model],
        "reference_flag_rate": round(r_ref, 4),
        "final_flag_rate": round(r_final, 4),
        "min_gap": min_gap,
        "moved": moved,
        "threshold": shipped,
        "final_flag_rate_at_threshold": round(flag_rate(final, shipped), 4),
        # how alike the final model ranks the recordings (Spearman, against the CV models' mean score):
        # quantile matching assumes they rank alike and differ in where their scores sit
        "rank_correlation": round(_spearman(np.mean(reference, axis=0), final), 4),
        "mean_score_difference": round(float(np.mean(final - np.mean(reference, axis=0))), 4),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])
