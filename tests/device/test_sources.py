"""Audio sources: the stethoscope through real PortAudio (an ALSA file PCM), and replayed recordings."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.core.audio_io import read_audio
from device.core.errors import UnreadableAudioError
from device.edge.sources import CaptureError, EndOfSource, ReplaySource, find_input, recordings, segments
from tests.device.alsa_support import CAPTURE_RATE, alsa_home, raw_recording, run_python

DEVICES = [
    {"index": 0, "name": "bcm2835 Headphones: - (hw:0,0)", "max_input_channels": 0, "default_samplerate": 44100.0},
    {"index": 1, "name": "USB Audio Device: - (hw:1,0)", "max_input_channels": 1, "default_samplerate": 48000.0},
    {"index": 2, "name": "Thinklabs One: USB Audio (hw:2,0)", "max_input_channels": 2, "default_samplerate": 44100.0},
    {"index": 3, "name": "default", "max_input_channels": 32, "default_samplerate": 44100.0},
]


def test_an_input_is_found_by_part_of_its_name():
    assert find_input("thinklabs", DEVICES) == 2
    assert find_input("default", DEVICES) == 3
    assert find_input(None, DEVICES, default=1) == 1


def test_a_missing_input_lists_the_inputs_present():
    with pytest.raises(CaptureError) as excinfo:
        find_input("Littmann", DEVICES)
    text = str(excinfo.value)
    assert "'Littmann' not found" in text
    assert "Thinklabs One" in text and "USB Audio Device" in text
    assert "Headphones" not in text  # an output only, not an input


def test_an_ambiguous_name_is_refused():
    with pytest.raises(CaptureError, match="matches 2 devices"):
        find_input("usb audio", DEVICES)


def test_no_inputs_at_all_says_what_to_check():
    with pytest.raises(CaptureError, match="no audio inputs at all"):
        find_input("x", DEVICES[:1])


def test_replay_delivers_each_file_as_a_fresh_piece(samples_dir):
    source = ReplaySource(samples_dir, block_s=1.0)
    with source:
        blocks = []
        while True:
            try:
                blocks.append(source.read())
            except EndOfSource:
                break
    files = recordings(samples_dir)
    assert sum(b.fresh for b in blocks) == len(files) == 6
    first = read_audio(files[0])
    joined = np.concatenate([b.samples for b in blocks[: next(i for i, b in enumerate(blocks[1:], 1) if b.fresh)]])
    np.testing.assert_array_equal(joined, first.samples)


def test_a_replay_recording_is_the_file_when_shorter_than_asked(samples_dir):
    with ReplaySource(samples_dir / "a0405.flac") as source:
        audio = source.record(30.0)
    np.testing.assert_array_equal(audio.samples, read_audio(samples_dir / "a0405.flac").samples)


def test_replay_skips_an_unreadable_file_and_goes_on(samples_dir, tmp_path):
    (tmp_path / "a-broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "b.flac").write_bytes((samples_dir / "a0405.flac").read_bytes())
    with ReplaySource(tmp_path) as source:
        first = source.read()
    assert first.fresh and first.sample_rate == 2000


def test_a_missing_replay_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CaptureError, match="does not exist"):
        ReplaySource(tmp_path / "nope").open()
    with pytest.raises(CaptureError, match=r"no \.wav or \.flac"):
        ReplaySource(tmp_path).open()


def test_a_long_recording_comes_in_bounded_segments(samples_dir, tmp_path):
    x, rate = sf.read(str(samples_dir / "a0405.flac"), dtype="float32")
    long = np.tile(x, 10)  # ~125 s
    path = tmp_path / "long.wav"
    sf.write(str(path), np.stack([long, long], axis=1), rate, subtype="PCM_16")  # stereo too
    parts = list(segments(path, max_segment_s=30))
    assert [round(p.duration_s) for p in parts] == [30, 30, 30, 35]  # the tail joins the last segment
    np.testing.assert_array_equal(np.concatenate([p.samples for p in parts]), read_audio(path).samples)
    assert all(len(p.samples) <= 2 * 30 * rate for p in parts)
    short = list(segments(samples_dir / "a0405.flac", max_segment_s=30))
    assert len(short) == 1 and short[0].source.endswith("a0405.flac")


def test_segments_of_a_corrupt_file_raise_the_audio_error(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 100)
    with pytest.raises(UnreadableAudioError):
        list(segments(bad, 30))


# -- the real PortAudio path -----------------------------------------------------------------------------

CAPTURE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from device.edge.sources import SoundDeviceSource, list_devices
    names = [d["name"] for d in list_devices() if d["max_input_channels"] > 0]
    with SoundDeviceSource(sys.argv[1], int(sys.argv[2])) as source:
        audio = source.record(float(sys.argv[3]))
    np.save(sys.argv[4], audio.samples)
    print(json.dumps({"inputs": names, "rate": audio.sample_rate, "n": len(audio.samples)}))
    """
)


@pytest.fixture
def stethoscope(samples_dir, tmp_path) -> tuple[Path, np.ndarray]:
    raw, _, samples = raw_recording(samples_dir / "a0405.flac", tmp_path / "audio")
    return alsa_home(tmp_path, {"stethoscope_file": raw}), samples


def test_portaudio_captures_the_recording_exactly(stethoscope, tmp_path):
    home, samples = stethoscope
    out = tmp_path / "captured.npy"
    proc = run_python(CAPTURE, home, "stethoscope", str(CAPTURE_RATE), "10", str(out))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["inputs"] == ["stethoscope_file"] and info["rate"] == CAPTURE_RATE
    captured = np.load(out)
    assert len(captured) == 10 * CAPTURE_RATE
    np.testing.assert_array_equal(captured, samples[: len(captured)].astype(np.float32) / 32768.0)


def test_a_missing_input_at_start_is_a_clear_error_listing_the_devices(stethoscope):
    home, _ = stethoscope
    proc = run_python(
        "from device.edge.sources import SoundDeviceSource\nSoundDeviceSource('Littmann', 4000).open()", home
    )
    assert proc.returncode != 0
    assert "CaptureError" in proc.stderr and "'Littmann' not found" in proc.stderr
    assert "stethoscope_file" in proc.stderr


def test_an_unsupported_rate_says_which_rate_to_use(stethoscope):
    home, _ = stethoscope
    proc = run_python(
        "from device.edge.sources import SoundDeviceSource\n"
        "SoundDeviceSource('stethoscope', 4000, channels=300).open()",
        home,
    )
    assert "cannot capture 300 channel(s)" in proc.stderr and "audio.channels" in proc.stderr


LOSE_MID_SESSION = textwrap.dedent(
    """
    import json, logging, resource, threading
    logging.basicConfig(level=logging.INFO)
    from device.edge.sources import SoundDeviceSource
    # What the file plugin writes (a copy of what it captures) may not exceed 80 kB: after ~10 s of
    # audio the capture fails inside ALSA with an I/O error, as a stethoscope pulled out mid-session does.
    resource.setrlimit(resource.RLIMIT_FSIZE, (80_000, 80_000))
    source = SoundDeviceSource("stethoscope", 4000, reconnect=True, backoff=(0.05, 0.2), stall_timeout_s=5)
    source.open()
    fresh_at, total = [], 0
    while total < 4000 * 30:
        block = source.read()
        if block.fresh:
            fresh_at.append(total)
        total += len(block.samples)
    source.close()
    print(json.dumps({"fresh_at": fresh_at, "reconnects": source.reconnects, "total": total}))
    """
)


def test_a_device_lost_mid_session_is_reported_and_reopened(samples_dir, tmp_path):
    raw, _, _ = raw_recording(samples_dir / "a0405.flac", tmp_path / "audio", repeat=4)  # ~50 s
    home = alsa_home(tmp_path, {"stethoscope_file": raw})
    proc = run_python(LOSE_MID_SESSION, home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    assert info["reconnects"] >= 2  # 30 s of audio through a device that fails every 10 s
    assert info["fresh_at"][0] == 0 and len(info["fresh_at"]) == info["reconnects"] + 1
    assert "audio input lost" in proc.stderr and "host error" in proc.stderr
    assert "is back" in proc.stderr
