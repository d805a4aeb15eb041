"""The reference the device's features are checked against: window_features as it was, through librosa.

device.core.features computes the same STFT, Slaney mel filter bank, dB scale and DCT in numpy and scipy.fft,
so the device does not carry librosa (with numba and LLVM behind it: +130 MiB resident, a 17 s first
start). This module keeps the librosa computation, for tests/device/test_features_vs_librosa.py and
tests/benchmarks/bench_features.py. librosa is in the `dev` extra only; callers skip without it.
"""

from __future__ import annotations

import functools

import numpy as np

from device.core.features import FeatureParams, normalise


@functools.lru_cache(maxsize=16)
def mel_basis(params: FeatureParams) -> np.ndarray:
    import librosa

    basis = librosa.filters.mel(
        sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax
    )
    return np.asarray(basis, dtype=np.float32)


def window_features(windows: np.ndarray, params: FeatureParams) -> np.ndarray:
    """(n, window_samples) -> (n, frames, n_features) float32, exactly as the shipped models were trained."""
    import librosa

    windows = np.atleast_2d(windows).astype(np.float32, copy=False)
    spec = np.abs(librosa.stft(windows, n_fft=params.n_fft, hop_length=params.hop_length, center=True)) ** 2
    mel = np.einsum("mf,nft->nmt", mel_basis(params), spec)
    log_mel = 10.0 * np.log10(np.maximum(mel, 1e-10))
    # top_db per window (librosa's power_to_db would take the max over the whole batch).
    log_mel = np.maximum(log_mel, log_mel.max(axis=(1, 2), keepdims=True) - params.top_db)
    feats = librosa.feature.mfcc(S=log_mel, n_mfcc=params.n_mfcc) if params.kind == "mfcc" else log_mel
    feats = np.transpose(feats, (0, 2, 1))  # (n, frames, coefficients): time-major for the RNN
    return np.ascontiguousarray(normalise(feats, params), dtype=np.float32)
