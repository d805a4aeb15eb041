"""Heart-cycle segmentation: where S1, systole, S2 and diastole are, and the heart rate they give.

A small frame classifier (log band energies at 50 frames a second, with context, through a two-layer
perceptron in numpy) gives each frame a probability per state; a duration-constrained decoder (a
hidden semi-Markov model, Springer et al. 2016) then finds the most likely sequence of whole cycles
S1 -> systole -> S2 -> diastole, with state durations that depend on the cycle length. The cycle length
it assumes comes from the autocorrelation of the classifier's S1 and S2 probabilities, which repeat once
per cycle and, unlike the sound envelope, not at the S1-S2 interval; a slow one is also tried at half
its length, and the decoder's likelihood decides. The heart rate reported is from the S1-to-S1
intervals of the decoded cycles (their mean near the median).

Runs on the preprocessed 2 kHz signal (any band-pass that keeps 25-400 Hz: the features only look
there, each band normalised per recording). Weights and duration model: ``device/models/segmenter.npz``
with a sidecar ``segmenter.json`` (trained by ``steth train-segmenter``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from device.core import dsp
from device.core.errors import ModelError

SAMPLE_RATE = 2000
FRAME_RATE = 50  # frames a second: 20 ms, a third of the +-60 ms a heart sound must be found within
HOP = SAMPLE_RATE // FRAME_RATE
NFFT = 128  # 64 ms window, 15.6 Hz bins
# FFT-bin edges of the bands, 31-406 Hz, narrower where heart sounds have most energy
BAND_EDGES = (2, 3, 4, 5, 6, 8, 10, 13, 17, 22, 26)
# context the classifier sees, in frames either side: dense near the frame, sparse up to +-0.48 s, so
# it can tell S1 (followed by the short systole) from S2 (followed by the longer diastole)
OFFSETS = (-24, -16, -12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 12, 16, 24)
STATES = ("S1", "systole", "S2", "diastole")
N_FEATURES = len(BAND_EDGES)  # the bands and the total
FFT_CHUNK = 256  # frames whose spectra are computed together (frame_features)
MIN_BPM, MAX_BPM = 30.0, 220.0
MIN_FRAMES = 4  # no state is decoded shorter than 80 ms: the decoder fills four frames per step
MODEL_NAME = "segmenter"
# The cycle length is also tried at half when it reads slower than this (segment_posteriors): below
# 50 bpm at rest is rare, two cycles read as one is not (the envelope's check, analysis.CORRECTED_BPM,
# starts there too). On CirCor validation patients 50, 70 and 90 bpm gave the same readings; on training
# patients 90 fixed two infants read at half their rate, but it runs a second decoding on most adults
# (+1.1-1.8 ms per 5 s, near the 5 ms budget), so the cheaper one was kept.
HALF_CHECK_BPM = 50.0
# ...and when the envelope holds at least this many heart sounds per slow cycle: S1 and S2 of one beat
# are two; e00152 has 3.1 (S1, S2, the premature beat's S1); PhysioNet's slow b0070, b0114, b0311 1.7-2.0
MIN_SOUNDS_HALF = 2.6
# S1-S1 intervals averaged for the rate: within this factor of their median (heart_rate_from_s1)
RATE_BAND = (0.8, 1.25)
MIN_NEAR_SHARE = 0.6  # fewer intervals in RATE_BAND: no one interval, the rate is beats over time


# -- features ------------------------------------------------------------------------------------------


@functools.cache
def _window() -> np.ndarray:
    n = np.arange(NFFT)
    return np.asarray(0.5 - 0.5 * np.cos(2 * np.pi * n / NFFT), dtype=np.float32)


def frame_count(n_samples: int) -> int:
    return max(0, n_samples // HOP)


def frame_features(x: np.ndarray) -> np.ndarray:
    """(frames, N_FEATURES) log band energies of a 2 kHz signal, each normalised over the recording.

    Frame i is centred at sample i*HOP + HOP/2 (time (i + 0.5) / FRAME_RATE).
    """
    n = frame_count(len(x))
    if n == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    pad = (NFFT - HOP) // 2
    xp = np.pad(np.asarray(x, dtype=np.float32), (pad, NFFT), mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(xp, NFFT)[::HOP][:n]
    # |FFT(float32 frame * window)|**2, float32, at the bins the bands use, FFT_CHUNK frames at a time
    # in buffers made once (a whole recording's spectra at once cost more in fresh pages than the
    # FFTs). numpy computes a float32 FFT in float64 and rounds it to complex64, but converts row by
    # row on the way (6x slower than the FFT itself): converting the frames first gives the same numbers.
    power = np.empty((n, BAND_EDGES[-1]), dtype=np.float32)
    chunk = min(n, FFT_CHUNK)
    windowed, as_double = np.empty((chunk, NFFT), dtype=np.float32), np.empty((chunk, NFFT))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        np.multiply(frames[start : start + m], _window(), out=windowed[:m])
        as_double[:m] = windowed[:m]
        magnitude = np.abs(np.fft.rfft(as_double[:m], axis=1)[:, : BAND_EDGES[-1]].astype(np.complex64))
        np.multiply(magnitude, magnitude, out=power[start : start + m])
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(power, axis=1)], axis=1)
    edges = np.asarray(BAND_EDGES)
    bands = cum[:, edges[1:]] - cum[:, edges[:-1]]
    total = cum[:, edges[-1]] - cum[:, edges[0]]
    feats = np.log(np.concatenate([bands, total[:, None]], axis=1) + 1e-10)
    # per recording: the median frame is 0, the spread between quiet and loud frames 1, so the
    # stethoscope's gain and frequency response do not matter
    lo, med, hi = np.percentile(feats, (10, 50, 90), axis=0)
    scale = np.maximum(hi - lo, 1e-3)
    return np.asarray((feats - med) / scale, dtype=np.float32)


def with_context(feats: np.ndarray) -> np.ndarray:
    """(frames, N_FEATURES * len(OFFSETS)): each frame with its neighbours at OFFSETS (edges repeated)."""
    n = len(feats)
    if n == 0:
        return np.zeros((0, len(OFFSETS) * feats.shape[1]), dtype=np.float32)
    # rows of the edge-padded frames taken by index (np.take: a quarter of the time of fancy indexing)
    before, after = -OFFSETS[0], OFFSETS[-1]
    padded = np.concatenate([np.repeat(feats[:1], before, axis=0), feats, np.repeat(feats[-1:], after, axis=0)])
    rows = np.arange(n)[:, None] + (np.asarray(OFFSETS) + before)[None, :]
    stacked: np.ndarray = np.take(padded.astype(np.float32, copy=False), rows, axis=0)
    return stacked.reshape(n, -1)


# -- the model -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DurationModel:
    """Per state: mean duration = a + b * cycle (seconds), standard deviation = c + e * cycle."""

    a: tuple[float, float, float, float]
    b: tuple[float, float, float, float]
    c: tuple[float, float, float, float]
    e: tuple[float, float, float, float]

    def frames(self, cycle_s: float) -> tuple[list[np.ndarray], list[int]]:
        """Log-probabilities of durations 1..dmax (frames) per state, and each state's dmax."""
        out: list[np.ndarray] = []
        dmax: list[int] = []
        for j in range(4):
            mean = max(self.a[j] + self.b[j] * cycle_s, 0.03) * FRAME_RATE
            sd = max(self.c[j] + self.e[j] * cycle_s, 0.01) * FRAME_RATE
            hi = max(int(np.ceil(mean + 4 * sd)), MIN_FRAMES + 1)
            d = np.arange(1, hi + 1, dtype=np.float64)
            logp = -0.5 * ((d - mean) / sd) ** 2
            logp -= np.log(np.exp(logp[MIN_FRAMES - 1 :]).sum())
            logp[: MIN_FRAMES - 1] = -np.inf
            lo = max(MIN_FRAMES, int(np.floor(mean - 4 * sd)))
            logp[: lo - 1] = -np.inf
            out.append(logp)
            dmax.append(hi)
        return out, dmax

    def as_dict(self) -> dict[str, list[float]]:
        return {"a": list(self.a), "b": list(self.b), "c": list(self.c), "e": list(self.e)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DurationModel:
        def four(key: str) -> tuple[float, float, float, float]:
            v = [float(x) for x in d[key]]
            if len(v) != 4:
                raise ValueError(f"{key}: expected 4 values")
            return (v[0], v[1], v[2], v[3])

        return cls(four("a"), four("b"), four("c"), four("e"))


@dataclass(frozen=True)
class SegmenterModel:
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights, bias) per layer, ReLU between
    mean: np.ndarray  # input standardisation
    std: np.ndarray
    priors: np.ndarray  # state frequencies in training: posteriors / priors are scaled likelihoods
    durations: DurationModel
    meta: dict[str, Any]

    def posteriors(self, feats: np.ndarray) -> np.ndarray:
        """(frames, 4) state probabilities of context-stacked features."""
        # in place where the arithmetic allows: each fresh array of a 30 s recording's frames is 1.3 MB
        h = with_context(feats)
        np.subtract(h, self.mean, out=h)
        np.divide(h, self.std, out=h)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w
            h += b
            if i < len(self.layers) - 1:
                np.maximum(h, 0, out=h)
        h = h - h.max(axis=1, keepdims=True)
        p = np.exp(h)
        return np.asarray(p / p.sum(axis=1, keepdims=True), dtype=np.float64)

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        arrays: dict[str, np.ndarray] = {"mean": self.mean, "std": self.std, "priors": self.priors}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"] = w.astype(np.float32)
            arrays[f"b{i}"] = b.astype(np.float32)
        np.savez_compressed(path.with_suffix(".npz"), allow_pickle=False, **arrays)
        full = {**meta, "durations": self.durations.as_dict(), "features": feature_settings()}
        path.with_suffix(".json").write_text(json.dumps(full, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> SegmenterModel:
        npz, sidecar = path.with_suffix(".npz"), path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
            if meta.get("features") != feature_settings():
                raise ModelError(
                    f"{sidecar}: trained with other features ({meta.get('features')})",
                    "retrain it with `steth train-segmenter`",
                )
            with np.load(npz) as z:
                n_layers = sum(1 for k in z.files if k.startswith("w"))
                layers = tuple((z[f"w{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32)) for i in range(n_layers))
                mean, std, priors = z["mean"], z["std"], z["priors"]
            durations = DurationModel.from_dict(meta["durations"])
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"segmenter {npz}: cannot be loaded ({exc})", "reinstall the package") from exc
        return cls(layers, mean.astype(np.float32), std.astype(np.float32), priors.astype(np.float64), durations, meta)


def feature_settings() -> dict[str, Any]:
    return {
        "sample_rate": SAMPLE_RATE,
        "frame_rate": FRAME_RATE,
        "nfft": NFFT,
        "band_edges": list(BAND_EDGES),
        "offsets": list(OFFSETS),
    }


def default_path() -> Path:
    return Path(str(resources.files("device").joinpath("models"))) / f"{MODEL_NAME}.npz"


@functools.cache
def load_default() -> SegmenterModel:
    return SegmenterModel.load(default_path())


# -- cycle length --------------------------------------------------------------------------------------


def cycle_candidates(post: np.ndarray, n: int = 3) -> list[tuple[float, float]]:
    """Up to ``n`` (cycle length in seconds, strength 0..1) from the autocorrelation of the S1 and S2
    probabilities, best first. A rhythm repeats at two cycles as well as one: a peak at half the
    best lag that is nearly as strong is preferred, so a rhythm is not read at half its rate."""
    lo = int(FRAME_RATE * 60 / MAX_BPM)
    hi = min(int(FRAME_RATE * 60 / MIN_BPM), len(post) - 1)
    if hi <= lo + 2:
        return []
    ac = np.zeros(len(post))
    for j in (0, 2):
        s = post[:, j] - post[:, j].mean()
        a = dsp.autocorrelation(s)
        ac += a / a[0] if a[0] > 0 else a
    ac /= 2
    seg = ac[: hi + 1]
    peaks = [k for k in range(max(lo, 1), hi) if seg[k] >= seg[k - 1] and seg[k] > seg[k + 1]]
    if not peaks:
        return []
    peaks.sort(key=lambda k: -seg[k])
    best = peaks[0]
    for divisor, ratio in ((2, 0.75), (3, 0.85)):
        near = [k for k in peaks if abs(k - best / divisor) <= 1 + 0.06 * best and k >= lo]
        if near and seg[near[0]] >= ratio * seg[best]:
            best = near[0]
            break
    ordered = [best] + [k for k in peaks if k != best]
    return [(dsp.refine_peak(seg, k) / FRAME_RATE, float(np.clip(seg[k], 0, 1))) for k in ordered[:n]]


# -- decoding ------------------------------------------------------------------------------------------


def decode(log_b: np.ndarray, durations: list[np.ndarray], dmax: list[int]) -> tuple[np.ndarray, float]:
    """Most likely state per frame under the cyclic semi-Markov model, and the path's log score.

    ``log_b``: (T, 4) log emission scores. The first and last segments may be cut by the recording's
    edges: the first has no duration penalty, the last may run past the end (the frames beyond score 0).
    Every state lasts at least MIN_FRAMES, so the MIN_FRAMES segment ends of a step depend only on
    starts already scored, and are scored together: a Python step per MIN_FRAMES frames.
    """
    return decode_many(log_b, [(durations, dmax)])[0]


def decode_many(log_b: np.ndarray, models: list[tuple[list[np.ndarray], list[int]]]) -> list[tuple[np.ndarray, float]]:
    """``decode`` of the same emissions under several duration models (durations, dmax) at once: the same
    states and scores, bit for bit, for about the cost of one (the steps' numpy overhead is most of the
    time). The windows span the longest model's durations; the others' longer durations are -inf, which
    changes no maximum, and their segments cannot end in the extra frames past the recording."""
    t_len, n_models = len(log_b), len(models)
    width = 4 * n_models  # the models' states side by side: column 4 m + j is state j of model m
    big = max(max(dmax) for _, dmax in models)
    cum = np.zeros((t_len + big + 1, 4))
    cum[1 : t_len + 1] = np.cumsum(log_b, axis=0)
    cum[t_len + 1 :] = cum[t_len]
    # logp_rev[4 m + j, k]: log-probability of duration big - k (so that it lines up with the windows)
    logp = np.full((width, big), -np.inf)
    # the first segment, from frame 0: any length up to the state's dmax, no duration penalty
    first = np.full((t_len + big + 1, width), -np.inf)
    for m, (durations, dmax) in enumerate(models):
        for j in range(4):
            logp[4 * m + j, : dmax[j]] = durations[j]
            first[1 : dmax[j] + 1, 4 * m + j] = np.log(0.25)
    delta, windows = _forward(np.tile(cum, n_models), logp[:, ::-1], first, t_len)
    columns = [slice(4 * m, 4 * m + 4) for m in range(n_models)]
    return [_backtrace(delta[:, c], windows[:, c], logp[c, ::-1], first[:, c], t_len) for c in columns]


def _forward(cum: np.ndarray, logp_rev: np.ndarray, first: np.ndarray, t_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The best score of a segment of each state ending at each frame, delta (frames, states), and the
    windows of segment-start scores each end looks back on (which duration won is recomputed for the few
    segment ends the backtrace visits, not stored for every frame).

    Each step is a few numpy calls on a few hundred numbers, so their overhead is most of the time: they
    write into buffers made once, on 2-D arrays, and the state order is permuted with take (a fancy
    index costs 4x more); the steps past the first segment and inside the recording (most of them) are
    written out without the checks for the edges.
    """
    width, big = logp_rev.shape
    total = len(cum) - 1
    # start[big + s, 4 m + j]: score of the best path whose segment of state j starts at frame s, minus cum[s, j]
    start = np.full((total + 1 + big, width), -np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(start, big, axis=0)  # [t] = starts t-big .. t-1
    delta = np.full((total + 1, width), -np.inf)
    prev = np.array([4 * m + j for m in range(width // 4) for j in (3, 0, 1, 2)])
    durations = np.ascontiguousarray(np.broadcast_to(logp_rev, (MIN_FRAMES, width, big)))
    scratch, moved = np.empty((MIN_FRAMES, width, big)), np.empty((MIN_FRAMES, width))
    add, subtract, take, reduce_max = np.add, np.subtract, np.take, np.maximum.reduce

    def step(t: int) -> int:
        """The segment ends t .. t + MIN_FRAMES - 1 and the segment starts among them; the next t."""
        u = min(t + MIN_FRAMES, total + 1)
        buf, best = scratch[: u - t], delta[t:u]
        add(windows[t:u], durations[: u - t], out=buf)
        reduce_max(buf, axis=2, out=best)
        if t <= big:  # the first segment can still end here
            np.maximum(best, first[t:u], out=best)
        add(best, cum[t:u], out=best)
        v = min(u, t_len)
        take(best[: v - t], prev, axis=1, out=moved[: v - t])
        subtract(moved[: v - t], cum[t:v], out=start[big + t : big + v])
        return u

    t = 1
    while t < t_len and t <= big:
        t = step(t)
    whole = max(0, (t_len - t) // MIN_FRAMES)
    for s in range(t, t + whole * MIN_FRAMES, MIN_FRAMES):
        best, frame_cum = delta[s : s + MIN_FRAMES], cum[s : s + MIN_FRAMES]
        add(windows[s : s + MIN_FRAMES], durations, out=scratch)
        reduce_max(scratch, axis=2, out=best)
        add(best, frame_cum, out=best)
        take(best, prev, axis=1, out=moved)
        subtract(moved, frame_cum, out=start[big + s : big + s + MIN_FRAMES])
    t += whole * MIN_FRAMES
    if t < t_len:
        t = step(t)
    # the segments ending past the recording: nothing starts there, so they are scored all at once
    best = delta[t:]
    reduce_max(windows[t : total + 1] + logp_rev, axis=2, out=best)
    if t <= big:
        np.maximum(best[: big + 1 - t], first[t : big + 1], out=best[: big + 1 - t])
    add(best, cum[t:], out=best)
    return delta, windows


def _backtrace(
    delta: np.ndarray, windows: np.ndarray, logp_rev: np.ndarray, first: np.ndarray, t_len: int
) -> tuple[np.ndarray, float]:
    """The best path's states from the best segment end at or past the recording's end, and its score;
    which duration won is recomputed at each segment end the path visits."""
    big = logp_rev.shape[1]
    prev = (3, 0, 1, 2)
    ends = delta[t_len:]
    flat = int(np.argmax(ends))
    t_end, j = t_len + flat // 4, flat % 4
    score = float(ends[flat // 4, j])
    states = np.empty(t_len, dtype=np.int8)
    while t_end > 0:
        cand = windows[t_end, j] + logp_rev[j]
        k = int(np.argmax(cand))
        d = big - k if cand[k] >= first[t_end, j] else t_end
        s0 = t_end - d
        states[max(s0, 0) : min(t_end, t_len)] = j
        t_end, j = s0, prev[j]
    return states, score


# -- the result ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segmentation:
    states: np.ndarray  # (frames,) 0 S1, 1 systole, 2 S2, 3 diastole
    s1: list[float]  # centre of each S1, seconds
    s2: list[float]
    heart_rate_bpm: float | None  # from the S1-to-S1 intervals of the decoded cycles (heart_rate_from_s1)
    cycle_s: float | None  # the cycle length the decoder assumed
    periodicity: float  # 0..1, how strongly the S1/S2 probabilities repeat at their best-repeating lag
    fit: float  # 0..1, mean probability the classifier gives the decoded state: low = no heart sounds
    confident_frames: float  # share of frames where the classifier is sure (max probability >= 0.6)
    frame_fit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per frame: probability of its state

    def good_share(self, threshold: float, block_s: float = 1.0) -> float:
        """Share of ``block_s`` blocks where the decoded cycles fit the classifier (mean frame fit at
        least ``threshold``): the part of the recording where heart sounds are heard clearly."""
        k = int(block_s * FRAME_RATE)
        n = len(self.frame_fit) // k
        if n == 0:
            return float(np.mean(self.frame_fit) >= threshold) if len(self.frame_fit) else 0.0
        blocks = self.frame_fit[: n * k].reshape(n, k).mean(axis=1)
        return float(np.mean(blocks >= threshold))


def _centres(states: np.ndarray, state: int) -> list[float]:
    """Centres (seconds) of the runs of ``state``, skipping runs cut by the recording's edges."""
    is_s = np.concatenate([[False], states == state, [False]])
    edges = np.flatnonzero(np.diff(is_s.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    keep = (starts > 0) & (ends < len(states))
    return [round(float((a + b) / 2 / FRAME_RATE), 3) for a, b in zip(starts[keep], ends[keep], strict=True)]


def segment_posteriors(
    post: np.ndarray, model: SegmenterModel, sounds_per_s: Callable[[], float] | None = None
) -> Segmentation:
    """Decode frame posteriors (frames, 4) into cycles. ``sounds_per_s``: heart sounds a second in the
    recording's envelope (asked only for a slow cycle; without it no half-cycle check is made)."""
    n = len(post)
    if n < MIN_FRAMES * 8:
        return Segmentation(np.zeros(n, dtype=np.int8), [], [], None, None, 0.0, 0.0, 0.0)
    # one decoding at the best-repeating cycle: on validation patients, decoding at the two best and
    # keeping the higher-scoring path, or the better-fitting one, read more rates at half or double
    candidates = cycle_candidates(post, 1)
    cycle, strength = candidates[0] if candidates else (0.8, 0.0)
    log_b = np.log(np.clip(post / model.priors, 1e-8, None))
    # Two cycles can repeat better than one when every other beat sounds different (a premature beat
    # with a soft S1 and no S2 after a normal one: e00152 repeats every 1.7 s). The autocorrelation
    # cannot tell; the decoder's likelihood at half the length can, but only where more than S1 and S2
    # are heard per slow cycle: it also preferred half the length where a slow heart's S1-S2 pairs
    # stand 1 s of silence apart (PhysioNet b0070, b0114, b0311). Never double: at double the length
    # the score rose for correctly read fast infants too (CirCor patients).
    slow = sounds_per_s is not None and 60 / cycle < HALF_CHECK_BPM and cycle / 2 >= 60 / MAX_BPM
    cycles = [cycle]
    if slow and sounds_per_s is not None and sounds_per_s() * cycle >= MIN_SOUNDS_HALF:
        cycles.append(cycle / 2)
    # both lengths in one pass of the decoder when the half is tried: nearly the cost of one
    (states, score), *half = decode_many(log_b, [model.durations.frames(c) for c in cycles])
    if half and half[0][1] > score:
        states, cycle = half[0][0], cycle / 2
    s1, s2 = _centres(states, 0), _centres(states, 2)
    bpm = heart_rate_from_s1(s1)
    frame_fit = post[np.arange(n), states]
    confident = float(np.mean(post.max(axis=1) >= 0.6))
    return Segmentation(
        states,
        s1,
        s2,
        bpm,
        round(cycle, 3),
        round(strength, 3),
        round(float(frame_fit.mean()), 3),
        round(confident, 3),
        frame_fit,
    )


def heart_rate_from_s1(s1: list[float]) -> float | None:
    """60 / the mean S1-to-S1 interval, over the intervals near their median.

    Intervals outside 30-220 bpm (gaps in the decoding) are ignored. Near is 0.8-1.25x the median,
    which leaves out the missed and extra beats the median would also ignore; the mean, not the median
    itself, because S1 centres fall on a 10 ms grid (2.5 % of a cycle at 150 bpm) and the median of
    such intervals is one of a few grid values. When under 60 % of the intervals are near the median,
    the rhythm has no one interval (every other beat premature, as in e00152, or irregular): the rate
    is then the beats over the time they take, the mean of the intervals within 0.5-1.75x the median.
    """
    if len(s1) < 3:
        return None
    iv = np.diff(np.asarray(s1))
    iv = iv[(iv >= 60 / MAX_BPM) & (iv <= 60 / MIN_BPM)]
    if len(iv) < 2:
        return None
    median = float(np.median(iv))
    near = (iv >= RATE_BAND[0] * median) & (iv <= RATE_BAND[1] * median)
    if np.mean(near) < MIN_NEAR_SHARE:
        near = (iv >= 0.5 * median) & (iv <= 1.75 * median)
    return round(60.0 / float(np.mean(iv[near])), 1)


def segment(x: np.ndarray, model: SegmenterModel | None = None) -> Segmentation:
    """Segment a preprocessed 2 kHz signal."""
    m = model or load_default()
    return segment_posteriors(m.posteriors(frame_features(x)), m, lambda: sound_rate(x))


def sound_rate(x: np.ndarray) -> float:
    """Heart sounds a second in a preprocessed 2 kHz signal's envelope (analysis.heart_sounds)."""
    from device.core import analysis  # imported here: analysis builds on this module

    env = analysis.envelope(x, SAMPLE_RATE)
    return len(analysis.heart_sounds(env)) * analysis.ENVELOPE_RATE / max(len(env), 1)
