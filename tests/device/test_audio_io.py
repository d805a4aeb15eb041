from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from device.core.audio_io import encode_flac, read_audio
from device.core.errors import EmptyAudioError, InvalidAudioError, UnreadableAudioError


def test_it_reads_a_bundled_flac_as_mono_float(samples_dir):
    audio = read_audio(samples_dir / "a0405.flac")
    assert audio.sample_rate == 2000
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert 12 < audio.duration_s < 13
    assert np.abs(audio.samples).max() <= 1.0


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_it_reads_wav_of_each_sample_format_identically(tmp_path, samples_dir, subtype):
    ref = read_audio(samples_dir / "d0016.flac")
    path = tmp_path / f"x_{subtype}.wav"
    sf.write(path, ref.samples, ref.sample_rate, subtype=subtype)
    got = read_audio(path)
    assert got.subtype == subtype
    np.testing.assert_allclose(got.samples, ref.samples, atol=1 / 32768)


def test_it_mixes_stereo_down_to_mono(tmp_path, samples_dir):
    ref = read_audio(samples_dir / "d0016.flac")
    stereo = np.stack([ref.samples, 0.5 * ref.samples], axis=1)
    sf.write(tmp_path / "s.wav", stereo, ref.sample_rate, subtype="FLOAT")
    got = read_audio(tmp_path / "s.wav")
    assert got.channels == 2
    np.testing.assert_allclose(got.samples, 0.75 * ref.samples, atol=1e-6)


def test_it_reads_bytes_like_a_file(samples_dir):
    data = (samples_dir / "a0296.flac").read_bytes()
    assert np.array_equal(read_audio(data).samples, read_audio(samples_dir / "a0296.flac").samples)


def test_it_refuses_a_pdf_renamed_to_wav_with_a_hint(tmp_path):
    fake = tmp_path / "report.wav"
    fake.write_bytes(b"%PDF-1.7\n" + b"\x00" * 4000)
    with pytest.raises(UnreadableAudioError) as err:
        read_audio(fake)
    assert "not a readable WAV or FLAC" in str(err.value) and "ffmpeg" in str(err.value)


def test_it_refuses_a_missing_file_and_a_folder(tmp_path):
    with pytest.raises(UnreadableAudioError, match="no such file"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(UnreadableAudioError, match="is a folder"):
        read_audio(tmp_path)


def test_it_refuses_an_empty_recording(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 4000)
    with pytest.raises(EmptyAudioError, match="no samples"):
        read_audio(tmp_path / "empty.wav")


def test_it_refuses_nan_samples(tmp_path):
    x = np.zeros(4000, dtype=np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, 4000, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


def test_it_round_trips_flac_encoding(samples_dir):
    ref = read_audio(samples_dir / "e00008.flac")
    again = read_audio(encode_flac(ref.samples, ref.sample_rate))
    assert np.array_equal(again.samples, ref.samples)
