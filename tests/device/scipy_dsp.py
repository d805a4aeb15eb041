"""The reference device/core/dsp.py is checked against: the same operations through scipy.signal,
as device/core/features.py and device/core/analysis.py called them before scipy left the device.

``scipy_reference()`` swaps these into device.core.dsp for the duration of a ``with`` block, so the device's
own pipeline (features.preprocess, features.window_features, analysis.heart_rate) runs on scipy: the
"before" of tests/device/test_dsp.py and of the benchmarks. scipy stays installed (the converter uses it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from scipy import signal

from device.core import analysis, dsp, features


def butter(order: int, cutoff: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    wn = list(cutoff) if isinstance(cutoff, tuple) else cutoff
    return np.asarray(signal.butter(order, wn, btype=btype, fs=fs, output="sos"))


def sosfiltfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    sos = np.array(sos)  # scipy's compiled filter refuses the read-only cached array
    if len(sos) == 1:  # the envelope: analysis.py ran filtfilt on butter's (b, a)
        return np.asarray(signal.filtfilt(*signal.sos2tf(sos), x))
    return np.asarray(signal.sosfiltfilt(sos, x))


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    return np.asarray(signal.resample_poly(x, up, down))


def autocorrelation(x: np.ndarray) -> np.ndarray:
    return np.asarray(signal.correlate(x, x, mode="full", method="fft")[len(x) - 1 :])


def find_peaks(
    x: np.ndarray, distance: float | None = None, prominence: float | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    peaks, props = signal.find_peaks(x, distance=distance, prominence=prominence)
    return peaks, (props["prominences"] if prominence is not None else None)


def hann_periodic(n: int) -> np.ndarray:
    return np.asarray(signal.get_window("hann", n, fftbins=True), dtype=np.float64)


_SWAPPED = ("butter", "sosfiltfilt", "resample_poly", "autocorrelation", "find_peaks", "hann_periodic")


def _clear_caches() -> None:
    features._bandpass_sos.cache_clear()
    features._mel_plan.cache_clear()


@contextlib.contextmanager
def scipy_reference() -> Iterator[None]:
    """device.core.dsp's functions through scipy while the block runs (not thread-safe: tests and benchmarks)."""
    saved = {name: getattr(dsp, name) for name in _SWAPPED}
    saved_envelope = analysis._ENVELOPE_SOS
    try:
        for name in _SWAPPED:
            setattr(dsp, name, globals()[name])
        analysis._ENVELOPE_SOS = butter(2, 8.0, "lowpass", analysis.ENVELOPE_RATE)
        _clear_caches()
        yield
    finally:
        for name, fn in saved.items():
            setattr(dsp, name, fn)
        analysis._ENVELOPE_SOS = saved_envelope
        _clear_caches()
