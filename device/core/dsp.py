"""The few scipy.signal functions the device uses, in numpy only.

``import scipy.signal`` loads scipy's linalg, special, stats, optimize, sparse, spatial, interpolate and
fft: +54 MiB resident on the device for a band-pass design, a zero-phase filter, a resampler, an
autocorrelation, a peak finder and a window. Each function here follows scipy's own formulas and
conventions (the same Butterworth poles and second-order-section pairing, sosfiltfilt's odd extension and
initial conditions, resample_poly's Kaiser FIR and alignment, find_peaks' plateaus, distance and
prominence rules), so the results agree with scipy's to rounding (tests/device/test_dsp.py compares them
on real recordings). The MFCC's DCT still comes from scipy.fft, which loads only scipy.special besides
(device/core/features.py says why). scipy.signal stays the reference for training: converter/ may import it,
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


def _cplxreal(z: np.ndarray) -> np.ndarray:
    """scipy's _cplxreal, concatenated: the upper halves of the conjugate pairs (by real part), then the
    real values.
    """
    if z.size == 0:
        return z
    tol = 100 * np.finfo(np.float64).eps
    z = z[np.lexsort((abs(z.imag), z.real))]
    real = abs(z.imag) <= tol * abs(z)
    zr = z[real].real
    zc = z[~real]
    upper, lower = zc[zc.imag > 0], zc[zc.imag < 0]
    if len(upper) != len(lower) or np.any(abs(upper - lower.conj()) > tol * abs(lower)):
        raise ValueError("poles/zeros without matching conjugates")  # not for a Butterworth design
    return np.concatenate(((upper + lower.conj()) / 2, zr))


def _nearest(values: np.ndarray, to: complex, which: Literal["any", "real", "complex"]) -> int:
    """scipy's _nearest_real_complex_idx: the index of the value nearest ``to`` (of that kind)."""
    order = np.argsort(np.abs(values - to))
    if which == "any":
        return int(order[0])
    real = np.isreal(values[order])
    return int(order[np.flatnonzero(real if which == "real" else ~real)[0]])


def _sos_row(zeros: list[complex], poles: list[complex]) -> np.ndarray:
    """scipy's _single_zpksos with gain 1: one row from up to two zeros and poles (real polynomials)."""
    row = np.zeros(6)
    b = np.real(np.atleast_1d(np.poly(zeros)))
    a = np.real(np.atleast_1d(np.poly(poles)))
    row[3 - len(b) : 3] = b
    row[6 - len(a) : 6] = a
    return row


def _take(values: np.ndarray, i: int) -> tuple[complex, np.ndarray]:
    return values[i], np.delete(values, i)


def _zpk2sos(z: np.ndarray, p: np.ndarray, k: float) -> np.ndarray:
    """scipy.signal.zpk2sos(z, p, k, pairing="nearest") for a digital filter, step for step: poles from
    the unit circle inwards, each with its conjugate (or the next real pole) and the nearest zeros; the
    section with the poles nearest the circle comes last.
    """
    if len(z) == len(p) == 0:
        return np.array([[k, 0.0, 0.0, 1.0, 0.0, 0.0]])
    p = np.concatenate((p, np.zeros(max(len(z) - len(p), 0))))
    z = np.concatenate((z, np.zeros(max(len(p) - len(z), 0))))
    n_sections = (max(len(p), len(z)) + 1) // 2
    if len(p) % 2 == 1:
        p = np.concatenate((p, [0.0]))
        z = np.concatenate((z, [0.0]))
    z = _cplxreal(z)
    p = _cplxreal(p)
    sos = np.zeros((n_sections, 6))
    for si in range(n_sections - 1, -1, -1):
        p1, p = _take(p, int(np.argmin(np.abs(1 - np.abs(p)))))
        if np.isreal(p1) and np.isreal(p).sum() == 0:
            z1, z = _take(z, _nearest(z, p1, "real"))
            sos[si] = _sos_row([z1, 0], [p1, 0])
        elif len(p) + 1 == len(z) and not np.isreal(p1) and np.isreal(p).sum() == 1 and np.isreal(z).sum() == 1:
            z1, z = _take(z, _nearest(z, p1, "complex"))
            sos[si] = _sos_row([z1, np.conj(z1)], [p1, np.conj(p1)])
        else:
            if np.isreal(p1):
                real = np.flatnonzero(np.isreal(p))
                p2, p = _take(p, int(real[np.argmin(np.abs(1 - np.abs(p[real])))]))
            else:
                p2 = np.conj(p1)
            if len(z) == 0:
                sos[si] = _sos_row([], [p1, p2])
                continue
            z1, z = _take(z, _nearest(z, p1, "any"))
            if not np.isreal(z1):
                sos[si] = _sos_row([z1, np.conj(z1)], [p1, p2])
            elif len(z):
                z2, z = _take(z, _nearest(z, p1, "real"))
                sos[si] = _sos_row([z1, z2], [p1, p2])
            else:
                sos[si] = _sos_row([z1], [p1, p2])
    sos[0, :3] *= k
    return sos


# -- Zero-phase IIR filtering ------------------------------------------------------------------------------

# A cascade of second-order sections is a linear recurrence on a small state (two values per section),
# which numpy cannot run sample by sample at any useful speed. The signal is cut into blocks of _BLOCK
# samples: inside a block, the response to the block's input from a zero state is a short FIR (one matrix
# product for all blocks), and the response to the state the block starts in is the cascade's free
# response. The states at the block starts follow a recurrence of their own, S[j+1] = A^L S[j] + E[j],
# which a log-depth doubling scan solves for all blocks at once. Exact apart from rounding (about 1e-13 of
# the signal, against scipy's sample-by-sample loop).
_BLOCK = 32

# OpenBLAS splits a matrix product over threads once rows x inner x columns passes 2^18; for products this
# thin, waking them costs more than the work (3 ms instead of 0.1 ms for a 35 s recording's block FIR on
# two busy cores). Products are therefore made in row chunks below that size, on the calling thread.
_BLAS_ONE_THREAD = 1 << 17


def _matmul(a: np.ndarray, b: np.ndarray, add_to: np.ndarray | None = None) -> np.ndarray:
    """a @ b for a (rows, k) and a small b (k, m), in chunks of rows that OpenBLAS keeps on one thread; or
    ``add_to += a @ b`` through a chunk-sized buffer (no product of the whole length is made). The chunks
    run from the last, so add_to may be a later part of a itself (the scan in sosfilt): each chunk reads
    rows that no chunk has changed yet."""
    rows = max(1, _BLAS_ONE_THREAD // (b.shape[0] * b.shape[1]))
    if add_to is None:
        out = np.empty((a.shape[0], b.shape[1]))
        for start in range(0, a.shape[0], rows):
            np.matmul(a[start : start + rows], b, out=out[start : start + rows])
        return out
    product = np.empty((min(rows, a.shape[0]), b.shape[1]))
    for start in reversed(range(0, a.shape[0], rows)):
        chunk = product[: len(a[start : start + rows])]
        np.matmul(a[start : start + rows], b, out=chunk)
        add_to[start : start + rows] += chunk
    return add_to


def _cascade_step(sos: np.ndarray, z: np.ndarray, u: float) -> tuple[np.ndarray, float]:
    """One sample through the sections as scipy's sosfilt runs them (transposed direct form II, a0 = 1):
    the next state (2 per section) and the output.
    """
    nxt = np.empty_like(z)
    for i, (b0, b1, b2, _a0, a1, a2) in enumerate(sos):
        y = b0 * u + z[2 * i]
        nxt[2 * i] = b1 * u - a1 * y + z[2 * i + 1]
        nxt[2 * i + 1] = b2 * u - a2 * y
        u = y
    return nxt, u


@functools.lru_cache(maxsize=16)
def _plan(key: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the cascade ``key`` (the SOS rows, flattened, normalised to a0 = 1) in state-space form
    (z' = A z + B u, y = C z + D u): the in-block FIR as an (L, L) matrix (input k to output n, transposed),
    the free response (d, L), the input-to-end-state map (L, d) and the transition over a block, A^L (d, d).
    """
    sos = np.asarray(key).reshape(-1, 6)
    d = 2 * len(sos)
    a = np.empty((d, d))
    c = np.empty(d)
    for k in range(d):  # the columns of A and C: the response to each unit state, no input
        a[:, k], c[k] = _cascade_step(sos, np.eye(d)[k], 0.0)
    b, dd = _cascade_step(sos, np.zeros(d), 1.0)
    powers = np.empty((_BLOCK + 1, d, d))  # A^0 .. A^L
    powers[0] = np.eye(d)
    for i in range(1, _BLOCK + 1):
        powers[i] = a @ powers[i - 1]
    impulse = np.empty(_BLOCK)
    impulse[0] = dd
    impulse[1:] = powers[: _BLOCK - 1] @ b @ c  # C A^(m-1) B
    lags = np.subtract.outer(np.arange(_BLOCK), np.arange(_BLOCK))
    fir = np.where(lags >= 0, impulse[np.clip(lags, 0, None)], 0.0)  # fir[n, k]: input k to output n
    free = np.ascontiguousarray((c @ powers[:_BLOCK]).T)  # (d, L): C A^n
    to_state = np.ascontiguousarray(powers[_BLOCK - 1 :: -1] @ b)  # (L, d): A^(L-1-k) B
    return np.ascontiguousarray(fir.T), free, to_state, powers[_BLOCK].copy()


@functools.lru_cache(maxsize=64)
def _doublings(step: bytes, d: int, rounds: int) -> tuple[np.ndarray, ...]:
    """A^L, A^2L, A^4L ... (``rounds`` of them) for the scan in sosfilt, each squared from the one before
    as the scan did for every call; made once per filter and length class."""
    power = np.frombuffer(step).reshape(d, d).copy()
    out = []
    for _ in range(rounds):
        out.append(power)
        power = power @ power
    return tuple(out)


def sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """scipy.signal.sosfilt(sos, x, zi=zi)[0] for a 1-D float64 x (zi: (n_sections, 2))."""
    sos = np.asarray(sos, dtype=np.float64)
    fir_t, free, to_state, step = _plan(tuple((sos / sos[:, 3:4]).ravel().tolist()))
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return x.copy()
    nb = -(-n // _BLOCK)
    blocks = np.zeros((nb, _BLOCK))
    blocks.reshape(-1)[:n] = x
    states = np.empty((nb, len(step)))  # the state each block starts in
    states[0] = np.asarray(zi, dtype=np.float64).ravel()
    states[1:] = _matmul(blocks[:-1], to_state)
    # Inclusive scan of S[j] = A^L S[j-1] + E[j]: after the round with stride d, states[j] holds the
    # contributions of the 2d - 1 blocks before it as well.
    stride = 1
    for power in _doublings(step.tobytes(), step.shape[0], (nb - 1).bit_length()):
        _matmul(states[:-stride], power.T, add_to=states[stride:])
        stride *= 2
    y = _matmul(states, free, add_to=_matmul(blocks, fir_t))
    return y.reshape(-1)[:n]


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


@functools.lru_cache(maxsize=16)
def _steady_state(sos: bytes, sections: int) -> np.ndarray:
    """sosfilt_zi of these (float64) sections, made once: four 2x2 solves cost as much as filtering 5 s."""
    zi = sosfilt_zi(np.frombuffer(sos).reshape(sections, 6))
    zi.setflags(write=False)
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
    zi = _steady_state(np.asarray(sos, dtype=np.float64).tobytes(), len(sos))
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


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly(x, up, down) for 1-D float64 x, default window and zero padding.

    Output k is upfirdn's sample pre_remove + k: the zero-stuffed input (x at multiples of ``up``)
    convolved with h at position t = (pre_remove + k) down. Only the taps of t's phase (t mod up) meet
    input samples, so each output is a dot product of len(h) / up taps with consecutive input samples
    ending at x[t // up]. Outputs k, k + up, k + 2 up ... share a phase and their inputs start ``down``
    samples apart: one strided view and one dot product each.
    """
    g = int(np.gcd(up, down))
    up, down = up // g, down // g
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.copy()
    n_in = len(x)
    n_out = -(-n_in * up // down)
    h, pre_remove, _ = _resample_filter(up, down)
    taps = -(-len(h) // up)  # taps per phase (zero where h runs out)
    phases = np.zeros((up, taps))
    for ph in range(up):
        sub = h[ph::up]
        phases[ph, taps - len(sub) :] = sub[::-1]  # tap r meets x[i0 - r]: reversed, it ends at x[i0]
    last = (pre_remove + n_out - 1) * down // up  # the last output's newest input sample
    padded = np.concatenate((np.zeros(taps - 1), x, np.zeros(max(0, last - n_in + 1))))
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)  # windows[i] ends at x[i]
    y = np.empty(n_out)
    for k in range(min(up, n_out)):
        t = (pre_remove + k) * down
        count = len(range(k, n_out, up))
        rows = windows[t // up :: down][:count]
        y[k::up] = np.einsum("ij,j->i", rows, phases[t % up])  # numpy's own loop: no BLAS threads
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


def _side_minima(heights: list[float], valleys: list[float]) -> list[float]:
    """For each of a row of maxima, the lowest valley between it and the nearest strictly higher maximum
    before it (or the row's start): ``valleys[j]`` is the lowest sample between maxima j and j + 1.

    A stack of maxima not yet overtaken, each with the lowest valley since its own higher predecessor: a
    new maximum absorbs those it is at least as high as (scipy stops at the first *higher* sample).
    """
    out = [0.0] * len(heights)
    stack: list[tuple[float, float]] = []  # (height, lowest valley from its higher predecessor to it)
    for j, h in enumerate(heights):
        lowest = valleys[j - 1] if j else np.inf
        while stack and stack[-1][0] <= h:
            lowest = min(lowest, stack.pop()[1])
        out[j] = lowest
        stack.append((h, lowest))
    return out


def _prominences(x: np.ndarray, maxima: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """scipy.signal.peak_prominences(x, peaks)[0] with no window, for peaks among all of x's ``maxima``.

    scipy walks from each peak to the first higher sample on each side (or the signal's end) and takes
    the lowest sample on the way. That sample is the lowest valley between the peak and the nearest
    higher maximum on that side: the first higher sample lies on that maximum's slope, and every sample
    beyond it up to the maximum is higher still. So only the maxima (and the two ends, as maxima of their
    own height) and the valleys between them are needed: one pass each way over a stack.
    """
    if len(peaks) == 0:
        return np.zeros(0)
    marks = np.concatenate(([0], maxima, [len(x) - 1]))
    heights = x[marks]
    valleys = np.minimum(np.minimum.reduceat(x, marks)[:-1], x[marks[1:]])  # x[marks[j] .. marks[j + 1]]
    left = _side_minima(heights.tolist(), valleys.tolist())
    right = _side_minima(heights[::-1].tolist(), valleys[::-1].tolist())[::-1]
    at = np.searchsorted(marks[1:-1], peaks) + 1
    base = np.maximum(np.asarray(left)[at], np.asarray(right)[at])
    return np.asarray(x[peaks] - base)


def find_peaks(
    x: np.ndarray, distance: float | None = None, prominence: float | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """scipy.signal.find_peaks(x, distance=..., prominence=...) -> (peaks, prominences or None).

    As in scipy, the distance rule runs first and prominences are those of the peaks it keeps; a minimum
    ``prominence`` then drops the peaks below it.
    """
    x = np.asarray(x, dtype=np.float64)
    maxima = peaks = _local_maxima(x)
    if distance is not None and len(peaks):
        if distance < 1:
            raise ValueError("distance must be >= 1")
        peaks = peaks[_select_by_distance(peaks, x[peaks], distance)]
    if prominence is None:
        return peaks, None
    prominences = _prominences(x, maxima, peaks)
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


def refine_peak(y: np.ndarray, k: int) -> float:
    """Sub-sample position of the peak at index ``k`` of ``y`` by parabolic interpolation."""
    if 0 < k < len(y) - 1:
        a, b, c = y[k - 1], y[k], y[k + 1]
        denom = a - 2 * b + c
        if denom != 0:
            return float(k + 0.5 * (a - c) / denom)
    return float(k)
