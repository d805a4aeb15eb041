"""Waveform augmentation for training: what changes between stethoscopes, rooms and hands.

Per-window CMVN already removes a fixed gain and most of a fixed frequency response; what it cannot
remove is noise and a response that changes the spectrum's shape within the band. So each augmented
copy gets a random gain, a random EQ (two peaking filters of +-9 dB), a random tilt, additive white or
pink noise at 10-35 dB SNR, and a random start offset.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from device.core.audio_io import Audio


def _peaking(f0: float, gain_db: float, q: float, fs: float) -> tuple[np.ndarray, np.ndarray]:
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / fs
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return b / den[0], den / den[0]


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)


def augment(audio: Audio, rng: np.random.Generator) -> Audio:
    """A randomly altered copy of a recording (same rate and length, minus a random lead-in)."""
    x = audio.samples.astype(np.float64)
    fs = float(audio.sample_rate)
    shift = int(rng.uniform(0, 1.0) * fs)
    if len(x) - shift > 6 * fs:
        x = x[shift:]
    for _ in range(2):
        f0 = float(rng.uniform(40, min(600, fs / 2 - 50)))
        b, a = _peaking(f0, float(rng.uniform(-9, 9)), float(rng.uniform(0.5, 2.0)), fs)
        x = signal.lfilter(b, a, x)
    tilt = float(rng.uniform(-0.5, 0.5))  # first-order pre/de-emphasis
    x = signal.lfilter([1, -tilt], [1], x)
    power = float(np.mean(x * x)) or 1e-12
    noise = rng.standard_normal(len(x)) if rng.random() < 0.5 else _pink(len(x), rng)
    snr_db = float(rng.uniform(10, 35))
    noise *= np.sqrt(power / (10 ** (snr_db / 10)) / (float(np.mean(noise * noise)) or 1e-12))
    x = (x + noise) * 10 ** (rng.uniform(-12, 6) / 20)
    x = np.clip(x / max(1.0, float(np.max(np.abs(x))) / 0.99), -1, 1)
    return Audio(x.astype(np.float32), audio.sample_rate, audio.source + "#aug", audio.channels, audio.subtype)
