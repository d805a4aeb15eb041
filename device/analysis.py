"""Heart rate and signal quality: what a nurse needs beside the model's label.

Both work on the preprocessed signal (2 kHz, band-passed, unit RMS) so they see what the model sees.
The heart rate comes from the autocorrelation of the heart-sound envelope: S1 and S2 recur once per
cardiac cycle, so the envelope correlates with itself at a lag of one cycle. The height of that peak is
also our periodicity measure: a recording without a clear rhythm (rubbing, talking, a stethoscope off
the chest) is not one the model should be trusted on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from device.audio_io import Audio

ENVELOPE_RATE = 50  # Hz; the envelope has nothing faster than a heart sound (~50-100 ms)
MIN_BPM, MAX_BPM = 30.0, 220.0
MIN_PERIODICITY = 0.25  # autocorrelation peak below this: no clear heartbeat rhythm
MAX_CLIPPED_FRACTION = 0.01  # 1% of samples at the peak: usable for the model but flagged
MIN_RMS_DBFS = -60.0
MAX_SPIKE_FRACTION = 0.08  # share of 0.5 s blocks whose energy is far above the recording's median


@dataclass(frozen=True)
class HeartRate:
    bpm: float | None
    periodicity: float  # 0..1, height of the autocorrelation peak at one cycle


@dataclass(frozen=True)
class Quality:
    """A signal quality index: 1 is a clean, rhythmic recording; ``ok`` False means record again."""

    score: float
    ok: bool
    issues: list[str] = field(default_factory=list)


def envelope(x: np.ndarray, rate: int) -> np.ndarray:
    """Normalised Shannon-energy envelope at ENVELOPE_RATE Hz."""
    peak = float(np.max(np.abs(x))) or 1.0
    y = x.astype(np.float64) / peak
    energy = -(y * y) * np.log(y * y + 1e-10)
    step = max(1, rate // ENVELOPE_RATE)
    n = len(energy) // step
    env = energy[: n * step].reshape(n, step).mean(axis=1)
    env = signal.filtfilt(*signal.butter(2, 8, fs=ENVELOPE_RATE), env) if n > 15 else env
    env = env - env.mean()
    sd = env.std()
    return np.asarray(env / sd if sd > 0 else env)


def heart_rate(x: np.ndarray, rate: int) -> HeartRate:
    """Heart rate from the envelope autocorrelation, or bpm None when no rhythm is found."""
    env = envelope(x, rate)
    n = len(env)
    max_lag = int(60 / MIN_BPM * ENVELOPE_RATE)
    min_lag = int(60 / MAX_BPM * ENVELOPE_RATE)
    if n < 2 * max_lag // 2 or n < min_lag * 3:
        return HeartRate(None, 0.0)
    ac = signal.correlate(env, env, mode="full", method="fft")[n - 1 :]
    ac = ac / (ac[0] if ac[0] > 0 else 1.0)
    hi = min(max_lag, n // 2)
    peaks, _ = signal.find_peaks(ac[: hi + 1])
    peaks = peaks[peaks >= min_lag]
    if len(peaks) == 0:
        return HeartRate(None, 0.0)
    best = int(peaks[np.argmax(ac[peaks])])
    # Two and three cycles line up as well as one: prefer the shortest lag whose peak is nearly as
    # high, so a rhythm is not read at half or a third of its rate.
    for divisor, ratio in ((3, 0.85), (2, 0.7)):
        near = [int(p) for p in peaks if abs(p - best / divisor) <= 1 + best * 0.04]
        if near and ac[near[0]] >= ratio * ac[best]:
            best = near[0]
            break
    lag = _refine(ac, best)
    periodicity = float(np.clip(ac[best], 0.0, 1.0))
    return HeartRate(round(60.0 * ENVELOPE_RATE / lag, 1), periodicity)


def _refine(ac: np.ndarray, k: int) -> float:
    """Sub-sample peak position by parabolic interpolation."""
    if 0 < k < len(ac) - 1:
        a, b, c = ac[k - 1], ac[k], ac[k + 1]
        denom = a - 2 * b + c
        if denom != 0:
            return float(k + 0.5 * (a - c) / denom)
    return float(k)


def spike_fraction(x: np.ndarray, rate: int) -> float:
    """Share of 0.5 s blocks with energy over 10x the median block: knocks, rubbing, movement."""
    block = rate // 2
    n = len(x) // block
    if n < 4:
        return 0.0
    e = (x[: n * block].astype(np.float64) ** 2).reshape(n, block).mean(axis=1)
    med = float(np.median(e)) or 1e-12
    return float(np.mean(e > 10 * med))


def assess(audio: Audio, processed: np.ndarray, rate: int) -> tuple[Quality, HeartRate]:
    """Quality index and heart rate of one recording (raw audio for level/clipping, processed for rhythm)."""
    issues: list[str] = []
    raw = audio.samples.astype(np.float64)
    raw = raw - raw.mean()
    rms = float(np.sqrt(np.mean(raw * raw)))
    level_db = 20 * np.log10(max(rms, 1e-12))
    peak = float(np.max(np.abs(audio.samples))) if len(audio.samples) else 0.0
    clipped = float(np.mean(np.abs(audio.samples) >= 0.99 * peak)) if peak >= 0.5 else 0.0
    hr = heart_rate(processed, rate)
    spikes = spike_fraction(processed, rate)

    score = 1.0
    if level_db < MIN_RMS_DBFS:
        issues.append(f"signal very weak ({level_db:.0f} dBFS): press the stethoscope on the chest, check the gain")
        score -= 0.6
    if clipped > MAX_CLIPPED_FRACTION:
        issues.append(f"clipping ({clipped:.1%} of samples at full scale): lower the input gain")
        score -= min(0.6, 10 * clipped)
    if hr.bpm is None or hr.periodicity < MIN_PERIODICITY:
        issues.append("no clear heartbeat rhythm: hold still, reduce noise, place the stethoscope firmly")
        score -= 0.5
    else:
        score -= 0.4 * max(0.0, 0.5 - hr.periodicity)
    if spikes > MAX_SPIKE_FRACTION:
        issues.append(f"noise bursts in {spikes:.0%} of the recording (movement, rubbing, talking): record again")
        score -= min(0.5, 2 * spikes)
    score = float(np.clip(score, 0.0, 1.0))
    return Quality(round(score, 3), ok=not issues, issues=issues), hr
