"""The few scipy.signal functions the device uses, in numpy only.

``import scipy.signal`` loads scipy's linalg, special, stats, optimize, sparse, spatial, interpolate and
fft: +54 MiB resident on the device for a band-pass design, a zero-phase filter, a resampler, an
autocorrelation, a peak finder and a window. Each function here follows scipy's own formulas and
conventions (the same Butterworth poles and second-order-section pairing, sosfiltfilt's odd extension and
initial conditions, resample_poly's Kaiser FIR and alignment, find_peaks' plateaus, distance and
prominence rules), so the results agree with scipy's to rounding (tests/device/test_dsp.py compares them
on real recordings). The MFCC's DCT still comes from scipy.fft, which loads only scipy.special besides
(device/features.py says why). scipy.signal stays the reference for training: converter/ may import it,
device/ may not.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

# -- Butterworth design ------------------------------------------------------------------------------------


def butter(
    order: int, cutoff: float | tuple[float, float], btype: Literal["lowpass", "bandpass"], fs: float
) -> np.ndarray:
    """scipy.signal.butter(order, cutoff, btype, fs=fs, output="sos"): (n_sections, 6) float64.

    Analog prototype, pre-warped band edges, low-pass to low-pass/band-pass, bilinear transform and
    scipy's "nearest" pairing of poles and zeros into sections, step for step.
    """
    wn = 2.0 * np.atleast_1d(np.asarray(cutoff, dtype=np.float64)) / fs  # relative to Nyquist
    if btype == "bandpass" and not (wn.shape == (2,) and 0 < wn[0] < wn[1] < 1):
        raise ValueError(f"band-pass edges {cutoff} must satisfy 0 < low < high < fs/2")
    if btype == "lowpass" and not (wn.shape == (1,) and 0 < wn[0] < 1):
        raise ValueError(f"low-pass cutoff {cutoff} must lie in (0, fs/2)")
    # buttap: poles on the unit circle's left half, no zeros, gain 1
    m = np.arange(-order + 1, order, 2, dtype=np.float64)
    p = -np.exp(1j * np.pi * m / (2 * order))
    z = np.zeros(0, dtype=np.complex128)
    k = 1.0
    warped = 2 * 2.0 * np.tan(np.pi * wn / 2.0)  # iirfilter works at fs = 2 after normalising
    if btype == "lowpass":
        wo = float(warped[0])
        degree = len(p) - len(z)
        z, p, k = wo * z, wo * p, k * wo**degree
    else:
        bw = float(warped[1] - warped[0])
        wo = float(np.sqrt(warped[0] * warped[1]))
        degree = len(p) - len(z)
        z_lp = (z * bw / 2).astype(np.complex128)
        p_lp = (p * bw / 2).astype(np.complex128)
        z = np.concatenate((z_lp + np.sqrt(z_lp**2 - wo**2), z_lp - np.sqrt(z_lp**2 - wo**2), np.zeros(degree)))
        p = np.concatenate((p_lp + np.sqrt(p_lp**2 - wo**2), p_lp - np.sqrt(p_lp**2 - wo**2)))
        k = k * bw**degree
    # bilinear_zpk at fs = 2
    fs2 = 4.0
    degree = len(p) - len(z)
    k = float(k * np.real(np.prod(fs2 - z) / np.prod(fs2 - p)))
    z = np.concatenate(((fs2 + z) / (fs2 - z), -np.ones(degree)))
    p = (fs2 + p) / (fs2 - p)
    return _zpk2sos(z, p, k)


def _cplxreal(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's _cplxreal: the upper halves of the conjugate pairs (by real part) and the real values."""
    tol = 100 * np.finfo(np.float64).eps
    z = z[np.lexsort((abs(z.imag), z.real))]
    real = abs(z.imag) <= tol * abs(z)
    zr = z[real].real
    zc = z[~real]
    upper, lower = zc[zc.imag > 0], zc[zc.imag < 0]
    if len(upper) != len(lower) or np.any(abs(upper - lower.conj()) > tol * abs(lower)):
        raise ValueError("poles/zeros without matching conjugates")  # not for a Butterworth design
    return (upper + lower.conj()) / 2, zr


def _nearest(values: np.ndarray, to: complex, which: Literal["any", "real"]) -> int:
    order = np.argsort(np.abs(values - to))
    if which == "any":
        return int(order[0])
    return int(order[np.flatnonzero(np.isreal(values[order]))[0]])


def _zpk2sos(z: np.ndarray, p: np.ndarray, k: float) -> np.ndarray:
    """scipy.signal.zpk2sos(z, p, k, pairing="nearest") for what butter gives: poles in conjugate pairs
    (even low-pass orders, any band-pass order) and real zeros. The section with the poles nearest the
    unit circle comes last.
    """
    n_sections = (max(len(p), len(z)) + 1) // 2
    zc, zr = _cplxreal(z)
    pc, pr = _cplxreal(p)
    if len(pr) or len(zc) or len(z) != len(p):
        raise ValueError("only designs with complex-pair poles and as many real zeros are supported")
    poles, zeros = pc, zr
    sos = np.zeros((n_sections, 6))
    for si in range(n_sections - 1, -1, -1):
        i = int(np.argmin(np.abs(1 - np.abs(poles))))
        p1 = poles[i]
        poles = np.delete(poles, i)
        j = _nearest(zeros, p1, "any")
        z1 = zeros[j]
        zeros = np.delete(zeros, j)
        j = _nearest(zeros, p1, "real")
        z2 = zeros[j]
        zeros = np.delete(zeros, j)
        sos[si, :3] = np.real(np.poly([z1, z2]))
        sos[si, 3:] = np.real(np.poly([p1, p1.conjugate()]))
    sos[0, :3] *= k
    return sos


# -- Zero-phase IIR filtering ------------------------------------------------------------------------------

# A second-order section is a linear recurrence on a 2-sample state, which numpy cannot run sample by
# sample at any useful speed. The signal is cut into blocks of _BLOCK samples: inside a block, the response
# to the block's input from a zero state is a short FIR (one matrix product for all blocks), and the
# response to the state the block starts in is the section's free response. The states at the block
# starts follow a recurrence of their own, S[j+1] = A^L S[j] + E[j], which a log-depth doubling scan solves
# for all blocks at once. Exact apart from rounding (about 1e-15 of the signal).
_BLOCK = 32


@functools.lru_cache(maxsize=32)
def _section_plan(coefs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For one section (b0, b1, b2, a1, a2) in scipy's transposed direct form II (state z; y = b0 x + z0):
    the in-block FIR as a (L, L) matrix, the free response (2, L), the input-to-end-state map (L, 2) and
    the state transition over a block, A^L (2, 2).
    """
    b0, b1, b2, a1, a2 = coefs
    a = np.array([[-a1, 1.0], [-a2, 0.0]])
    b = np.array([b1 - a1 * b0, b2 - a2 * b0])
    powers = np.empty((_BLOCK + 1, 2, 2))  # A^0 .. A^L
    powers[0] = np.eye(2)
    for i in range(1, _BLOCK + 1):
        powers[i] = a @ powers[i - 1]
    impulse = np.empty(_BLOCK)
    impulse[0] = b0
    impulse[1:] = (powers[: _BLOCK - 1] @ b)[:, 0]  # C A^(m-1) B, C = [1, 0]
    lags = np.subtract.outer(np.arange(_BLOCK), np.arange(_BLOCK))
    fir = np.where(lags >= 0, impulse[np.clip(lags, 0, None)], 0.0)  # fir[n, k]: input k to output n
    free = powers[:_BLOCK, 0, :].T.copy()  # (2, L): C A^n
    to_state = (powers[_BLOCK - 1 :: -1][:_BLOCK] @ b).copy()  # (L, 2): A^(L-1-k) B
    return np.ascontiguousarray(fir.T), free, to_state, powers[_BLOCK].copy()


def _section(coefs: tuple[float, ...], x: np.ndarray, z0: np.ndarray) -> np.ndarray:
    """One second-order section over x (float64, 1-D) from the state z0, as scipy.signal.sosfilt runs it."""
    fir_t, free, to_state, step = _section_plan(coefs)
    n = len(x)
    nb = -(-n // _BLOCK)
    blocks = np.zeros((nb, _BLOCK))
    blocks.reshape(-1)[:n] = x
    states = np.empty((nb, 2))  # the state each block starts in
    states[0] = z0
    states[1:] = blocks[:-1] @ to_state
    # Inclusive scan of S[j] = A^L S[j-1] + E[j]: after the round with stride d, states[j] holds the
    # contributions of the d... 2d-1 blocks before it as well.
    power, stride = step, 1
    while stride < nb:
        states[stride:] = states[stride:] + states[:-stride] @ power.T
        power = power @ power
        stride *= 2
    y = blocks @ fir_t
    y += states @ free
    return y.reshape(-1)[:n]


def sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """scipy.signal.sosfilt(sos, x, zi=zi)[0] for a 1-D float64 x (zi: (n_sections, 2))."""
    y = np.asarray(x, dtype=np.float64)
    for row, z0 in zip(sos, zi, strict=True):
        b0, b1, b2, _a0, a1, a2 = (float(v) / float(row[3]) for v in row)
        y = _section((b0, b1, b2, a1, a2), y, z0)
    return y


def sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """scipy.signal.sosfilt_zi: each section's steady state for a unit step (lfilter_zi, scaled)."""
    zi = np.empty((len(sos), 2))
    scale = 1.0
    for i, section in enumerate(sos):
        b, a = section[:3] / section[3], section[3:] / section[3]
        # lfilter_zi: solve (I - companion(a).T) zi = b[1:] - a[1:] b[0]
        i_minus_a = np.array([[1.0 + a[1], -1.0], [a[2], 1.0]])
        zi[i] = scale * np.linalg.solve(i_minus_a, b[1:] - a[1:] * b[0])
        scale *= np.sum(b) / np.sum(a)
    return zi


def sosfiltfilt_padlen(sos: np.ndarray) -> int:
    """The odd extension sosfiltfilt adds at each end; x must be longer than this."""
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * ntaps


def sosfiltfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """scipy.signal.sosfiltfilt(sos, x) for 1-D x: forward, backward, odd extension of sosfiltfilt_padlen."""
    x = np.asarray(x, dtype=np.float64)
    edge = sosfiltfilt_padlen(sos)
    if len(x) <= edge:
        raise ValueError(f"the signal ({len(x)} samples) must be longer than the padding ({edge})")
    ext = np.concatenate((2 * x[0] - x[edge:0:-1], x, 2 * x[-1] - x[-2 : -(edge + 2) : -1]))
    zi = sosfilt_zi(sos)
    y = sosfilt(sos, ext, zi * ext[0])
    y = sosfilt(sos, y[::-1], zi * y[-1])[::-1]
    return np.ascontiguousarray(y[edge:-edge])


# -- Polyphase resampling ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _resample_filter(up: int, down: int) -> tuple[np.ndarray, int, int]:
    """resample_poly's FIR: firwin(20 max(up, down) + 1, 1 / max(up, down), window=("kaiser", 5.0)) times
    up, zero-padded in front so that output samples fall on the filter's centre; and the outputs of the
    full upfirdn to drop in front.
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    numtaps = 2 * half_len + 1
    cutoff = 1.0 / max_rate
    m = np.arange(0, numtaps, dtype=np.float64) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m)
    # scipy.signal.windows.kaiser(numtaps, 5.0, sym=True)
    alpha = (numtaps - 1) / 2.0
    h *= np.i0(5.0 * np.sqrt(1 - ((np.arange(numtaps, dtype=np.float64) - alpha) / alpha) ** 2.0)) / np.i0(5.0)
    h /= np.sum(h * np.cos(np.pi * m * 0.0))
    h *= up
    pre_pad = down - half_len % down
    pre_remove = (half_len + pre_pad) // down
    h = np.concatenate((np.zeros(pre_pad), h))
    h.setflags(write=False)
    return h, pre_remove, half_len


_RESAMPLE_CHUNK = 2048  # output samples per matrix product: bounds the gathered input to ~2048 x taps/up


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly(x, up, down) for 1-D float64 x, default window and zero padding.

    Output k is upfirdn's sample pre_remove + k: the zero-stuffed input (x at multiples of ``up``)
    convolved with h at position t = (pre_remove + k) down. Only the taps of t's phase (t mod up) meet
    input samples, so each output is a dot product of len(h) / up taps with consecutive input samples.
    """
    g = np.gcd(up, down)
    up, down = up // g, down // g
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.copy()
    n_in = len(x)
    n_out = -(-n_in * up // down)
    h, pre_remove, _ = _resample_filter(up, down)
    taps = -(-len(h) // up)  # taps per phase (the last ones zero where h runs out)
    phases = np.zeros((up, taps))
    for ph in range(up):
        sub = h[ph::up]
        phases[ph, taps - len(sub) :] = sub[::-1]  # tap r meets x[i0 - r]: reversed, it ends at x[i0]
    # Output k uses x[i0 - taps + 1 .. i0] (zeros outside x), i0 = t // up.
    padded = np.concatenate((np.zeros(taps - 1), x, np.zeros(taps)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)  # windows[i0] ends at x[i0]
    t = (pre_remove + np.arange(n_out, dtype=np.int64)) * down
    i0 = t // up
    phase = t % up
    y = np.empty(n_out)
    last = len(windows) - 1
    for start in range(0, n_out, _RESAMPLE_CHUNK):
        sl = slice(start, min(start + _RESAMPLE_CHUNK, n_out))
        rows = windows[np.minimum(i0[sl], last)]
        y[sl] = np.einsum("ij,ij->i", rows, phases[phase[sl]])
    return y


# -- Autocorrelation, peaks --------------------------------------------------------------------------------


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Lags 0..n-1 of scipy.signal.correlate(x, x, mode="full", method="fft"), through numpy's FFT."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    nfft = 1 << max(0, (2 * n - 1 - 1).bit_length())
    spectrum = np.fft.rfft(x, nfft)
    return np.fft.irfft(spectrum * spectrum.conj(), nfft)[:n]


def _local_maxima(x: np.ndarray) -> np.ndarray:
    """scipy's _local_maxima_1d: samples (the middle of a flat top, rounded down) higher than both
    neighbours; the first and last samples never are.
    """
    n = len(x)
    if n < 3:
        return np.zeros(0, dtype=np.intp)
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))  # runs of equal values
    ends = np.append(starts[1:], n) - 1
    values = x[starts]
    inner = np.arange(1, len(starts) - 1)
    is_peak = (values[inner - 1] < values[inner]) & (values[inner + 1] < values[inner])
    peaks = inner[is_peak]
    return np.asarray((starts[peaks] + ends[peaks]) // 2, dtype=np.intp)


def _select_by_distance(peaks: np.ndarray, priority: np.ndarray, distance: float) -> np.ndarray:
    """scipy's _select_by_peak_distance: from the highest down, a kept peak removes its close neighbours."""
    dist = int(np.ceil(distance))
    keep = np.ones(len(peaks), dtype=bool)
    order = np.argsort(priority)
    pos = peaks.tolist()
    for i in range(len(peaks) - 1, -1, -1):
        j = int(order[i])
        if not keep[j]:
            continue
        k = j - 1
        while k >= 0 and pos[j] - pos[k] < dist:
            keep[k] = False
            k -= 1
        k = j + 1
        while k < len(pos) and pos[k] - pos[j] < dist:
            keep[k] = False
            k += 1
    return keep


def _base_min(x: np.ndarray, peak: int, step: int) -> float:
    """The lowest sample between the peak and the first higher one (or the end) in direction ``step``."""
    height = x[peak]
    lowest = height
    i, span = peak, 16
    n = len(x)
    while True:
        if step < 0:
            lo = max(0, i - span)
            seg = x[lo:i][::-1]
        else:
            hi = min(n, i + 1 + span)
            seg = x[i + 1 : hi]
        if len(seg) == 0:
            return float(lowest)
        higher = np.flatnonzero(seg > height)
        stop = int(higher[0]) if len(higher) else len(seg)
        if stop:
            lowest = min(lowest, float(seg[:stop].min()))
        if len(higher):
            return float(lowest)
        i = i - len(seg) if step < 0 else i + len(seg)
        span *= 4


def peak_prominences(x: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """scipy.signal.peak_prominences(x, peaks)[0] with no window: the peak's height over the higher of
    the lowest points reached on each side before a higher sample or the signal's end.
    """
    out = np.empty(len(peaks))
    for n, p in enumerate(peaks.tolist()):
        out[n] = x[p] - max(_base_min(x, p, -1), _base_min(x, p, 1))
    return out


def find_peaks(
    x: np.ndarray, distance: float | None = None, prominence: float | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """scipy.signal.find_peaks(x, distance=..., prominence=...) -> (peaks, prominences or None).

    As in scipy, the distance rule runs first and prominences are those of the peaks it keeps; a minimum
    ``prominence`` then drops the peaks below it.
    """
    x = np.asarray(x, dtype=np.float64)
    peaks = _local_maxima(x)
    if distance is not None and len(peaks):
        if distance < 1:
            raise ValueError("distance must be >= 1")
        peaks = peaks[_select_by_distance(peaks, x[peaks], distance)]
    if prominence is None:
        return peaks, None
    prominences = peak_prominences(x, peaks)
    keep = prominences >= prominence
    return peaks[keep], prominences[keep]


# -- Window ------------------------------------------------------------------------------------------------


def hann_periodic(n: int) -> np.ndarray:
    """scipy.signal.get_window("hann", n, fftbins=True), computed as scipy does (general_cosine)."""
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    return w[:n]
