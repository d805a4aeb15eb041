"""A known-source prior on the screening score, told from the recording's channel signature.

The screening models are trained with equal labels inside every database (converter/trainer.py), so their
score carries no database prevalence: training-a of PhysioNet 2016 is 73% abnormal, training-e 9%. A kit
that records like one of the development databases (same stethoscope, same filtering) can put that
prevalence back by Bayes' rule; a recording that does not sound like any of them keeps its score.

The signature is the mean and standard deviation over time of the recording's MFCCs *before* cepstral
normalisation: the very step the model's inputs take to remove the channel is what tells the channel.
A multinomial logistic regression maps it to the development sources; the prior is the sources'
prevalence weighted by their probabilities (non-PhysioNet sources neutral); a Mahalanobis gate zeroes the
shift for recordings further from their most likely source than that source's own recordings are
(research/site_prior, SHIP_RULE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-4


def signature(raw_features: np.ndarray) -> np.ndarray:
    """(windows, frames, coefficients) MFCCs before normalisation -> (2 * coefficients,) mean then std."""
    flat = np.asarray(raw_features, dtype=np.float64).reshape(-1, raw_features.shape[-1])
    return np.concatenate([flat.mean(0), flat.std(0)])


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.asarray(np.log(p / (1 - p)))


@dataclass(frozen=True)
class SitePrior:
    classes: np.ndarray  # source names, e.g. "training-a", "circor2022"
    mean: np.ndarray  # signature standardisation
    scale: np.ndarray
    coef: np.ndarray  # (classes, features) on the standardised signature
    intercept: np.ndarray  # (classes,)
    centres: np.ndarray  # (classes, features) standardised
    precision: np.ndarray  # inverse pooled within-class covariance (standardised space)
    limit: np.ndarray  # (classes,) squared Mahalanobis distance within which a source's recordings fall (q99)
    prevalence: np.ndarray  # (classes,) share of abnormal; only where ``weighted``
    weighted: np.ndarray  # (classes,) bool: sources whose prevalence enters the prior (PhysioNet databases)
    reference: float  # the pooled prevalence the score's threshold is relative to

    def _z(self, sig: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(sig) - self.mean) / self.scale

    def proba(self, sig: np.ndarray) -> np.ndarray:
        z = self._z(sig) @ self.coef.T + self.intercept
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(1, keepdims=True)
        return out

    def known(self, sig: np.ndarray) -> np.ndarray:
        """Whether each signature is as close to its most likely source as that source's own recordings."""
        z = self._z(sig)
        best = self.proba(sig).argmax(1)
        diff = z - self.centres[best]
        d2 = np.einsum("ij,jk,ik->i", diff, self.precision, diff)
        known: np.ndarray = np.isfinite(d2) & (d2 <= self.limit[best])
        return known

    def offset(self, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-odds shift per signature, and whether the source was recognised (else the shift is 0)."""
        sig = np.atleast_2d(np.asarray(sig, dtype=np.float64))
        finite = np.isfinite(sig).all(1)
        safe = np.where(finite[:, None], sig, self.mean)
        p = self.proba(safe)
        w = p[:, self.weighted]
        prior = w @ self.prevalence[self.weighted] + (1 - w.sum(1)) * self.reference
        known = finite & self.known(safe)
        shift = np.where(known, _logit(prior) - _logit(self.reference), 0.0)
        return shift, known

    def adjust(self, scores: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shift, known = self.offset(sig)
        adjusted = 1 / (1 + np.exp(-(_logit(scores) + shift)))
        return adjusted, known

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [str(c) for c in self.classes],
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "centres": self.centres.tolist(),
            "precision": self.precision.tolist(),
            "limit": self.limit.tolist(),
            "prevalence": self.prevalence.tolist(),
            "weighted": [bool(b) for b in self.weighted],
            "reference": float(self.reference),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SitePrior:
        arr = {
            k: np.asarray(d[k], dtype=np.float64)
            for k in ("mean", "scale", "coef", "intercept", "centres", "precision", "limit", "prevalence")
        }
        return cls(
            classes=np.asarray(d["classes"]),
            weighted=np.asarray(d["weighted"], dtype=bool),
            reference=float(d["reference"]),
            **arr,
        )
