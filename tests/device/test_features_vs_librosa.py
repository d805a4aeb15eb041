"""The device's features, computed without librosa, are librosa's bit for bit on real recordings.

The shipped models were trained on librosa's MFCC; device/core/features.py now computes the same thing with
numpy and scipy (librosa, with numba and LLVM behind it, cost the device 130 MiB). The reference is
tests/device/librosa_features.py, the code the features came from. librosa is in the dev extra only.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from device.core.audio_io import read_audio
from device.core.features import FeatureParams, frame_windows, mel_basis, preprocess, window_features

librosa = pytest.importorskip(
    "librosa", reason="librosa is the reference these tests compare with: install the dev extra ('.[dev]')"
)

from tests.device import librosa_features  # noqa: E402 - only once librosa is known to be there

PARAMS = FeatureParams()
VARIANTS = {
    "shipped (MFCC)": PARAMS,
    "log-mel": dataclasses.replace(PARAMS, kind="logmel"),
    "other STFT and bands, no CMVN": dataclasses.replace(
        PARAMS, n_fft=512, hop_length=40, n_mels=40, n_mfcc=20, fmin=10.0, fmax=800.0, cmvn=False
    ),
    "4 kHz, mel bands above 1 kHz": dataclasses.replace(
        PARAMS, sample_rate=4000, n_fft=400, band_high_hz=1500.0, fmax=2000.0
    ),
}


def _windows(path, params: FeatureParams) -> np.ndarray:
    audio = read_audio(path)
    return frame_windows(preprocess(audio.samples, audio.sample_rate, params), params, audio.source)


def _assert_identical(windows: np.ndarray, params: FeatureParams, what: str) -> None:
    expected = librosa_features.window_features(windows, params)
    got = window_features(windows, params)
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.float32
    diff = float(np.max(np.abs(got - expected)))
    assert np.array_equal(got, expected), f"{what}: max abs difference {diff:.3g}"


@pytest.mark.parametrize("name", VARIANTS)
def test_the_mel_filter_bank_is_librosas(name):
    p = VARIANTS[name]
    expected = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    assert np.array_equal(mel_basis(p), expected)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_bundled_recordings_give_librosas_features_bit_for_bit(samples_dir, name):
    params = VARIANTS[name]
    for path in sorted(samples_dir.glob("*.flac")):
        windows = _windows(path, params)
        _assert_identical(windows, params, f"{path.name}, {name}")
        # One window alone takes another path (numpy's einsum itself), and an odd count ends on a part chunk.
        _assert_identical(windows[:1], params, f"{path.name}, {name}, first window alone")
        _assert_identical(windows[:3], params, f"{path.name}, {name}, three windows")


@pytest.mark.dataset
def test_recordings_from_every_database_give_librosas_features_bit_for_bit(data_dir):
    """Every 60th PhysioNet recording (training-a to -f, 2 kHz) and every 40th PASCAL one (44.1 and 4 kHz)."""
    physionet = sorted((data_dir / "physionet2016").glob("training-*/*.*"))
    pascal = sorted((data_dir / "pascal2011").glob("set_*/*.*"))
    paths = [p for p in physionet[::60] + pascal[::40] if p.suffix in (".wav", ".flac")]
    assert len(paths) >= 50
    windows_seen = 0
    for path in paths:
        for name in ("shipped (MFCC)", "log-mel"):
            params = VARIANTS[name]
            try:
                windows = _windows(path, params)
            except Exception:  # too short, silent: the pipeline refuses it before any feature
                continue
            _assert_identical(windows, params, f"{path.name}, {name}")
            windows_seen += len(windows)
    print(f"\n{len(paths)} recordings, {windows_seen} windows: identical to librosa's features")
    assert windows_seen > 500


def test_the_device_path_never_imports_librosa_or_numba(samples_dir):
    """What `steth classify` and the daemon run: load a model, analyse a recording."""
    code = (
        "import sys\n"
        "from device.core.inference import load_model\n"
        f"a = load_model().analyse_file({str(samples_dir / 'a0405.flac')!r})\n"
        "print(a.label, 'librosa' in sys.modules, 'numba' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _label, has_librosa, has_numba = proc.stdout.split()
    assert (has_librosa, has_numba) == ("False", "False")
