from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from device.core.audio_io import Audio, read_audio
from device.core.errors import ClippedAudioError, ConfigError, SilentAudioError, TooShortError
from device.core.features import (
    FeatureParams,
    analysis_windows,
    extract,
    extract_file,
    preprocess,
    signal_features,
    window_features,
)

PARAMS = FeatureParams()


def test_it_gives_one_feature_matrix_per_window(samples_dir):
    feats = extract_file(samples_dir / "a0405.flac", PARAMS)  # 12.53 s: windows at 0, 2.5, 5, 7.5 s
    expected_windows = 4
    assert feats.features.shape == (expected_windows, *PARAMS.input_shape)
    assert feats.features.dtype == np.float32
    assert np.all(np.isfinite(feats.features))
    np.testing.assert_allclose(feats.window_starts_s, np.arange(expected_windows) * PARAMS.hop_s)


SHIPPED = FeatureParams(band_high_hz=700.0, fmax=800.0, cmvn="recording")  # screening and murmur 0.5.0 / 0.2.0
SHARING = {
    "shipped": SHIPPED,
    "sound_type (2 s windows, 1 s hop)": FeatureParams(window_s=2.0, hop_s=1.0),
    "log-mel, per-window CMVN": dataclasses.replace(SHIPPED, kind="logmel", cmvn=True),
    "4 kHz, n_fft 400": dataclasses.replace(SHIPPED, sample_rate=4000, n_fft=400, band_high_hz=1500.0, fmax=2000.0),
    "hop of 3.3 s, frames every 33 samples": dataclasses.replace(SHIPPED, hop_s=3.3, hop_length=33),
    "hop not a whole number of frames (not shared)": dataclasses.replace(SHIPPED, hop_s=2.49),
    "windows that do not overlap (not shared)": dataclasses.replace(SHIPPED, hop_s=5.0),
}


@pytest.mark.parametrize("name", SHARING)
def test_the_features_of_a_signal_are_those_of_its_windows_bit_for_bit(samples_dir, name):
    """signal_features computes the STFT frames that overlapping windows share once; every window's
    features must still be window_features' own (which are librosa's: test_features_vs_librosa.py), for
    one window (tiled from 3 s, or 5-7.5 s), two, and every length of the shipped samples."""
    params = SHARING[name]
    for path in sorted(samples_dir.glob("*.flac")):
        audio = read_audio(path)
        x = preprocess(audio.samples, audio.sample_rate, params)
        for seconds in (3.0, 7.4, 7.6, 10.0, None):
            cut = x if seconds is None else x[: int(seconds * params.sample_rate)]
            expected = window_features(analysis_windows(cut, params), params)
            got = signal_features(cut, params)
            assert got.shape == expected.shape and got.dtype == np.float32, (path.name, seconds)
            assert np.array_equal(got, expected), (path.name, seconds, float(np.max(np.abs(got - expected))))


def test_it_is_deterministic(samples_dir):
    a = extract_file(samples_dir / "d0017.flac", PARAMS)
    b = extract_file(samples_dir / "d0017.flac", PARAMS)
    assert np.array_equal(a.features, b.features)


def test_each_window_is_normalised_on_its_own(samples_dir):
    feats = extract_file(samples_dir / "e00152.flac", PARAMS).features
    np.testing.assert_allclose(feats.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(feats.std(axis=1), 1, atol=1e-2)


def test_mean_only_normalisation_keeps_the_depth_of_the_quiet_and_ignores_gain(samples_dir):
    mean_only = dataclasses.replace(PARAMS, cmvn="mean")
    audio = read_audio(samples_dir / "e00152.flac")
    feats = extract(audio, mean_only).features
    np.testing.assert_allclose(feats.mean(axis=1), 0, atol=1e-4)
    full = extract(audio, PARAMS).features
    # the same shape over time per coefficient, each at its own scale (not scaled to unit variance)
    ratio = feats.std(axis=1) / full.std(axis=1)
    assert ratio.std() > 0.1 * ratio.mean()
    np.testing.assert_allclose(feats / feats.std(axis=1, keepdims=True), full, atol=1e-3)
    quiet = dataclasses.replace(audio, samples=audio.samples * 0.1)
    np.testing.assert_allclose(extract(quiet, mean_only).features, feats, atol=1e-3)


def test_recording_normalisation_uses_the_whole_recordings_statistics(samples_dir):
    per_recording = dataclasses.replace(PARAMS, cmvn="recording")
    audio = read_audio(samples_dir / "e00152.flac")
    feats = extract(audio, per_recording).features
    assert feats.shape[0] > 1
    np.testing.assert_allclose(feats.mean(axis=(0, 1)), 0, atol=1e-4)
    np.testing.assert_allclose(feats.std(axis=(0, 1)), 1, atol=1e-2)
    assert np.abs(feats.mean(axis=1)).max() > 0.05  # windows keep their differences from one another
    quiet = dataclasses.replace(audio, samples=audio.samples * 0.1)
    np.testing.assert_allclose(extract(quiet, per_recording).features, feats, atol=1e-3)
    mean_only = extract(audio, dataclasses.replace(PARAMS, cmvn="recording-mean")).features
    np.testing.assert_allclose(mean_only.mean(axis=(0, 1)), 0, atol=1e-4)
    np.testing.assert_allclose(mean_only / mean_only.std(axis=(0, 1)), feats, atol=1e-3)


def test_gain_does_not_change_the_features(samples_dir):
    audio = read_audio(samples_dir / "a0296.flac")
    quiet = dataclasses.replace(audio, samples=audio.samples * 0.1)
    np.testing.assert_allclose(extract(quiet, PARAMS).features, extract(audio, PARAMS).features, atol=1e-3)


def test_a_44k_stereo_24bit_copy_gives_nearly_the_same_features(tmp_path, samples_dir):
    audio = read_audio(samples_dir / "d0016.flac")
    import librosa

    up = librosa.resample(audio.samples, orig_sr=2000, target_sr=44100, res_type="soxr_hq")
    sf.write(tmp_path / "x.wav", np.stack([up, up], axis=1), 44100, subtype="PCM_24")
    original = extract(audio, PARAMS).features
    converted = extract_file(tmp_path / "x.wav", PARAMS).features
    assert converted.shape == original.shape
    # resampling twice is not lossless, but the cepstra must agree closely
    assert np.corrcoef(original.ravel(), converted.ravel())[0, 1] > 0.98


def test_the_band_pass_removes_mains_hum_and_hiss():
    rate = 8000
    t = np.arange(rate * 6) / rate
    inside = np.sin(2 * np.pi * 100 * t)
    hum = np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 1500 * t)
    out = preprocess((inside + hum).astype(np.float32), rate, PARAMS)
    ref = preprocess(inside.astype(np.float32), rate, PARAMS)
    assert np.corrcoef(out[2000:-2000], ref[2000:-2000])[0, 1] > 0.99


def test_a_recording_shorter_than_a_window_is_refused_with_its_length(samples_dir):
    audio = read_audio(samples_dir / "a0405.flac")
    short = dataclasses.replace(audio, samples=audio.samples[:1000])  # 0.5 s
    with pytest.raises(TooShortError, match=r"0\.50 s is shorter than one 5 s analysis window"):
        extract(short, PARAMS)


def test_silence_is_refused_with_a_hint():
    silent = Audio(np.zeros(20000, dtype=np.float32), 2000, "silent.wav")
    with pytest.raises(SilentAudioError) as err:
        extract(silent, PARAMS)
    assert "stethoscope is on the chest" in str(err.value)


def test_heavy_clipping_is_refused(samples_dir):
    audio = read_audio(samples_dir / "a0405.flac")
    loud = np.clip(audio.samples * 50, -1, 1)
    with pytest.raises(ClippedAudioError, match="clipped"):
        extract(dataclasses.replace(audio, samples=loud), PARAMS)


def test_params_round_trip_through_json_and_refuse_unknown_keys():
    again = FeatureParams.from_dict(PARAMS.to_dict())
    assert again == PARAMS and again.fingerprint() == PARAMS.fingerprint()
    assert FeatureParams(n_mfcc=13).fingerprint() != PARAMS.fingerprint()
    with pytest.raises(ConfigError, match="unknown FeatureParams keys: colour"):
        FeatureParams.from_dict({**PARAMS.to_dict(), "colour": "red"})


def test_params_refuse_impossible_settings():
    with pytest.raises(ConfigError, match="cmvn"):
        FeatureParams(cmvn="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="band"):
        FeatureParams(band_low_hz=500, band_high_hz=400)
    with pytest.raises(ConfigError, match="n_mfcc"):
        FeatureParams(n_mfcc=64)


def test_logmel_kind_gives_mel_bands(samples_dir):
    params = FeatureParams(kind="logmel")
    feats = extract_file(samples_dir / "a0405.flac", params)
    assert feats.features.shape[1:] == (params.frames_per_window, params.n_mels)
