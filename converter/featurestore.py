"""Features of whole data sets, computed once and cached on disk.

Training reads windows many times (folds, models, leave-one-database-out); extracting them once per
FeatureParams and caching them keyed by the params' fingerprint keeps a full training run within its
time budget. Training windows use a shorter hop than inference (more, shifted views of each recording:
time-shift augmentation for free).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.datasets import Recording
from device.core.audio_io import read_audio
from device.core.errors import AudioError
from device.core.features import FeatureParams, extract

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Windows of many recordings: ``features[i]`` belongs to ``recordings[owner[i]]``."""

    features: np.ndarray  # (n_windows, frames, n_features) float32
    owner: np.ndarray  # (n_windows,) int32 index into recordings
    recordings: list[Recording]
    skipped: list[tuple[str, str]]  # (key, reason) of recordings the pipeline refused

    def windows_of(self, rec_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Indices of the windows that belong to the given recordings."""
        return np.flatnonzero(np.isin(self.owner, np.asarray(rec_indices)))


def cache_dir() -> Path:
    root = os.environ.get("STETH_CACHE_DIR") or Path.home() / ".cache" / "stethoscope-edge"
    return Path(root) / "features"


def _extract_one(args: tuple[str, FeatureParams, int | None]) -> tuple[np.ndarray | None, str]:
    path, params, augment_seed = args
    try:
        audio = read_audio(path)
        if augment_seed is not None:
            from converter.augment import augment

            audio = augment(audio, np.random.default_rng(augment_seed))
            return extract(audio, params, check=False).features, ""
        return extract(audio, params).features, ""
    except AudioError as exc:
        return None, exc.message


def build(
    recordings: Sequence[Recording],
    params: FeatureParams,
    *,
    train_hop_s: float | None = None,
    workers: int = 2,
    name: str = "",
    use_cache: bool = True,
    augment_seed: int | None = None,
) -> FeatureSet:
    """Extract (or load from cache) the windows of every recording; an augmented copy with a seed."""
    p = dataclasses.replace(params, hop_s=train_hop_s) if train_hop_s else params
    keys = [r.key for r in recordings]
    tag = f"aug{augment_seed}" if augment_seed is not None else "clean"
    digest = hashlib.sha256(("\n".join(keys) + p.to_json() + tag).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name or 'set'}-{digest}.npz"
    if use_cache and path.exists():
        data = np.load(path, allow_pickle=False)
        cached = [(a, b) for a, _, b in (s.partition("\t") for s in data["skipped"].tolist())]
        return FeatureSet(data["features"], data["owner"], list(recordings), cached)
    feats: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    jobs = [
        (str(r.path), p, None if augment_seed is None else augment_seed * 100003 + i) for i, r in enumerate(recordings)
    ]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, (f, reason) in enumerate(pool.map(_extract_one, jobs, chunksize=16)):
            if f is None:
                skipped.append((keys[i], reason))
                continue
            feats.append(f)
            owners.append(np.full(len(f), i, dtype=np.int32))
    fs = FeatureSet(
        np.concatenate(feats) if feats else np.zeros((0, *p.input_shape), np.float32),
        np.concatenate(owners) if owners else np.zeros(0, np.int32),
        list(recordings),
        skipped,
    )
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, features=fs.features, owner=fs.owner, skipped=np.array(["\t".join(s) for s in skipped]))
        tmp.replace(path)
    log.info("features: %d windows from %d recordings (%d skipped)", len(fs.owner), len(recordings), len(skipped))
    return fs
