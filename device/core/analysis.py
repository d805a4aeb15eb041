"""Heart rate and signal quality: what a nurse needs beside the model's label.

``assess`` reads both from the heart-cycle segmentation (device/core/segment.py): the rate comes from
the decoded cycles' S1-to-S1 intervals (``Segmentation.heart_rate_bpm``), and the quality gate asks
whether heart sounds were found at all and over how much of the recording, not how regular the rhythm
is (an irregular or murmuring heart is the patient the screening is for, not a bad recording). Where the segmentation is
unsure (a weak rhythm, loosely fitting cycles), the signal decides: heart sounds are short bursts that
stand out from the quiet beside them and hold no pitch (``sound_standout``, ``pitched_share``). The envelope
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
from device.core.features import raw_rms, resample
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
# and rubbing give, and with sounds that do not stand out or are voiced (below). MIN_GOOD_SHARE reads
# "noise over most of it" as more than 60% of the seconds unclear. The values were set after seeing
# PhysioNet and PASCAL figures as well (device/models/MODEL_CARD.md).
MIN_SEG_FIT = 0.55  # decoded cycles the classifier mostly disagrees with: no heart sounds
WEAK_RHYTHM = 0.25  # S1/S2 probabilities that hardly repeat at the decoded cycle length...
WEAK_RHYTHM_FIT = 0.7  # ...with cycles that fit only this well: no heart sounds
GOOD_BLOCK_FIT = 0.55  # a 1 s block whose frames agree this well with the decoded cycles is clearly heard
MIN_GOOD_SHARE = 0.4  # under this share of clearly heard seconds: noise over most of the recording
# regular noise bursts can pass for loosely fitting cycles (rubbing once a second): then hardly any second
# fits well
CLEAR_BLOCK_FIT = 0.65
MIN_CLEAR_SHARE = 0.1
# A weak rhythm with loosely fitting cycles is also what an irregular heart gives (atrial fibrillation,
# ectopic beats: 34 of the 37 abnormal PhysioNet recordings of the design half the rule made unsure, each
# with a heart sound on the waveform in nearly every decoded S1/S2 slot). What the recording itself shows
# tells them apart, whatever the rhythm: a heart sound is a short burst standing out from the quieter sound
# on at least one side of it (a murmur may fill the other), where the cycles a decoder forces onto rubbing,
# hum or noise mostly land on nothing. Talking has such bursts too (syllables between pauses), but voiced:
# a pitch held for 100 ms and more, which heart sounds (a few damped vibrations) never are. So the
# weak-rhythm rule holds unless at least STANDOUT_SHARE of the decoded S1/S2 peak at STANDOUT_RATIO times
# the energy of one of their flanks (FLANK_FRAMES, 40-160 ms away) and above the recording's median 20 ms,
# and under MAX_PITCHED_SHARE of the recording's loud part is voiced. Chosen on PhysioNet's design half
# (converter.datasets.split_folds, 2 folds, seed 0), CirCor's validation patients, PASCAL's artifacts and
# the known signals; the other half of PhysioNet was scored once with the chosen values.
STANDOUT_RATIO = 4.0
FLANK_FRAMES = (2, 8)
STANDOUT_SHARE = 0.7
PITCH_HZ = (80.0, 330.0)  # voices; heart sounds ring lower (30-150 Hz) and die out within a few periods
PITCH_CORRELATION = 0.5  # the frame repeats itself at one pitch period at least this well...
PITCH_RUN_S = 0.1  # ...in runs of frames this long
# of the loudest 30% of 40 ms frames; in the design data 99% of heart recordings stay under 0.4 (a few
# children's musical murmurs and talking reach 0.8-0.95), the synthetic speech is over 0.98
MAX_PITCHED_SHARE = 0.5
PITCH_CHUNK = 256  # frames whose autocorrelations are computed together (pitched_share): 5 s, 330 KB
# The segmenter was trained on children (CirCor); on adults with coronary disease (PhysioNet training-e) its
# cycles fit worse, and its three rules (fit under MIN_SEG_FIT, a weak rhythm, few clear seconds) made 8 of
# the 80 abnormal recordings of the design half unsure against 16 of 834 normal ones, 10 of those 16 for
# clipping, each of the 8 with a heart sound in nearly every decoded S1/S2 slot on the waveform. So none of
# those rules holds when the signal itself shows heart sounds by a stricter test than STANDOUT_SHARE's: at
# least SHOWN_SHARE of the decoded S1/S2 stand out (as above) AND are short (the frames around the peak at
# a quarter of its energy or more span at most SOUND_FRAMES, 160 ms: a heart sound's few vibrations, where
# the edge of a burst of rubbing or breath noise, which also stands out on one side, lasts 0.3-1 s) AND are
# about as loud as the typical decoded sound (within SOUND_SPREAD of the median one's peak: a few knocks
# among decoded slots landing on near silence are not a heartbeat) -- and the recording is not voiced.
# Exempting the fit rule on the standout share alone let a PASCAL artifact of scattered knocks through
# (artifacts 85 -> 82.5 %); with the three conditions, the PASCAL artifacts' shares are at most 0.43
# unvoiced (median 0.10), the unsure abnormal recordings' 0.50-0.77 (one 0.38, still unsure). Chosen on
# PhysioNet's design half, CirCor's validation patients, PASCAL set A's artifacts and the known signals;
# the loudness condition is not used for the weak-rhythm exemption above (standout alone): in atrial
# fibrillation S1 grows and fades with the preceding interval (PhysioNet d0052: 0.39 with it, 0.87 without).
SHOWN_SHARE = 0.5
SOUND_FRAMES = 8  # 20 ms frames: 160 ms (at most FLANK_FRAMES[1], so the window stays inside the recording)
SOUND_SPREAD = 8.0  # energy ratio either way to the median decoded sound's peak (2.8x in amplitude)


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


@dataclass(frozen=True)
class DecodedSounds:
    """The decoded S1 and S2 with both flanks inside the recording, as 20 ms frame energies."""

    peak: np.ndarray  # the loudest frame of each
    quiet: np.ndarray  # the median frame energy of its quieter flank (FLANK_FRAMES away)
    width: np.ndarray  # frames around the loudest one at a quarter of its energy or more (capped)
    floor: float  # the recording's median frame energy


def decoded_sounds(processed: np.ndarray, rate: int, seg: Segmentation) -> DecodedSounds:
    hop = max(1, rate // segment.FRAME_RATE)
    n = min(len(seg.states), len(processed) // hop)
    empty = np.zeros(0)
    if n == 0:
        return DecodedSounds(empty, empty, empty, 0.0)
    energy = (processed[: n * hop].astype(np.float64) ** 2).reshape(n, hop).mean(axis=1)
    states = seg.states[:n]
    edges = np.flatnonzero(np.diff(states)) + 1
    starts, ends = np.concatenate([[0], edges]), np.concatenate([edges, [n]])
    near, far = FLANK_FRAMES
    keep = np.isin(states[starts], (0, 2)) & (starts >= far) & (ends <= n - far)
    a, b = starts[keep], ends[keep]
    floor = float(np.median(energy))
    if len(a) == 0:
        return DecodedSounds(empty, empty, empty, floor)
    flank = np.arange(near, far)
    before = np.median(energy[a[:, None] - 1 - flank], axis=1)  # a-far .. a-near-1
    after = np.median(energy[b[:, None] + flank], axis=1)  # b+near .. b+far-1
    peak = np.maximum.reduceat(energy, np.stack([a, b], axis=1).ravel())[::2]  # b < n: the flanks fit
    quiet = np.maximum(np.minimum(before, after), 1e-20)
    # the loudest frame of each and the run of frames at >= a quarter of its energy around it
    top = np.array([i + int(np.argmax(energy[i:j])) for i, j in zip(a, b, strict=True)])
    w = SOUND_FRAMES
    around = energy[np.clip(top[:, None] + np.arange(-w, w + 1), 0, n - 1)] >= peak[:, None] / 4
    left = np.cumprod(around[:, w - 1 :: -1], axis=1).sum(axis=1)
    right = np.cumprod(around[:, w + 1 :], axis=1).sum(axis=1)
    return DecodedSounds(peak, quiet, 1 + left + right, floor)


def _standing_out(sounds: DecodedSounds) -> np.ndarray:
    return np.asarray((sounds.peak >= STANDOUT_RATIO * sounds.quiet) & (sounds.peak >= sounds.floor))


def sound_standout(processed: np.ndarray, rate: int, seg: Segmentation, sounds: DecodedSounds | None = None) -> float:
    """Share of the decoded S1 and S2 (those with both flanks inside the recording) whose loudest 20 ms
    frame has at least STANDOUT_RATIO times the median frame energy of one of its flanks and at least the
    recording's median frame energy: sounds that stand out from the quieter sound beside them, as heart
    sounds do whatever the rhythm."""
    sounds = sounds or decoded_sounds(processed, rate, seg)
    return float(np.mean(_standing_out(sounds))) if len(sounds.peak) else 0.0


def heart_sound_share(
    processed: np.ndarray, rate: int, seg: Segmentation, sounds: DecodedSounds | None = None
) -> float:
    """Share of the decoded S1 and S2 that look like heart sounds on the waveform: standing out (as in
    ``sound_standout``), short (at most SOUND_FRAMES at a quarter of the peak energy) and about as loud as
    the typical decoded sound (within SOUND_SPREAD of the median peak)."""
    sounds = sounds or decoded_sounds(processed, rate, seg)
    if len(sounds.peak) == 0:
        return 0.0
    typical = float(np.median(sounds.peak))
    usual = (sounds.peak >= typical / SOUND_SPREAD) & (sounds.peak <= typical * SOUND_SPREAD)
    return float(np.mean(_standing_out(sounds) & (sounds.width <= SOUND_FRAMES) & usual))


def frame_autocorrelations(frames: np.ndarray, lags: int) -> np.ndarray:
    """Lags 0..lags-1 of each row's autocorrelation, (rows, lags), through a zero-padded FFT of twice its
    length. Each row's numbers depend on that row alone."""
    width = frames.shape[1]
    spectra = np.fft.rfft(frames, 2 * width, axis=1)
    power_spectra = np.zeros(spectra.shape, dtype=np.complex128)  # irfft converts a real one slowly
    np.add(np.square(spectra.real), np.square(spectra.imag), out=power_spectra.real)
    return np.fft.irfft(power_spectra, 2 * width, axis=1)[:, :lags]


def frame_voicing(processed: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Per 40 ms frame (every 20 ms): its power, and whether it is voiced (pitched_share).

    PITCH_CHUNK frames at a time: arrays of a whole recording's overlapping frames (2 MB for 30 s) cost
    more in fresh pages than the FFTs do. Every frame's numbers depend on its own samples alone.
    """
    hop, width = max(1, rate // 50), max(4, int(0.04 * rate))
    n = max(0, (len(processed) - width) // hop)
    lo, hi = int(rate / PITCH_HZ[1]), int(rate / PITCH_HZ[0])
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    overlap = width / (width - np.arange(hi + 2))  # the autocorrelation per overlapping sample
    every = np.lib.stride_tricks.sliding_window_view(processed.astype(np.float64), width)[::hop][:n]
    power, voiced = np.empty(n), np.empty(n, dtype=bool)
    for start in range(0, n, PITCH_CHUNK):
        frames = every[start : start + PITCH_CHUNK]
        frames = frames - frames.mean(axis=1, keepdims=True)
        power[start : start + len(frames)] = (frames**2).mean(axis=1)
        ac = frame_autocorrelations(frames, hi + 2)
        ac = ac / np.maximum(ac[:, :1], 1e-20) * overlap
        band = ac[:, lo - 1 : hi + 2]
        is_peak = (band[:, 1:-1] >= band[:, :-2]) & (band[:, 1:-1] > band[:, 2:])
        best = np.where(is_peak, band[:, 1:-1], -1.0).max(axis=1)
        voiced[start : start + len(frames)] = (best >= PITCH_CORRELATION) & (ac[:, 1 : hi + 1].min(axis=1) < 0)
    return power, voiced


def pitched_share(processed: np.ndarray, rate: int) -> float:
    """Share of the loudest 30% of 40 ms frames (every 20 ms) that lie in runs of PITCH_RUN_S or more of
    voiced frames: frames whose autocorrelation falls below zero and then peaks at a lag of one PITCH_HZ
    period at PITCH_CORRELATION or more (a held pitch, not merely a smooth low-frequency wave)."""
    power, voiced = frame_voicing(processed, rate)
    n = len(power)
    if n < 10:
        return 0.0
    loud = power >= np.percentile(power, 70)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    held = np.zeros(n, dtype=bool)
    min_run = max(1, round(PITCH_RUN_S * 50))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if b - a >= min_run:
            held[a:b] = True
    return float(held[loud].mean())


def assess(
    audio: Audio, processed: np.ndarray, rate: int, seg: Segmentation | None = None
) -> tuple[Quality, HeartRate]:
    """Quality and heart rate of one recording: the raw audio for level and clipping, the processed
    signal (and its segmentation, computed here when not given) for heart sounds and rate."""
    issues: list[str] = []
    reasons: list[str] = []
    rms = raw_rms(audio.samples)
    level_db = 20 * np.log10(max(rms, 1e-12))
    magnitude = np.abs(audio.samples)
    peak = float(np.max(magnitude)) if len(audio.samples) else 0.0
    clipped = float(np.mean(magnitude >= 0.99 * peak)) if peak >= 0.5 else 0.0
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
    clear = seg.good_share(CLEAR_BLOCK_FIT)
    loose = seg.fit < MIN_SEG_FIT
    weak = seg.periodicity < WEAK_RHYTHM and seg.fit < WEAK_RHYTHM_FIT
    noisy = good < MIN_GOOD_SHARE or clear < MIN_CLEAR_SHARE
    if len(seg.s1) >= 2 and (loose or weak or noisy):
        # what the waveform shows, computed only for the few recordings a segmentation rule flags; the
        # pitch (the costly part) only where the sounds would exempt the recording
        sounds = decoded_sounds(processed, rate, seg)
        shown = heart_sound_share(processed, rate, seg, sounds) >= SHOWN_SHARE
        stand_out = weak and sound_standout(processed, rate, seg, sounds) >= STANDOUT_SHARE
        if (shown or stand_out) and pitched_share(processed, rate) >= MAX_PITCHED_SHARE:
            shown = stand_out = False
        loose, noisy = loose and not shown, noisy and not shown
        weak = weak and not (shown or stand_out)
    if len(seg.s1) < 2 or loose or weak:
        reasons.append("no_heart_sounds")
        issues.append("no heart sounds found: place the stethoscope firmly on the chest, hold still")
    elif noisy:
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
