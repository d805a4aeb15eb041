"""Heart rate and signal quality, checked against annotated real recordings and known signals."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest

from device.analysis import assess, heart_rate
from device.audio_io import Audio, read_audio
from device.features import FeatureParams, preprocess

PARAMS = FeatureParams()


def _beats(bpm: float, seconds: float = 12.0, rate: int = 2000, seed: int = 0) -> np.ndarray:
    """A synthetic phonocardiogram: S1 and S2 as short 50 Hz / 70 Hz bursts, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.02 * rng.standard_normal(len(t))
    period = 60.0 / bpm
    for start in np.arange(0.2, seconds - 0.5, period):
        for offset, freq, amp in ((0.0, 50, 1.0), (0.3 * period, 70, 0.6)):
            m = (t >= start + offset) & (t < start + offset + 0.08)
            x[m] += amp * np.sin(2 * np.pi * freq * t[m]) * np.hanning(m.sum())
    return x.astype(np.float32)


@pytest.mark.parametrize("bpm", [48, 60, 75, 95, 120, 150])
def test_it_finds_the_rate_of_a_synthetic_heartbeat(bpm):
    x = preprocess(_beats(bpm), 2000, PARAMS)
    hr = heart_rate(x, PARAMS.sample_rate)
    assert hr.bpm == pytest.approx(bpm, rel=0.03)
    assert hr.periodicity > 0.5


def test_heart_rate_against_pascal_s1_annotations(data_dir):
    """PASCAL set A's S1 positions give the true rate: median error and share within 10% reported."""
    s1 = defaultdict(list)
    with open(data_dir / "pascal2011" / "set_a_timing.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["sound"] == "S1":
                s1[row["fname"]].append(int(row["location"]))
    errors, relative = [], []
    for fname, locations in s1.items():
        true_bpm = 60.0 / np.median(np.diff(np.sort(locations)) / 44100)
        stem = fname.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        audio = read_audio(data_dir / "pascal2011" / "set_a" / f"{stem}.flac")
        got = heart_rate(preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate).bpm
        assert got is not None, stem
        errors.append(abs(got - true_bpm))
        relative.append(abs(got - true_bpm) / true_bpm)
    assert len(errors) == 21
    print(
        f"heart rate on {len(errors)} annotated recordings: median error {np.median(errors):.1f} bpm, "
        f"mean {np.mean(errors):.1f} bpm, within 10%: {np.mean(np.array(relative) <= 0.1):.0%}"
    )
    assert np.median(errors) <= 3.0
    assert np.mean(np.array(relative) <= 0.1) >= 0.85


def test_a_clean_recording_is_fit_and_noise_is_not(samples_dir):
    audio = read_audio(samples_dir / "e00008.flac")
    quality, hr = assess(audio, preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate)
    assert quality.ok and quality.score > 0.7 and hr.bpm is not None
    noise = Audio((0.1 * np.random.default_rng(1).standard_normal(40000)).astype(np.float32), 4000, "noise")
    q, _ = assess(noise, preprocess(noise.samples, 4000, PARAMS), PARAMS.sample_rate)
    assert not q.ok and any("rhythm" in i for i in q.issues)


def test_clipping_and_a_weak_signal_are_named(samples_dir):
    audio = read_audio(samples_dir / "a0405.flac")
    x = preprocess(audio.samples, audio.sample_rate, PARAMS)
    loud = Audio(np.clip(audio.samples * 8, -1, 1), audio.sample_rate, "loud")
    q, _ = assess(loud, x, PARAMS.sample_rate)
    assert any("clipping" in i for i in q.issues) and not q.ok
    weak = Audio(audio.samples * 1e-3, audio.sample_rate, "weak")
    q, _ = assess(weak, x, PARAMS.sample_rate)
    assert any("weak" in i for i in q.issues)


def test_noise_bursts_are_flagged(samples_dir):
    audio = read_audio(samples_dir / "e00008.flac")
    x = audio.samples.copy()
    rng = np.random.default_rng(2)
    for start in range(0, len(x) - 1000, 4000):  # a knock every 2 s
        x[start : start + 1000] += 0.9 * rng.standard_normal(1000).astype(np.float32)
    bumped = Audio(np.clip(x, -1, 1), audio.sample_rate, "knocks")
    q, _ = assess(bumped, preprocess(bumped.samples, bumped.sample_rate, PARAMS), PARAMS.sample_rate)
    assert not q.ok
