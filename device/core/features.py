"""The signal pipeline: one recording in, a stack of per-window feature matrices out.

Training (converter/), the device and the dashboard all call these functions with the same
``FeatureParams``, which is saved beside every model, so a model can never be run with features it was
not trained on. Every step is deterministic: the same samples give the same features, bit for bit.
The filters and the resampler come from device/core/dsp.py (numpy): of scipy, only scipy.fft is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import scipy.fft

from device.core import dsp
from device.core.audio_io import Audio, read_audio
from device.core.errors import (
    ClippedAudioError,
    ConfigError,
    EmptyAudioError,
    InvalidAudioError,
    SilentAudioError,
    TooShortError,
)

FeatureKind = Literal["mfcc", "logmel"]
CMVN_MODES = (True, False, "mean", "recording", "recording-mean")


@dataclass(frozen=True)
class FeatureParams:
    """Every setting that turns samples into model input. Frozen, serialisable, hashable."""

    sample_rate: int = 2000  # model rate; heart sounds and murmurs live below 1 kHz
    band_low_hz: float = 25.0  # removes breathing/motion rumble and DC
    band_high_hz: float = 400.0  # removes hiss and most speech; keeps S1/S2 and murmurs
    filter_order: int = 4
    window_s: float = 5.0  # several heart cycles even at 40 bpm
    hop_s: float = 2.5
    n_fft: int = 256
    hop_length: int = 50  # 25 ms frames at 2 kHz: S1/S2 (~100 ms) span several frames
    n_mels: int = 32
    fmin: float = 20.0
    fmax: float = 500.0
    n_mfcc: int = 16
    kind: FeatureKind = "mfcc"
    top_db: float = 80.0
    # Per-window cepstral mean and variance normalisation: removes a fixed channel (the stethoscope's
    # frequency response, the gain) from the features, which is what lets a model trained on one
    # device's recordings work on another's. The mean does that (a fixed channel is an additive constant
    # per coefficient); "mean" keeps the mean subtraction alone, so how deep the quiet between heart
    # sounds is (what a murmur fills in) survives instead of being scaled to unit variance; "recording"
    # takes the mean and variance over all of a recording's windows instead of each window's own (steadier
    # statistics; a noisy window stays distinguishable from a clean one); "recording-mean" both: one
    # mean per recording, no variance scaling; False: none.
    cmvn: bool | Literal["mean", "recording", "recording-mean"] = True
    silence_rms: float = 1e-4  # RMS of the raw input below this (-80 dBFS) is "no signal"
    max_clipped_fraction: float = 0.05  # more samples than this at the recording's peak: clipped
    version: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate < 500:
            problems.append(f"sample_rate={self.sample_rate}: must be at least 500 Hz")
        if not 0 < self.band_low_hz < self.band_high_hz < self.sample_rate / 2:
            problems.append(
                f"band {self.band_low_hz}-{self.band_high_hz} Hz must satisfy 0 < low < high < "
                f"sample_rate/2 = {self.sample_rate / 2}"
            )
        if not 0 < self.hop_s <= self.window_s:
            problems.append(f"hop_s={self.hop_s} must be > 0 and <= window_s={self.window_s}")
        if self.n_fft > self.window_samples:
            problems.append(f"n_fft={self.n_fft} is longer than one window ({self.window_samples} samples)")
        if self.kind == "mfcc" and not 0 < self.n_mfcc <= self.n_mels:
            problems.append(f"n_mfcc={self.n_mfcc} must be in 1..n_mels={self.n_mels}")
        if self.cmvn not in CMVN_MODES or not isinstance(self.cmvn, bool | str):
            problems.append(f"cmvn={self.cmvn!r} must be one of {', '.join(map(repr, CMVN_MODES))}")
        if self.kind not in ("mfcc", "logmel"):
            problems.append(f"kind={self.kind!r} must be 'mfcc' or 'logmel'")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(f"mel range {self.fmin}-{self.fmax} Hz must lie within 0..{self.sample_rate / 2}")
        if problems:
            raise ConfigError("invalid FeatureParams: " + "; ".join(problems))

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate)

    @property
    def frames_per_window(self) -> int:
        return 1 + self.window_samples // self.hop_length  # librosa framing with center=True

    @property
    def n_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.frames_per_window, self.n_features)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown FeatureParams keys: {', '.join(unknown)}",
                "the model was made by a newer version of stethoscope-edge; upgrade",
            )
        return cls(**data)

    def fingerprint(self) -> str:
        """Short hash of the settings; stored with a model and checked when it is loaded."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Features:
    """A recording after the pipeline."""

    features: np.ndarray  # float32 (n_windows, frames, n_features)
    window_starts_s: np.ndarray  # float64 (n_windows,)
    signal: np.ndarray  # float32, the preprocessed signal at params.sample_rate
    params: FeatureParams
    source_rate: int
    duration_s: float

    @property
    def n_windows(self) -> int:
        return int(self.features.shape[0])


# The sample rates a result can carry (device/core/schemas/result.v*.json): below 500 Hz there is no heart sound.
MIN_SAMPLE_RATE = 500
MAX_SAMPLE_RATE = 384_000
MAX_PEAK = 1000.0  # 60 dB over full scale: a float file may exceed ±1 a little, never by this much


def check_samples(audio: Audio) -> None:
    """Refuse what no analysis can use: no samples, non-numbers, or a rate no result may carry.

    read_audio checks the first two for files; live captures and other callers reach the pipeline
    without it, and a rate of a few hertz otherwise gives a result the contract refuses.
    """
    if audio.samples.size == 0:
        raise EmptyAudioError(f"{audio.source}: no samples", "record again; the capture was empty")
    if not MIN_SAMPLE_RATE <= audio.sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(
            f"{audio.source}: sample rate {audio.sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz",
            "record at 2000-8000 Hz (audio.sample_rate), or re-export the file at such a rate",
        )
    if not np.all(np.isfinite(audio.samples)):
        raise InvalidAudioError(
            f"{audio.source}: contains NaN or infinite samples", "the file is corrupt; re-export or record again"
        )
    peak = float(np.max(np.abs(audio.samples)))
    if peak > MAX_PEAK:  # float files can hold anything; resampling such values overflows to infinity
        raise InvalidAudioError(
            f"{audio.source}: samples reach {peak:.3g}, far beyond full scale (±1): not a recording",
            "re-export it as 16-bit PCM WAV or FLAC",
        )


def raw_rms(samples: np.ndarray) -> float:
    """RMS of the samples about their mean, in float64 (in place in one copy: 8 bytes a sample)."""
    x = samples.astype(np.float64)
    x -= x.mean()
    np.square(x, out=x)
    return float(np.sqrt(x.mean()))


def check_signal(audio: Audio, params: FeatureParams) -> None:
    """Refuse a recording with no signal or one so clipped that its shape is lost."""
    rms = raw_rms(audio.samples)
    if rms < params.silence_rms:
        raise SilentAudioError(
            f"{audio.source}: silent (RMS {20 * np.log10(max(rms, 1e-12)):.0f} dBFS)",
            "check that the stethoscope is on the chest, connected and not muted, then record again",
        )
    magnitude = np.abs(audio.samples)
    peak = float(np.max(magnitude))
    at_peak = float(np.mean(magnitude >= 0.99 * peak))
    if at_peak > params.max_clipped_fraction:
        raise ClippedAudioError(
            f"{audio.source}: heavily clipped ({at_peak:.0%} of samples at the peak level)",
            "lower the input gain or hold the stethoscope more lightly, then record again",
        )


@functools.lru_cache(maxsize=16)
def _bandpass_sos(params: FeatureParams) -> np.ndarray:
    sos = dsp.butter(params.filter_order, (params.band_low_hz, params.band_high_hz), "bandpass", params.sample_rate)
    sos.setflags(write=False)
    return sos


# -- MFCC without librosa ------------------------------------------------------------------------------
# The shipped models were trained on librosa's features: a centred STFT, the Slaney mel filter bank, power
# in dB, a DCT-II. librosa pulls in numba and LLVM (+130 MiB resident on the device, and a first start that
# compiles for 17 s), so the same computations are done here with numpy and scipy.fft, in the same order,
# precision and memory layout, and the features are librosa's bit for bit
# (tests/device/test_features_vs_librosa.py). scipy.fft (+18 MiB resident) stays for the DCT: a numpy DCT
# (a float64 matrix product) moves features by up to 3e-5, scipy's float32 rounding, and no numpy FFT
# rounds as scipy's does.


def _hz_to_mel(hz: float) -> float:
    """Slaney's mel scale (librosa.hz_to_mel with htk=False): linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    if hz < min_log_hz:
        return hz / f_sp
    return float(min_log_hz / f_sp + np.log(np.asarray(hz / min_log_hz)) / (np.log(6.4) / 27.0))


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    hz = f_sp * mels
    above = mels >= min_log_hz / f_sp
    hz[above] = min_log_hz * np.exp(np.log(6.4) / 27.0 * (mels[above] - min_log_hz / f_sp))
    return hz


@functools.lru_cache(maxsize=16)
def mel_basis(params: FeatureParams) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with its defaults: Slaney scale, area-normalised.

    (n_mels, 1 + n_fft // 2) float32, computed in float64 as librosa does. Read-only (it is cached).
    """
    fft_hz = np.fft.rfftfreq(n=params.n_fft, d=1.0 / params.sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.n_mels + 2))
    width = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_hz)
    weights = np.zeros((params.n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(params.n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / width[i], ramps[i + 2] / width[i + 1]))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, np.newaxis]
    weights.setflags(write=False)
    return weights


@dataclass(frozen=True)
class _MelPlan:
    """What window_features computes once per FeatureParams."""

    window: np.ndarray  # float64 (n_fft,): the periodic Hann window of librosa.stft
    bins: slice  # the FFT bins some mel band uses: the others are not computed
    taps: np.ndarray  # intp (n_mels, k): each band's bins, in increasing order, relative to bins.start
    gains: np.ndarray  # float32 (n_mels, k, 1): their weights; 0 past a band's last bin


@functools.lru_cache(maxsize=16)
def _mel_plan(params: FeatureParams) -> _MelPlan:
    basis = mel_basis(params)
    used = [np.flatnonzero(row) for row in basis if np.any(row)]
    lo = min((int(u[0]) for u in used), default=0)
    hi = max((int(u[-1]) + 1 for u in used), default=1)
    k = max((int(u[-1] - u[0]) + 1 for u in used), default=1)
    taps = np.zeros((params.n_mels, k), dtype=np.intp)
    gains = np.zeros((params.n_mels, k, 1), dtype=np.float32)
    for m, row in enumerate(basis):
        if np.any(row):
            span = np.arange(int(np.flatnonzero(row)[0]), hi)[:k]
            taps[m, : len(span)] = span - lo
            gains[m, : len(span), 0] = row[span]
    window = dsp.hann_periodic(params.n_fft)
    return _MelPlan(window=window, bins=slice(lo, hi), taps=taps, gains=gains)


# The STFT runs over this many windows at a time, in buffers kept per thread: a long recording's float64
# frames and complex128 spectra never take more memory than this many windows' worth (0.8 MB each), and the
# buffers are not allocated again for every chunk (fresh pages cost more than the FFT itself).
_STFT_CHUNK = 2
_workspaces = threading.local()


def _workspace(params: FeatureParams, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """This thread's buffers for frames of this leading shape (at most _STFT_CHUNK windows' worth): float64
    frames (*shape, n_fft), complex128 spectra (*shape, n_fft // 2 + 1)."""
    full = (_STFT_CHUNK, params.frames_per_window, params.n_fft)
    if getattr(_workspaces, "shape", None) != full:
        _workspaces.shape = full
        _workspaces.frames = np.empty(full, dtype=np.float64)
        _workspaces.spectrum = np.empty((*full[:2], params.n_fft // 2 + 1), dtype=np.complex128)
    rows = int(np.prod(shape))
    frames = _workspaces.frames.reshape(-1, params.n_fft)[:rows].reshape(*shape, params.n_fft)
    spectrum = _workspaces.spectrum.reshape(-1, params.n_fft // 2 + 1)[:rows].reshape(*shape, -1)
    return frames, spectrum


def _frame_power(frames: np.ndarray, params: FeatureParams, bins: slice) -> np.ndarray:
    """|FFT(window * frame)|**2 of (..., n_fft) float32 frames at these bins: float32 (..., bins).

    librosa's arithmetic: a float64 window times float32 frames, numpy's FFT in float64, stored as
    complex64, then the magnitude (float32) squared. Every frame's numbers depend on its samples alone.
    """
    windowed, spectrum = _workspace(params, frames.shape[:-1])
    np.multiply(_mel_plan(params).window, frames, out=windowed)
    np.fft.rfft(windowed, axis=-1, out=spectrum)
    power = np.abs(spectrum[..., bins].astype(np.complex64))
    np.multiply(power, power, out=power)
    return power


def _power(windows: np.ndarray, params: FeatureParams, bins: slice) -> np.ndarray:
    """|librosa.stft(windows, n_fft, hop_length, center=True)|**2 at these bins: float32, (n, bins, frames).

    The array is a view of a (n, frames, bins) one: each frame's bins are contiguous, as in librosa's.
    """
    n_fft = params.n_fft
    padded = np.pad(windows, [(0, 0), (n_fft // 2, n_fft // 2)])  # centred, librosa's pad_mode="constant"
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, :: params.hop_length]
    return _frame_power(frames, params, bins).transpose(0, 2, 1)


def _mel_bands(power: np.ndarray, axis: int, plan: _MelPlan, out: np.ndarray) -> None:
    """out = the mel bands of ``power`` (its bins along ``axis``), adding each band's weights in bin order:
    a float32 product and a float32 sum, each rounded, as numpy's einsum does (see _mel_power)."""
    np.multiply(plan.gains[:, 0], np.take(power, plan.taps[:, 0], axis=axis), out=out)
    for j in range(1, plan.taps.shape[1]):
        out += plan.gains[:, j] * np.take(power, plan.taps[:, j], axis=axis)


def _mel_power(windows: np.ndarray, params: FeatureParams, out: np.ndarray, single: bool) -> None:
    """The mel spectrogram into out (n, n_mels, frames) float32, exactly as librosa's einsum makes it.

    With several windows, numpy's einsum adds bin by bin in increasing order, a float32 product and a
    float32 sum each rounded. That is done here over each band's few non-zero weights only (adding
    0 * power changes nothing), which is 20 times less work. A single window makes einsum take its
    vectorised dot-product loop instead, whose lanes are the CPU's own: that case (``single``: the whole
    batch is one window) calls einsum itself, on the layout librosa gives it.
    """
    if single:
        out[...] = np.einsum("mf,nft->nmt", mel_basis(params), _power(windows, params, slice(None)))
        return
    plan = _mel_plan(params)
    _mel_bands(_power(windows, params, plan.bins), 1, plan, out)


def _interior_frames(params: FeatureParams) -> tuple[int, int] | None:
    """The frames of a window (first, last + 1) that lie wholly inside it, away from the centring's zero
    padding, when windows one hop apart share them (frame f of a window is frame f + hop / hop_length
    of the window before): None when they do not."""
    hl, n_fft, win = params.hop_length, params.n_fft, params.window_samples
    half = n_fft // 2
    first, end = -(-half // hl), (win - n_fft + half) // hl + 1
    shift = params.hop_samples // hl
    if n_fft % 2 or params.hop_samples % hl or first >= end or shift > end - first:
        return None
    return first, end


def _frames_mel(frames: np.ndarray, params: FeatureParams, out: np.ndarray) -> None:
    """out (n_mels, len(frames)) = the mel power of these (rows, n_fft) frames, as many at a time as the
    workspace holds."""
    plan, chunk = _mel_plan(params), _STFT_CHUNK * params.frames_per_window
    for start in range(0, len(frames), chunk):
        power = _frame_power(frames[start : start + chunk], params, plan.bins)
        _mel_bands(power.T, 0, plan, out[:, start : start + chunk])


def _shared_mel_power(x: np.ndarray, n: int, params: FeatureParams, interior: tuple[int, int], mel: np.ndarray) -> None:
    """_mel_power of the n windows ``frame_windows(x, params)`` into mel, bit for bit, with each STFT frame
    that overlapping windows share computed once (half the frames when windows overlap by half).

    A window's interior frames are frames of x itself; only the few frames at each window's edges, which
    reach into its zero padding, are the window's own. Each frame goes through the same arithmetic
    (_frames_mel: _frame_power, _mel_bands) as in _mel_power, and a frame's numbers depend on its samples alone.
    """
    first, end = interior  # _interior_frames(params)
    hl, n_fft, win, frames = params.hop_length, params.n_fft, params.window_samples, params.frames_per_window
    half, shift = n_fft // 2, params.hop_samples // hl
    # interior: frame g of x starts at sample g * hl - half; window i's frame f is g = i * shift + f
    count = (n - 1) * shift + end - first
    signal_frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[first * hl - half :: hl][:count]
    shared = np.empty((params.n_mels, count), dtype=np.float32)
    _frames_mel(signal_frames, params, shared)
    per_window = np.lib.stride_tricks.sliding_window_view(shared, end - first, axis=1)[:, ::shift][:, :n]
    mel[:, :, first:end] = per_window.transpose(1, 0, 2)
    # the edge frames: each window's first and last samples beside the centring's zeros
    head_len, tail_start = (first - 1) * hl + n_fft, end * hl
    tail_len = (frames - 1) * hl + n_fft - tail_start
    edges = np.zeros((n, head_len + tail_len), dtype=np.float32)
    edges[:, half:head_len] = x[np.arange(n)[:, None] * params.hop_samples + np.arange(head_len - half)]
    tail_data = min(tail_len, win + half - tail_start)
    edges[:, head_len : head_len + tail_data] = x[
        np.arange(n)[:, None] * params.hop_samples + np.arange(tail_start - half, tail_start - half + tail_data)
    ]
    head_frames = np.lib.stride_tricks.sliding_window_view(edges[:, :head_len], n_fft, axis=1)[:, ::hl]
    tail_frames = np.lib.stride_tricks.sliding_window_view(edges[:, head_len:], n_fft, axis=1)[:, ::hl]
    n_edge = first + frames - end
    edge_frames = np.concatenate([head_frames, tail_frames], axis=1).reshape(n * n_edge, n_fft)
    edge_mel = np.empty((params.n_mels, n * n_edge), dtype=np.float32)
    _frames_mel(edge_frames, params, edge_mel)
    by_window = edge_mel.reshape(params.n_mels, n, n_edge).transpose(1, 0, 2)
    mel[:, :, :first] = by_window[:, :, :first]
    mel[:, :, end:] = by_window[:, :, first:]


def _mel_buffer(params: FeatureParams, n: int) -> np.ndarray:
    """(n, n_mels, frames) float32, laid out in memory as librosa's einsum lays it out (band, frame, window:
    the window varies fastest), because the DCT and the means of CMVN add in memory order, and another
    layout changes last bits."""
    return np.empty((params.n_mels, params.frames_per_window, n), dtype=np.float32).transpose(2, 0, 1)


def _log_mel(windows: np.ndarray, params: FeatureParams) -> np.ndarray:
    """(n, window_samples) float32 -> (n, n_mels, frames) float32 power in dB, top_db below each window's max."""
    n = len(windows)
    mel = _mel_buffer(params, n)
    for start in range(0, n, _STFT_CHUNK):
        _mel_power(windows[start : start + _STFT_CHUNK], params, mel[start : start + _STFT_CHUNK], single=n == 1)
    return _to_db(mel, params)


def _to_db(mel: np.ndarray, params: FeatureParams) -> np.ndarray:
    """The mel power in dB, in place, top_db below each window's max."""
    np.maximum(mel, 1e-10, out=mel)
    np.log10(mel, out=mel)
    mel *= 10.0
    # top_db per window (librosa's power_to_db would take the max over the whole batch). Each window's
    # max on its own: numpy reduces a (n, bands, frames) view whose windows vary fastest 10x slower.
    peaks = np.array([window.max() for window in mel], dtype=np.float32).reshape(-1, 1, 1)
    np.maximum(mel, peaks - params.top_db, out=mel)
    return mel


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling by the exact rational ratio (deterministic, no phase drift)."""
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    g = gcd(int(source_rate), int(target_rate))
    out = dsp.resample_poly(samples.astype(np.float64), target_rate // g, source_rate // g)
    return np.asarray(out, dtype=np.float32)


def preprocess(samples: np.ndarray, source_rate: int, params: FeatureParams) -> np.ndarray:
    """Resample to the model rate, band-pass (zero phase) and scale to unit RMS."""
    x = resample(samples, source_rate, params.sample_rate).astype(np.float64)
    x -= x.mean()
    sos = _bandpass_sos(params)
    if len(x) > dsp.sosfiltfilt_padlen(sos):
        x = dsp.sosfiltfilt(sos, x)
    rms = float(np.sqrt(np.mean(x * x)))
    if rms > 0:
        x /= rms  # x is this function's own copy
    return np.asarray(x, dtype=np.float32)


def frame_windows(x: np.ndarray, params: FeatureParams, source: str = "recording") -> np.ndarray:
    """Split into (n_windows, window_samples) with the params' hop; the tail shorter than a hop is dropped."""
    n, win, hop = len(x), params.window_samples, params.hop_samples
    if n < win:
        raise TooShortError(
            f"{source}: {n / params.sample_rate:.2f} s is shorter than one {params.window_s:g} s analysis window",
            f"record at least {params.window_s:g} s",
        )
    count = 1 + (n - win) // hop
    return np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:count].copy()


MIN_DURATION_S = 2.0  # two cycles even at 60 bpm: the shortest recording that gets an answer


def analysis_windows(x: np.ndarray, params: FeatureParams, source: str = "recording") -> np.ndarray:
    """Windows for an answer: as ``frame_windows``, except that a recording of at least MIN_DURATION_S
    but under one window is repeated end to end to fill one. The model sees the same heart sounds at the
    same rate (a tile of whole seconds, not silence it never saw in training); longer recordings are
    windowed exactly as before."""
    n, win = len(x), params.window_samples
    if n < MIN_DURATION_S * params.sample_rate:
        raise TooShortError(
            f"{source}: {n / params.sample_rate:.2f} s is shorter than the {MIN_DURATION_S:g} s minimum",
            f"record at least {MIN_DURATION_S:g} s; {params.window_s:g} s or more gives a steadier answer",
        )
    if n < win:
        x = np.resize(x, win)  # repeats x from its start
    return frame_windows(x, params, source)


def window_features(windows: np.ndarray, params: FeatureParams) -> np.ndarray:
    """(n, window_samples) -> (n, frames, n_features) float32: MFCC or log-mel, then CMVN per window."""
    windows = np.atleast_2d(windows).astype(np.float32, copy=False)
    return _features(_log_mel(windows, params), params)


def signal_features(x: np.ndarray, params: FeatureParams, source: str = "recording") -> np.ndarray:
    """``window_features(analysis_windows(x, params, source), params)``, bit for bit, in about half the time
    when the windows overlap: the STFT frames they share are computed once (_shared_mel_power)."""
    interior = _interior_frames(params)
    count = 1 + (len(x) - params.window_samples) // params.hop_samples  # frame_windows' count
    if len(x) < params.window_samples or count == 1 or interior is None:
        return window_features(analysis_windows(x, params, source), params)
    mel = _mel_buffer(params, count)
    _shared_mel_power(np.asarray(x, dtype=np.float32), count, params, interior, mel)
    return _features(_to_db(mel, params), params)


def _features(log_mel: np.ndarray, params: FeatureParams) -> np.ndarray:
    if params.kind == "mfcc":  # librosa.feature.mfcc of a given spectrogram: its DCT-II, as a matrix product
        feats = scipy.fft.dct(log_mel, axis=-2, type=2, norm="ortho")[..., : params.n_mfcc, :]
    else:
        feats = log_mel
    feats = np.transpose(feats, (0, 2, 1))  # (n, frames, coefficients): time-major for the RNN
    return np.ascontiguousarray(normalise(feats, params), dtype=np.float32)


CMN_SCALE_DB = 10.0  # mean-only normalisation: a fixed scale keeps the inputs near unit size for training


def normalise(feats: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Normalisation over time of one recording's (windows, frames, coefficients) features, as
    ``params.cmvn`` says: per window, or over the whole recording ("recording", "recording-mean")."""
    if params.cmvn is False:
        return feats
    axes = (0, 1) if params.cmvn in ("recording", "recording-mean") else 1
    feats = feats - feats.mean(axis=axes, keepdims=True)
    if params.cmvn in ("mean", "recording-mean"):
        scaled: np.ndarray = feats / CMN_SCALE_DB
        return scaled
    normalised: np.ndarray = feats / (feats.std(axis=axes, keepdims=True) + 1e-5)
    return normalised


def extract(audio: Audio, params: FeatureParams, check: bool = True) -> Features:
    """The whole pipeline on decoded audio."""
    if check:
        check_signal(audio, params)
    x = preprocess(audio.samples, audio.sample_rate, params)
    windows = frame_windows(x, params, audio.source)
    starts = np.arange(len(windows), dtype=np.float64) * params.hop_s
    return Features(
        features=window_features(windows, params),
        window_starts_s=starts,
        signal=x,
        params=params,
        source_rate=audio.sample_rate,
        duration_s=audio.duration_s,
    )


def extract_file(source: str | Path | bytes | BinaryIO, params: FeatureParams, check: bool = True) -> Features:
    """Read a WAV/FLAC and run the pipeline; raises the AudioError subclasses."""
    return extract(read_audio(source), params, check=check)
