"""device/core/dsp.py against scipy (tests/device/scipy_dsp.py) on real recordings.

The device's pipeline is run twice on each recording, once as shipped (numpy only) and once with scipy
swapped in (what it was): the final features of both models' FeatureParams must agree to 1e-5 and the heart
rate to 0.1 bpm. The functions themselves are compared directly too, on signals where scipy's own edge cases
(plateaus, short signals, every resampling ratio a device may meet) are likely.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from device.core import analysis, dsp
from device.core.audio_io import read_audio
from device.core.features import FeatureParams, frame_windows, preprocess, window_features
from tests.device import scipy_dsp
from tests.device.scipy_dsp import scipy_reference

PARAMS = {"screening": FeatureParams(), "sound_type": FeatureParams(window_s=2.0, hop_s=1.0)}
FEATURE_TOLERANCE = 1e-5
BPM_TOLERANCE = 0.1


def _pipeline(samples: np.ndarray, rate: int) -> tuple[dict[str, np.ndarray], float | None]:
    out = {}
    bpm = None
    for name, params in PARAMS.items():
        x = preprocess(samples, rate, params)
        if name == "screening":
            bpm = analysis.heart_rate(x, params.sample_rate).bpm
        if len(x) >= params.window_samples:
            out[name] = window_features(frame_windows(x, params), params)
    return out, bpm


def compare(path: Path) -> tuple[float, float | None, float | None]:
    """(largest feature difference over both params, bpm as shipped, bpm through scipy)."""
    audio = read_audio(path)
    ours, bpm = _pipeline(audio.samples, audio.sample_rate)
    with scipy_reference():
        theirs, bpm_ref = _pipeline(audio.samples, audio.sample_rate)
    assert ours.keys() == theirs.keys()
    worst = 0.0
    for name in ours:
        assert ours[name].shape == theirs[name].shape and ours[name].dtype == theirs[name].dtype == np.float32
        worst = max(worst, float(np.max(np.abs(ours[name] - theirs[name]))))
    return worst, bpm, bpm_ref


def _check(paths: list[Path]) -> tuple[float, float]:
    worst, worst_bpm = 0.0, 0.0
    for path in paths:
        diff, bpm, bpm_ref = compare(path)
        assert diff <= FEATURE_TOLERANCE, f"{path.name}: features differ by {diff:.3g}"
        assert (bpm is None) == (bpm_ref is None), f"{path.name}: heart rate {bpm} vs scipy's {bpm_ref}"
        if bpm is not None and bpm_ref is not None:
            assert abs(bpm - bpm_ref) <= BPM_TOLERANCE, f"{path.name}: heart rate {bpm} vs scipy's {bpm_ref}"
            worst_bpm = max(worst_bpm, abs(bpm - bpm_ref))
        worst = max(worst, diff)
    return worst, worst_bpm


def test_the_bundled_recordings_match_scipy(samples_dir):
    paths = sorted(samples_dir.glob("*.flac"))
    assert len(paths) >= 6
    _check(paths)


def test_recordings_from_every_database_match_scipy(data_dir):
    """Every 12th PhysioNet 2016 recording (~230, all six databases) and every 8th PASCAL one (set A at
    44.1 kHz, set B at 4 kHz: two resampling ratios), through both pipelines.
    """
    physionet = sorted((data_dir / "physionet2016").rglob("*.flac"))[::12]
    pascal = sorted((data_dir / "pascal2011").rglob("*.flac"))[::8]
    assert len(physionet) >= 200 and len(pascal) >= 100
    worst, worst_bpm = _check(physionet + pascal)
    n = len(physionet) + len(pascal)
    print(f"{n} recordings: largest feature difference {worst:.3g}, heart rate {worst_bpm:.3g} bpm")


# -- The functions one by one --------------------------------------------------------------------------------


@pytest.mark.parametrize("order", range(1, 9))
def test_butter_is_scipys_bit_for_bit(order):
    """Every order (odd ones pair a real pole with a zero pole, as scipy's zpk2sos does), narrow and wide
    bands, at the rates a device meets."""
    for fs, low, high in ((2000, 25.0, 400.0), (4000, 50.0, 300.0), (2000, 5.0, 900.0), (1000, 100.0, 110.0)):
        assert np.array_equal(
            dsp.butter(order, (low, high), "bandpass", fs), scipy_dsp.butter(order, (low, high), "bandpass", fs)
        )
        assert np.array_equal(dsp.butter(order, high, "lowpass", fs), scipy_dsp.butter(order, high, "lowpass", fs))
    assert np.array_equal(dsp.butter(order, 8.0, "lowpass", 50), scipy_dsp.butter(order, 8.0, "lowpass", 50))


def test_the_envelope_filter_is_the_one_analysis_used():
    b, a = signal.butter(2, 8, fs=analysis.ENVELOPE_RATE)
    assert np.allclose(signal.sos2tf(analysis._ENVELOPE_SOS), (b, a), rtol=1e-14, atol=0)


@pytest.mark.parametrize("order", [1, 3, 4])
def test_sosfiltfilt_matches_scipy(samples_dir, order):
    sos = dsp.butter(order, (25.0, 400.0), "bandpass", 2000)
    assert np.allclose(dsp.sosfilt_zi(sos), signal.sosfilt_zi(sos), rtol=1e-14, atol=0)
    x = read_audio(samples_dir / "a0296.flac").samples.astype(np.float64)
    for n in (dsp.sosfiltfilt_padlen(sos) + 1, 31, 32, 33, 1000, len(x)):  # around the block length too
        ours, theirs = dsp.sosfiltfilt(sos, x[:n]), signal.sosfiltfilt(sos, x[:n])
        assert ours.shape == theirs.shape
        assert np.max(np.abs(ours - theirs)) <= 1e-12 * np.max(np.abs(theirs)), n
    with pytest.raises(ValueError, match="longer than the padding"):
        dsp.sosfiltfilt(sos, x[: dsp.sosfiltfilt_padlen(sos)])


def _sosfilt_whole_products(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """dsp.sosfilt as it was before session 16: each product of the whole length made, then added."""
    fir_t, free, to_state, step = dsp._plan(tuple((sos / sos[:, 3:4]).ravel().tolist()))
    n, nb = len(x), -(-len(x) // dsp._BLOCK)
    blocks = np.zeros((nb, dsp._BLOCK))
    blocks.reshape(-1)[:n] = x
    states = np.empty((nb, len(step)))
    states[0] = zi.ravel()
    states[1:] = dsp._matmul(blocks[:-1], to_state)
    power, stride = step, 1
    while stride < nb:
        states[stride:] += dsp._matmul(states[:-stride], power.T)
        power = power @ power
        stride *= 2
    y = dsp._matmul(blocks, fir_t)
    y += dsp._matmul(states, free)
    return y.reshape(-1)[:n]


@pytest.mark.parametrize("limit", [1 << 17, 256])
def test_the_block_scan_adds_its_products_in_place_bit_for_bit(samples_dir, monkeypatch, limit):
    """sosfilt adds each product into the states a chunk of rows at a time, from the last chunk, reading
    rows it is about to change in the scan: the numbers of whole products added afterwards, bit for bit,
    also with chunks of a few rows (many of them, each overlapping the rows the next one reads)."""
    monkeypatch.setattr(dsp, "_BLAS_ONE_THREAD", limit)
    sos = dsp.butter(4, (25.0, 700.0), "bandpass", 2000)
    x = read_audio(samples_dir / "a0296.flac").samples.astype(np.float64)
    zi = dsp.sosfilt_zi(sos) * x[0]
    for n in (5, 33, 4000, len(x)):
        assert np.array_equal(dsp.sosfilt(sos, x[:n], zi), _sosfilt_whole_products(sos, x[:n], zi)), n


@pytest.mark.parametrize(("up", "down"), [(1, 2), (20, 441), (40, 441), (1, 2), (1, 4), (1, 24), (2, 1), (3, 2)])
def test_resample_poly_matches_scipy(samples_dir, up, down):
    x = read_audio(samples_dir / "e00008.flac").samples.astype(np.float64)[:20_000]
    for n in (1, 7, 441, len(x)):
        ours, theirs = dsp.resample_poly(x[:n], up, down), signal.resample_poly(x[:n], up, down)
        assert ours.shape == theirs.shape, n
        assert np.max(np.abs(ours - theirs), initial=0.0) <= 1e-12, n


def test_autocorrelation_matches_scipy(samples_dir):
    env = analysis.envelope(read_audio(samples_dir / "d0016.flac").samples, 2000)
    for n in (1, 2, 99, len(env)):
        ours = dsp.autocorrelation(env[:n])
        assert np.allclose(ours, scipy_dsp.autocorrelation(env[:n]), rtol=0, atol=1e-9 * max(1.0, n))


def test_find_peaks_matches_scipy_with_plateaus_and_ties():
    rng = np.random.default_rng(8)
    for trial in range(40):
        x = np.round(np.cumsum(rng.standard_normal(2000)), 0)  # rounded: many plateaus and equal heights
        for distance, prominence in ((None, None), (5, 0.0), (1, 2.0), (17, None)):
            ours, prom = dsp.find_peaks(x, distance=distance, prominence=prominence)
            theirs, props = signal.find_peaks(x, distance=distance, prominence=prominence)
            assert np.array_equal(ours, theirs), (trial, distance, prominence)
            if prominence is not None:
                assert prom is not None and np.array_equal(prom, props["prominences"])
    edges = ([], [1, 1], [0, 1, 1], [1, 1, 0, 1, 1], [5, 1, 3, 1, 2, 0], [0, 2, 1, 3, 1, 4], [3, 3, 1, 2, 1, 3, 3],
             [0, 2, 2, 1, 2, 2, 0], [4, 0, 1, 0, 1, 0, 4])  # fmt: skip
    for values in edges:
        x = np.asarray(values, dtype=np.float64)
        ours, prom = dsp.find_peaks(x, prominence=0.0)
        theirs, props = signal.find_peaks(x, prominence=0.0)
        assert np.array_equal(ours, theirs) and np.array_equal(prom, props["prominences"]), values


def test_the_stft_window_is_scipys_bit_for_bit():
    assert np.array_equal(dsp.hann_periodic(256), scipy_dsp.hann_periodic(256))


def test_the_reference_swap_really_swaps_and_restores(samples_dir):
    """The comparisons above would pass trivially if scipy_reference changed nothing: inside it, the
    device's filter rounds as scipy's does (not bit for bit as ours), and ours is back afterwards.
    """
    x = read_audio(samples_dir / "a0405.flac").samples.astype(np.float64)
    sos = dsp.butter(4, (25.0, 400.0), "bandpass", 2000)
    ours = dsp.sosfiltfilt(sos, x)
    with scipy_reference():
        assert dsp.sosfiltfilt is scipy_dsp.sosfiltfilt
        assert np.array_equal(dsp.sosfiltfilt(sos, x), signal.sosfiltfilt(sos, x))
    assert not np.array_equal(ours, signal.sosfiltfilt(sos, x))
    assert np.array_equal(dsp.sosfiltfilt(sos, x), ours)


# -- The device without scipy --------------------------------------------------------------------------------


# scipy.fft (the MFCC's DCT, device/core/features.py) loads scipy.special and scipy._lib with it; these are the
# subpackages scipy.signal brought in besides, +54 MiB resident.
HEAVY = ("signal", "stats", "optimize", "sparse", "spatial", "interpolate", "integrate", "ndimage", "linalg")


def test_the_device_path_never_imports_scipy_signal(samples_dir):
    """What `steth device run` imports (the command line with every part's commands, the daemon's
    modules) and a whole analysis with either model, in a fresh interpreter: of scipy, only scipy.fft and
    what it needs.
    """
    code = (
        "import sys\n"
        "sys.modules['django'] = None\n"  # as on the Pi: the [device] extra only
        "import device.cli\n"
        "device.cli.build_parser()\n"  # `steth` registers every part's commands (converter's too) first
        "import device.edge.daemon_cli, device.edge.daemon, device.edge.analyser, device.edge.parts\n"
        "import device.edge.producers, device.edge.sources, device.edge.publisher, device.edge.outbox\n"
        "import device.edge.config, device.core.inference, device.core.features, device.core.analysis\n"
        "import device.core.runtime, device.core.contract, device.core.audio_io, device.core.dsp\n"
        "from device.core.inference import load_model\n"
        "for name in ('screening', 'sound_type'):\n"
        f"    load_model(name).analyse_file({str(samples_dir / 'a0296.flac')!r})\n"
        "print(' '.join(sorted({m.split('.')[1] for m in sys.modules if m.startswith('scipy.')})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    assert "fft" in loaded  # the probe sees scipy's modules at all
    assert not loaded & set(HEAVY), sorted(loaded)
