"""Choosing the screening model's decision threshold: on its validation part, or on pooled CV predictions.

A model's own validation part holds about 330 recordings, a few dozen per database outside training-e,
so the MAcc-maximising threshold chosen there is noisy: the CV models of one recipe chose 0.17 to 0.67
(docs/experiments.md), and screening 0.3.0 shipped 0.534 (held-out Se 0.60 / Sp 0.94). Cross-validation
already scores every development recording once with a model that did not train on it; pooling those
out-of-fold scores gives about five times more recordings to choose the threshold on, from models
trained the same way as the final one.

Whether a pooled threshold transfers to a model that did not produce those scores is checked on the
development data alone, so the held-out split plays no part in the choice: for each CV fold, the
threshold pooled over the *other* folds is applied to this fold's model and compared with that model's
own validation threshold. ``choose`` ships the pooled threshold only if it does at least as well.
So far it has not been clearly better (mean over five seeds: MAcc without training-e 0.620 pooled vs
0.626 validation): the pooled thresholds are steadier, but outside training-e the MAcc curve is flat
around its peak.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.metrics import best_threshold, binary_scores


def pooled_threshold(y: np.ndarray, scores: np.ndarray, strata: np.ndarray) -> float:
    """The threshold maximising mean MAcc over databases on pooled out-of-fold scores."""
    return best_threshold(y, scores, strata)


# The objectives `steth ensemble --threshold-objective` chooses between (T1 and T2 of
# research/screening_thresholds.py, where session 14 defined them).
OBJECTIVES = ("databases", "headline")


def macc_curve(y: np.ndarray, s: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """MAcc at every candidate threshold (positive at score >= t)."""
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    se = (len(pos) - np.searchsorted(pos, candidates, side="left")) / len(pos)
    sp = np.searchsorted(neg, candidates, side="left") / len(neg)
    return np.asarray((se + sp) / 2)


def headline_threshold(y: np.ndarray, scores: np.ndarray, physionet: np.ndarray, patient: np.ndarray) -> float:
    """T2: the threshold maximising mean(PhysioNet MAcc over all its recordings, CirCor per-patient MAcc),
    a patient's score the mean over his recordings (the exam rule, device/core/exam.py); ties go to the lowest.

    ``y`` 1 = positive; ``physionet`` marks PhysioNet recordings, ``patient`` holds each CirCor recording's
    patient id ("" elsewhere). These are the issue's own figures, where the pooled threshold weighs each of
    PhysioNet's six databases, CirCor and PASCAL's sets alike: on the 0.6.0 recipe's out-of-fold scores T2
    sat at 0.39-0.43 against 0.41-0.53 and raised nested-CV PhysioNet MAcc by 0.02-0.03 on two seeds
    (docs/screening_all_sources/ensemble/SHIP_RULE_HEADLINE_THRESHOLD.md).
    """
    y, s = np.asarray(y).astype(int), np.asarray(scores, dtype=np.float64)
    physionet, patient = np.asarray(physionet, dtype=bool), np.asarray(patient)
    ids = sorted(set(patient[patient != ""].tolist()))
    if not physionet.any() or not ids:
        raise ValueError("the headline threshold needs PhysioNet recordings and CirCor patients")
    yp = np.array([y[patient == p].max() for p in ids])
    sp = np.array([s[patient == p].mean() for p in ids])
    candidates = np.unique(np.round(np.concatenate([s[physionet], sp]), 5))
    curve = (macc_curve(y[physionet], s[physionet], candidates) + macc_curve(yp, sp, candidates)) / 2
    return float(candidates[int(np.argmax(curve))])


def _headline(y: np.ndarray, s: np.ndarray, strata: np.ndarray, thr: float) -> dict[str, float]:
    not_e = strata != "training-e"
    out = {"all_macc": binary_scores(y, s, thr)["macc"]}
    if not_e.any() and (~not_e).any():
        out["not_e_macc"] = binary_scores(y[not_e], s[not_e], thr)["macc"]
    return out


def transfer_check(
    y: np.ndarray, scores: np.ndarray, strata: np.ndarray, folds: np.ndarray, val_thresholds: list[float]
) -> dict[str, Any]:
    """Per fold: MAcc at the model's validation threshold vs at the threshold pooled over the other folds.

    ``y``, ``scores``, ``strata`` and ``folds`` cover the development recordings (scores out of fold);
    ``val_thresholds[f]`` is the threshold fold f's model chose on its own validation part.
    """
    per_fold: list[dict[str, Any]] = []
    for f, val_thr in enumerate(val_thresholds):
        here, other = folds == f, folds != f
        thr = pooled_threshold(y[other], scores[other], strata[other])
        per_fold.append(
            {
                "fold": f,
                "validation_threshold": val_thr,
                "pooled_threshold": thr,
                "at_validation": _headline(y[here], scores[here], strata[here], val_thr),
                "at_pooled": _headline(y[here], scores[here], strata[here], thr),
            }
        )
    summary: dict[str, Any] = {"per_fold": per_fold}
    # a scope counts only where every fold has it (a tiny fold may hold no training-e recording)
    keys = set.intersection(*(set(p["at_validation"]) for p in per_fold)) if per_fold else set()
    for which in ("at_validation", "at_pooled"):
        summary[which] = {k: float(np.nanmean([p[which][k] for p in per_fold])) for k in sorted(keys)}
    return summary


def choose(check: dict[str, Any], val_threshold: float, pooled: float) -> tuple[float, str]:
    """(threshold, source): the pooled one when the transfer check says it does no worse.

    Ranked by MAcc outside training-e (the screening headline) where it exists, else overall MAcc.
    """
    key = "not_e_macc" if "not_e_macc" in check.get("at_validation", {}) else "all_macc"
    if check.get("per_fold") and check["at_pooled"][key] >= check["at_validation"][key]:
        return pooled, "pooled out-of-fold cross-validation predictions"
    return val_threshold, "the final model's validation part"


def threshold_source(report: dict[str, Any]) -> str:
    """Where a run's shipped threshold came from (runs from before the pooled choice: validation)."""
    choice = report.get("threshold_choice")
    return str(choice["source"]) if choice else "validation recordings only"


def threshold_note(report: dict[str, Any]) -> str:
    """The sidecar's sentence on where the shipped threshold came from and what the probabilities mean."""
    tail = "reported probabilities are shifted in log-odds so that 0.5 is this threshold"
    choice = report.get("threshold_choice") or {}
    transfer = choice.get("transfer") or {}
    if transfer.get("moved"):
        return (
            f"pooled over the CV models' out-of-fold scores ({objective_words(choice)}; "
            f"{transfer['validated_threshold']:.3f}), "
            f"then carried over to the final models: the score at which they flag the share of the held-out split's "
            f"recordings that the CV models flagged ({transfer['reference_flag_rate']:.1%}; those recordings' inputs "
            f"only, no label read; converter.operating_point); {tail}"
        )
    return f"chosen on {threshold_source(report)} ({objective_words(choice)}; never on the held-out split); {tail}"


def objective_words(choice: dict[str, Any]) -> str:
    """What a run's threshold maximised, in a sidecar's or card's words."""
    if choice.get("objective") == "headline":
        return "maximising mean(PhysioNet MAcc, CirCor per-patient MAcc by the exam's mean rule)"
    return "maximising the mean MAcc over databases"
