"""Shared pieces of the murmur experiments: data, splits, training, scoring."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import circor
from features import PARAMS, pascal

from converter import datasets as ds
from converter import featurestore, models
from converter.featurestore import FeatureSet
from converter.metrics import binary_scores, roc_auc

HERE = Path(__file__).parent


@dataclass
class Data:
    fs: FeatureSet  # CirCor
    meta: dict[str, circor.Meta]
    pfs: FeatureSet  # PASCAL normal/murmur

    @property
    def recs(self) -> list[ds.Recording]:
        return self.fs.recordings


def load() -> Data:
    recs, meta = circor.load()
    fs = featurestore.build(recs, PARAMS, name="murmur-circor", workers=1)
    pfs = featurestore.build(pascal(), PARAMS, name="murmur-pascal", workers=1)
    return Data(fs, meta, pfs)


def patient_folds(recs: list[ds.Recording], k: int, seed: int) -> np.ndarray:
    """Fold per recording: linked patients together, strata = patient murmur Present/Absent/Unknown."""
    proxy = [ds.Recording(r.dataset, r.subset, r.record_id, r.path, r.sublabel, "", r.group) for r in recs]
    return np.array(ds.split_folds(proxy, k, seed))


def test_split(data: Data) -> tuple[np.ndarray, np.ndarray]:
    """(dev recording indices, test recording indices): converter.circor.split_patients, 20%, seed 23."""
    test = np.array([data.meta[r.key].test for r in data.recs])
    return np.flatnonzero(~test), np.flatnonzero(test)


def y_of(recs: list[ds.Recording]) -> np.ndarray:
    """1 present, 0 absent, -1 unknown (per recording)."""
    return np.array(
        [1 if r.label in ("present", "murmur") else 0 if r.label in ("absent", "normal") else -1 for r in recs]
    )


def windows(fs: FeatureSet, idx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = idx[y[idx] >= 0]
    w = fs.windows_of(keep)
    return fs.features[w], y[fs.owner[w]]


def train(
    x: np.ndarray,
    t: np.ndarray,
    *,
    arch: str = "conv_lstm",
    seed: int = 0,
    epochs: int = 12,
    class_weights: bool = True,
    lr: float = 2e-3,
    batch: int = 64,
) -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    k = models.keras()
    m = models.build(arch, tuple(x.shape[1:]), 2)
    m.compile(k.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    cw = None
    if class_weights:
        n1 = max(int(t.sum()), 1)
        n0 = max(len(t) - n1, 1)
        cw = {0: len(t) / (2 * n0), 1: len(t) / (2 * n1)}
    drop = max(1, (2 * epochs) // 3)

    def sched(epoch: int, cur: float) -> float:
        return lr if epoch < drop else lr / 4

    m.fit(
        x,
        t,
        batch_size=batch,
        epochs=epochs,
        verbose=0,
        shuffle=True,
        class_weight=cw,
        callbacks=[k.callbacks.LearningRateScheduler(sched)],
    )
    return m


def record_probs(model: Any, fs: FeatureSet, idx: np.ndarray) -> np.ndarray:
    """P(present) per recording: mean over its windows (nan when it has none)."""
    w = fs.windows_of(idx)
    p = model.predict(fs.features[w], batch_size=512, verbose=0)[:, 1]
    out = np.full(len(idx), np.nan)
    pos = {int(r): i for i, r in enumerate(idx)}
    sums = np.zeros(len(idx))
    cnt = np.zeros(len(idx))
    for o, v in zip(fs.owner[w], p, strict=True):
        sums[pos[int(o)]] += v
        cnt[pos[int(o)]] += 1
    out[cnt > 0] = sums[cnt > 0] / cnt[cnt > 0]
    return out


def calibrate(p: np.ndarray, t: float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    t = min(max(t, 1e-6), 1 - 1e-6)
    return 1 / (1 + np.exp(-(np.log(p / (1 - p)) - np.log(t / (1 - t)))))


def patients(data: Data, idx: np.ndarray, p: np.ndarray, rule: str, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, score) per Present/Absent patient: score = rule over its recordings' calibrated P (0.5 = decision)."""
    by: dict[str, list[float]] = {}
    lab: dict[str, int] = {}
    for i, v in zip(idx, p, strict=True):
        m = data.meta[data.recs[i].key]
        if m.patient_murmur not in ("Present", "Absent") or np.isnan(v):
            continue
        by.setdefault(m.patient, []).append(float(calibrate(np.array([v]), t)[0]))
        lab[m.patient] = int(m.patient_murmur == "Present")
    ks = sorted(by)
    agg = np.max if rule == "max" else np.mean
    return np.array([lab[k] for k in ks]), np.array([float(agg(by[k])) for k in ks])


def best_t(data: Data, idx: np.ndarray, p: np.ndarray, rule: str) -> float:
    """Threshold (on recording P) maximising patient MAcc under ``rule``."""
    grid = np.linspace(0.05, 0.95, 91)
    best = (-1.0, 0.5)
    for t in grid:
        y, s = patients(data, idx, p, rule, float(t))
        if len(np.unique(y)) < 2:
            continue
        sc = binary_scores(y, s, 0.5)["macc"]
        if sc > best[0]:
            best = (sc, float(t))
    return best[1]


def scores(data: Data, idx: np.ndarray, p: np.ndarray, rule: str, t: float) -> dict[str, float]:
    y = y_of(data.recs)[idx]
    ok = (y >= 0) & ~np.isnan(p)
    rec = binary_scores(y[ok], calibrate(p[ok], t), 0.5)
    py, ps = patients(data, idx, p, rule, t)
    pat = binary_scores(py, ps, 0.5)
    return {
        "rec_macc": rec["macc"],
        "rec_auc": roc_auc(y[ok], p[ok]),
        "pat_macc": pat["macc"],
        "pat_auc": roc_auc(py, ps),
        "pat_se": pat["sensitivity"],
        "pat_sp": pat["specificity"],
    }
