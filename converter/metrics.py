"""Scores for screening and sound-type classification, in plain numpy (no scikit-learn needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN when a class is absent."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def binary_scores(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Se, Sp, MAcc = (Se+Sp)/2, accuracy, AUC and counts; y=1 is abnormal."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(score) >= threshold
    se = float(pred[y].mean()) if y.any() else float("nan")
    sp = float((~pred[~y]).mean()) if (~y).any() else float("nan")
    return {
        "sensitivity": se,
        "specificity": sp,
        "macc": float(np.nanmean([se, sp])) if not (np.isnan(se) and np.isnan(sp)) else float("nan"),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "auc": roc_auc(y, score),
        "n": len(y),
        "n_abnormal": int(y.sum()),
    }


def best_threshold(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Threshold maximising MAcc, averaged over ``groups`` (databases) so no single one dominates.

    Every candidate is scored at once from sorted scores (a recording is called abnormal at ``score >=
    t``); ties go to the lowest threshold. `steth calibrate` calls this thousands of times per run.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    groups = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups)
    candidates = np.unique(np.round(score, 4))
    if len(candidates) > 400:
        candidates = np.quantile(score, np.linspace(0, 1, 401))
    curves = []
    for g in np.unique(groups):
        m = groups == g
        pos, neg = np.sort(score[m & y]), np.sort(score[m & ~y])
        if len(pos) and len(neg):
            se = (len(pos) - np.searchsorted(pos, candidates, side="left")) / len(pos)
            sp = np.searchsorted(neg, candidates, side="left") / len(neg)
            curves.append((se + sp) / 2)
    if not curves or not len(candidates):
        return 0.5
    return float(candidates[int(np.argmax(np.mean(curves, axis=0)))])


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    idx = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in idx and p in idx:
            m[idx[t], idx[p]] += 1
    return m


def pascal_scores(cm: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The PASCAL 2011 challenge measures per class: precision, Youden's index, F-score, discriminant power."""
    total = cm.sum()
    out: dict[str, Any] = {"accuracy": float(np.trace(cm) / total) if total else float("nan"), "per_class": {}}
    for i, lab in enumerate(labels):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = total - tp - fn - fp
        sens = tp / (tp + fn) if tp + fn else float("nan")
        spec = tn / (tn + fp) if tn + fp else float("nan")
        prec = tp / (tp + fp) if tp + fp else float("nan")
        f = 2 * prec * sens / (prec + sens) if prec + sens else float("nan")
        # DP = sqrt(3)/pi * (ln(sens/(1-sens)) + ln(spec/(1-spec))); clipped away from 0 and 1
        s, p = np.clip([sens, spec], 1e-3, 1 - 1e-3) if not np.isnan([sens, spec]).any() else (np.nan, np.nan)
        dp = np.sqrt(3) / np.pi * (np.log(s / (1 - s)) + np.log(p / (1 - p)))
        out["per_class"][lab] = {
            "precision": float(prec),
            "sensitivity": float(sens),
            "specificity": float(spec),
            "youden": float(sens + spec - 1),
            "f_score": float(f),
            "discriminant_power": float(dp),
            "n": int(cm[i].sum()),
        }
    return out
