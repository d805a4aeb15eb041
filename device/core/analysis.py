"""Heart rate and signal quality: what a nurse needs beside the model's label.

``assess`` reads both from the heart-cycle segmentation (device/core/segment.py): the rate is the
median S1-to-S1 interval of the decoded cycles, and the quality gate asks whether heart sounds were
found at all and over how much of the recording, not how regular the rhythm is (an irregular or
murmuring heart is the patient the screening is for, not a bad recording). The envelope
autocorrelation below is the fallback for the rate when the decoding finds too few cycles.

Both work on the preprocessed signal (2 kHz, band-passed, unit RMS) so they see what the model sees.
The heart rate comes from the autocorrelation of the heart-sound envelope: S1 and S2 recur once per
cardiac cycle, so the envelope correlates with itself at a lag of one cycle. The height of the best
peak is also our periodicity measure: a recording without a clear rhythm (rubbing, talking, a
stethoscope off the chest) is not one the model should be trusted on. The best-repeating lag is not
always one cycle: when the rate varies from beat to beat, S1-S2 (which does not vary) can repeat
better, and two cycles can repeat better than one. Counting the heart sounds such a lag holds (two per
cycle; one if it is S1-S2, four if it is two cycles) tells which (``_one_cycle``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device.core import dsp, segment
from device.core.audio_io import Audio
from device.core.features import resample
from device.core.segment import Segmentation

ENVELOPE_RATE = 50  # Hz; the envelope has nothing faster than a heart sound (~50-100 ms)
MIN_BPM, MAX_BPM = 30.0, 220.0
MAX_CLIPPED_FRACTION = 0.01  # 1% of samples at the peak: usable for the model but flagged
MIN_RMS_DBFS = -60.0
# A cardiac cycle holds two heart sounds (S1, S2), sometimes three or four (S3, S4, a click, a murmur). A
# lag holding about one is the S1-S2 interval, which recurs more regularly than the whole cycle when the
# rate varies from beat to beat; one holding four or more is two cycles.
SOUNDS_PER_CYCLE = (1.4, 3.2)
SOUND_PROMINENCE = 0.25  # of the typical loud sound's prominence: weaker peaks are not heart sounds
# S1-S2 lasts 0.25-0.45 s at any rate: read as a cycle, it gives over 130 bpm; two cycles read as one
# give half the rate, under 50 bpm for most people at rest. Only such readings are checked, and a
# correction lands between the two.
CORRECTED_BPM = (50.0, 130.0)
# The envelope's smoothing: a 2nd-order Butterworth low-pass at 8 Hz, run forwards and backwards (one
# section: scipy's filtfilt of butter(2, 8) and sosfiltfilt of its SOS form are the same filter).
_ENVELOPE_SOS = dsp.butter(2, 8.0, "lowpass", ENVELOPE_RATE)


@dataclass(frozen=True)
class HeartRate:
    bpm: float | None
    periodicity: float  # 0..1, rhythm strength: the height of the best-repeating autocorrelation peak


# Why a recording cannot be assessed (Quality.reason), most basic first: the first that applies is given.
REASONS = ("too_short", "silence", "clipping", "no_heart_sounds", "noise")
# The gate's rules on the segmentation. A weak rhythm alone is not one of them: an irregular rhythm is the
# heart, not the recording (a first version that required the S1/S2 probabilities to repeat, chosen on
# CirCor validation patients alone, made 12% of PhysioNet's abnormal recordings unsure against 2% of its
# normal ones). It counts only together with cycles that fit the classifier poorly, which is what speech
# and rubbing give. MIN_GOOD_SHARE reads "noise over most of it" as more than 60% of the seconds unclear.
# The values were set after seeing PhysioNet and PASCAL figures as well (device/models/MODEL_CARD.md).
MIN_SEG_FIT = 0.55  # decoded cycles the classifier mostly disagrees with: no heart sounds
WEAK_RHYTHM = 0.25  # S1/S2 probabilities that hardly repeat at the decoded cycle length...
WEAK_RHYTHM_FIT = 0.7  # ...with cycles that fit only this well: no heart sounds
GOOD_BLOCK_FIT = 0.55  # a 1 s block whose frames agree this well with the decoded cycles is clearly heard
MIN_GOOD_SHARE = 0.4  # under this share of clearly heard seconds: noise over most of the recording
# regular noise bursts can pass for loosely fitting cycles (rubbing once a second): then hardly any second
# fits well
CLEAR_BLOCK_FIT = 0.65
MIN_CLEAR_SHARE = 0.1


@dataclass(frozen=True)
class Quality:
    """A signal quality index: 1 is clear heart sounds throughout; ``ok`` False means record again, and
    ``reason`` (one of REASONS) says why."""

    score: float
    ok: bool
    issues: list[str] = field(default_factory=list)
    reason: str | None = None


def envelope(x: np.ndarray, rate: int) -> np.ndarray:
    """Normalised Shannon-energy envelope at ENVELOPE_RATE Hz."""
    peak = float(np.max(np.abs(x))) or 1.0
    y = x.astype(np.float64) / peak
    energy = -(y * y) * np.log(y * y + 1e-10)
    step = max(1, rate // ENVELOPE_RATE)
    n = len(energy) // step
    env = energy[: n * step].reshape(n, step).mean(axis=1)
    env = dsp.sosfiltfilt(_ENVELOPE_SOS, env) if n > 15 else env
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
    ac = dsp.autocorrelation(env)
    ac = ac / (ac[0] if ac[0] > 0 else 1.0)
    hi = min(max_lag, n // 2)
    peaks, _ = dsp.find_peaks(ac[: hi + 1])
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
    periodicity = float(np.clip(ac[best], 0.0, 1.0))
    cycle = _one_cycle(env, ac, peaks, best)
    return HeartRate(round(60.0 * ENVELOPE_RATE / dsp.refine_peak(ac, cycle), 1), periodicity)


def heart_sounds(env: np.ndarray) -> np.ndarray:
    """Envelope samples where a sound peaks: local maxima at least 0.1 s apart, at least a quarter as
    prominent as the typical loud sound.

    "Typical" is the median prominence of the loudest 1.3 a second (two sounds a cycle at 40 bpm), so
    that a few knocks far louder than the heart sounds do not hide them.
    """
    peaks, prominence = dsp.find_peaks(env, distance=max(1, ENVELOPE_RATE // 10), prominence=0.0)
    if len(peaks) == 0 or prominence is None:
        return peaks
    loudest = np.sort(prominence)[::-1][: max(3, round(1.3 * len(env) / ENVELOPE_RATE))]
    return np.asarray(peaks[prominence >= SOUND_PROMINENCE * float(np.median(loudest))])


def _one_cycle(env: np.ndarray, ac: np.ndarray, peaks: np.ndarray, lag: int) -> int:
    """The autocorrelation peak that is one cardiac cycle: ``lag`` (the best-repeating one), unless the
    heart sounds say it is the S1-S2 interval or two cycles. ``peaks``: all peaks in the bpm range.
    """
    sounds = len(heart_sounds(env))
    if sounds < 3:
        return lag
    rate = sounds / len(env)  # sounds per envelope sample: times a lag, the sounds one such lag holds
    bpm = 60.0 * ENVELOPE_RATE / lag
    slowest = 60.0 * ENVELOPE_RATE / CORRECTED_BPM[0]
    fastest = 60.0 * ENVELOPE_RATE / CORRECTED_BPM[1]
    if bpm > CORRECTED_BPM[1] and rate * lag < SOUNDS_PER_CYCLE[0]:
        # About one sound per "cycle", fast: the S1-S2 interval. The cycle is the best-repeating longer
        # lag that holds about two sounds.
        longer = [
            int(p) for p in peaks if 1.5 * lag <= p <= slowest and SOUNDS_PER_CYCLE[0] <= rate * p <= 2.6 and ac[p] > 0
        ]
        if longer:
            return max(longer, key=lambda p: ac[p])
    elif bpm < CORRECTED_BPM[0] and rate * lag > SOUNDS_PER_CYCLE[1]:
        # Four or more sounds per "cycle", slow: two cycles, if half the lag repeats too.
        half = [
            int(p)
            for p in peaks
            if abs(p - lag / 2) <= 1 + 0.06 * lag
            and p >= fastest
            and SOUNDS_PER_CYCLE[0] <= rate * p <= SOUNDS_PER_CYCLE[1]
            and ac[p] >= max(0.1, 0.5 * ac[lag])
        ]
        if half:
            return max(half, key=lambda p: ac[p])
    return lag


def spike_fraction(x: np.ndarray, rate: int) -> float:
    """Share of 0.5 s blocks with energy over 10x the median block: knocks, rubbing, movement."""
    block = rate // 2
    n = len(x) // block
    if n < 4:
        return 0.0
    e = (x[: n * block].astype(np.float64) ** 2).reshape(n, block).mean(axis=1)
    med = float(np.median(e)) or 1e-12
    return float(np.mean(e > 10 * med))


def assess(
    audio: Audio, processed: np.ndarray, rate: int, seg: Segmentation | None = None
) -> tuple[Quality, HeartRate]:
    """Quality and heart rate of one recording: the raw audio for level and clipping, the processed
    signal (and its segmentation, computed here when not given) for heart sounds and rate."""
    issues: list[str] = []
    reasons: list[str] = []
    raw = audio.samples.astype(np.float64)
    raw = raw - raw.mean()
    rms = float(np.sqrt(np.mean(raw * raw)))
    level_db = 20 * np.log10(max(rms, 1e-12))
    peak = float(np.max(np.abs(audio.samples))) if len(audio.samples) else 0.0
    clipped = float(np.mean(np.abs(audio.samples) >= 0.99 * peak)) if peak >= 0.5 else 0.0
    if seg is None:
        x2k = processed if rate == segment.SAMPLE_RATE else resample(processed, rate, segment.SAMPLE_RATE)
        seg = segment.segment(x2k)
    good = seg.good_share(GOOD_BLOCK_FIT)

    if level_db < MIN_RMS_DBFS:
        reasons.append("silence")
        issues.append(f"signal very weak ({level_db:.0f} dBFS): press the stethoscope on the chest, check the gain")
    if clipped > MAX_CLIPPED_FRACTION:
        reasons.append("clipping")
        issues.append(f"clipping ({clipped:.1%} of samples at full scale): lower the input gain")
    weak_rhythm = seg.periodicity < WEAK_RHYTHM and seg.fit < WEAK_RHYTHM_FIT
    if len(seg.s1) < 2 or seg.fit < MIN_SEG_FIT or weak_rhythm:
        reasons.append("no_heart_sounds")
        issues.append("no heart sounds found: place the stethoscope firmly on the chest, hold still")
    elif good < MIN_GOOD_SHARE or seg.good_share(CLEAR_BLOCK_FIT) < MIN_CLEAR_SHARE:
        reasons.append("noise")
        issues.append(
            f"heart sounds clear in only {good:.0%} of the recording (movement, rubbing, talking): record again"
        )
    # 1 for clear heart sounds throughout; how well the cycles fit and how much of it is clear
    score = 0.5 * good + 0.5 * float(np.clip((seg.fit - 0.4) / 0.5, 0.0, 1.0))
    if reasons:
        score = min(score, 0.4)
    reason = min(reasons, key=REASONS.index) if reasons else None
    bpm = seg.heart_rate_bpm
    if bpm is None and "no_heart_sounds" not in reasons:
        bpm = heart_rate(processed, rate).bpm  # too few decoded cycles: the envelope's rhythm
    return Quality(round(float(score), 3), ok=not reasons, issues=issues, reason=reason), HeartRate(
        bpm, seg.periodicity
    )
