"""Fitting the known-source prior of research/site_prior/prior.py on development recordings."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from device.core.audio_io import read_audio
from device.core.errors import AudioError
from device.core.features import FeatureParams, extract
from research.site_prior.prior import SitePrior, signature

QUANTILE = 0.99  # a source's own recordings within this share of its distance are "known"
RIDGE = 1e-3  # keeps the pooled covariance invertible when features are nearly collinear


def signature_of(args: tuple[str, FeatureParams]) -> np.ndarray:
    path, params = args
    try:
        feats = extract(read_audio(path), replace(params, cmvn=False), check=False).features
    except AudioError:
        return np.full(2 * params.n_mfcc, np.nan)
    return signature(feats)


def signatures(paths: Sequence[Path], params: FeatureParams, jobs: int = 2) -> np.ndarray:
    with ProcessPoolExecutor(jobs) as pool:
        rows = list(pool.map(signature_of, [(str(p), params) for p in paths], chunksize=32))
    return np.vstack(rows)


def fit(sig: np.ndarray, source: np.ndarray, abnormal: np.ndarray, weighted: np.ndarray, c: float = 1.0) -> SitePrior:
    """``source``: each recording's source name; ``abnormal``: 0/1; ``weighted``: recordings whose source's
    prevalence enters the prior (PhysioNet's). Prevalences are add-one smoothed; the reference is the
    weighted recordings' pooled share of abnormal."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = sig.mean(0), sig.std(0) + 1e-9
    z = (sig - mean) / scale
    lr = LogisticRegression(C=c, max_iter=5000).fit(z, source)
    classes = lr.classes_
    centres = np.vstack([z[source == k].mean(0) for k in classes])
    resid = z - centres[np.searchsorted(classes, source)]
    cov = resid.T @ resid / max(len(z) - len(classes), 1) + RIDGE * np.eye(z.shape[1])
    precision = np.linalg.inv(cov)
    limit = np.empty(len(classes))
    prevalence = np.zeros(len(classes))
    weighted_cls = np.zeros(len(classes), bool)
    for i, k in enumerate(classes):
        m = source == k
        d = resid[m]
        limit[i] = np.quantile(np.einsum("ij,jk,ik->i", d, precision, d), QUANTILE)
        prevalence[i] = (abnormal[m].sum() + 1) / (m.sum() + 2)
        weighted_cls[i] = bool(weighted[m].all())
    reference = float(abnormal[weighted].mean())
    return SitePrior(
        classes=classes,
        mean=mean,
        scale=scale,
        coef=lr.coef_,
        intercept=lr.intercept_,
        centres=centres,
        precision=precision,
        limit=limit,
        prevalence=prevalence,
        weighted=weighted_cls,
        reference=reference,
    )
