"""A proposal measured by the benchmarks: device.features.window_features without librosa.

librosa (with numba and llvmlite behind it) is most of the device's resident memory (+130 MiB of the
daemon's ~265, bench_device.py) and of its start-up time, yet the pipeline uses four small pieces of
it: a centred STFT, the Slaney mel filter bank, power in dB and a DCT. These are the same computations
in numpy, scipy.signal.get_window and scipy.fft, in the same order and precision (a float64 window
times float32 frames, numpy's rfft, cast to complex64; the mel basis in float64 cast to float32), so the
features come out bit for bit the same; bench_pipeline.py checks that on the recording it times, and
bench_device.py measures the memory. Not used by the device: device/features.py is the integrator's,
who decides whether to adopt it.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
from scipy import signal

from device.features import FeatureParams


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa.hz_to_mel, htk=False)."""
    f = np.asanyarray(f)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    if f.ndim:
        log_t = f >= min_log_hz
        mels[log_t] = min_log_mel + np.log(f[log_t] / min_log_hz) / logstep
    elif f >= min_log_hz:
        mels = min_log_mel + np.log(f / min_log_hz) / logstep
    return np.asarray(mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return np.asarray(freqs)


@functools.lru_cache(maxsize=16)
def mel_basis(params: FeatureParams) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with its defaults (Slaney scale and norm)."""
    n_freqs = 1 + params.n_fft // 2
    weights = np.zeros((params.n_mels, n_freqs), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=params.n_fft, d=1.0 / params.sample_rate)
    min_mel = _hz_to_mel(np.asarray(params.fmin, dtype=float))
    max_mel = _hz_to_mel(np.asarray(params.fmax, dtype=float))
    mel_f = _mel_to_hz(np.linspace(min_mel, max_mel, params.n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(params.n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : params.n_mels + 2] - mel_f[: params.n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


@functools.lru_cache(maxsize=16)
def _window(n_fft: int) -> np.ndarray:
    return np.asarray(signal.get_window("hann", n_fft, fftbins=True))


def power_spectrogram(windows: np.ndarray, params: FeatureParams) -> np.ndarray:
    """|librosa.stft(windows, n_fft, hop_length, center=True)|**2, float32, (n, freqs, frames)."""
    n_fft, hop = params.n_fft, params.hop_length
    padded = np.pad(windows, [(0, 0), (n_fft // 2, n_fft // 2)], mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]  # (n, frames, n_fft)
    spectrum = np.fft.rfft(_window(n_fft) * frames, axis=-1)  # float64 window x float32 frames, as librosa
    stft = np.zeros((windows.shape[0], 1 + n_fft // 2, frames.shape[1]), dtype=np.complex64, order="F")
    stft[...] = np.swapaxes(spectrum, -1, -2)
    return np.abs(stft) ** 2


def window_features(windows: np.ndarray, params: FeatureParams) -> np.ndarray:
    """device.features.window_features, librosa-free: (n, window_samples) -> (n, frames, n_features)."""
    windows = np.atleast_2d(windows).astype(np.float32, copy=False)
    spec = power_spectrogram(windows, params)
    mel = np.einsum("mf,nft->nmt", mel_basis(params), spec)
    log_mel = 10.0 * np.log10(np.maximum(mel, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max(axis=(1, 2), keepdims=True) - params.top_db)
    if params.kind == "mfcc":
        feats = scipy.fft.dct(log_mel, axis=-2, type=2, norm="ortho")[..., : params.n_mfcc, :]
    else:
        feats = log_mel
    feats = np.transpose(feats, (0, 2, 1))
    if params.cmvn:
        feats = (feats - feats.mean(axis=1, keepdims=True)) / (feats.std(axis=1, keepdims=True) + 1e-5)
    return np.ascontiguousarray(feats, dtype=np.float32)
