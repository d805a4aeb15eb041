"""The daemon's continuous mode on a live input: real PortAudio over an ALSA file PCM.

The stethoscope is absent when the daemon starts (a clear error listing what is there, and retries),
then it is "plugged in" (the test adds it to the ALSA configuration): the daemon finds it, classifies
rolling windows and publishes them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from device.core.audio_io import Audio
from device.core.inference import load_model
from tests.device.alsa_support import CAPTURE_RATE, alsa_env, alsa_home, raw_recording
from tests.device.daemon_support import DaemonProcess, model_ref, write_config
from tests.device.outbox_support import Subscriber, broker

pytestmark = pytest.mark.slow


def test_continuous_mode_waits_for_the_stethoscope_then_publishes_rolling_windows(samples_dir, tmp_path):
    model = model_ref()
    raw, _, samples = raw_recording(samples_dir / "a0405.flac", tmp_path / "audio", repeat=4)
    other = tmp_path / "audio" / "other.raw"
    other.write_bytes(bytes(8000))
    home = alsa_home(tmp_path, {"line_in": other})  # no stethoscope yet
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    config = write_config(
        tmp_path,
        mosquitto.url,
        mode="continuous",
        audio=f'input_device = "stethoscope"\nsample_rate = {CAPTURE_RATE}\n',
        model=model,
        continuous='interval_s = 10\nwindow_s = 5\npatient_ref = "BED-12"\nsite = "tricuspid"',
    )
    daemon = DaemonProcess(config, env=alsa_env(home)).start()
    try:
        assert daemon.wait_log("audio input unavailable at start", timeout=60), daemon.log[-3000:]
        assert "'stethoscope' not found" in daemon.log and "'line_in'" in daemon.log
        time.sleep(1.0)
        assert daemon.proc is not None and daemon.proc.poll() is None  # waiting, not crashed
        alsa_home(tmp_path, {"line_in": other, "stethoscope_file": raw})  # plugged in
        assert daemon.wait_log("is back after", timeout=60), daemon.log[-3000:]
        assert sub.wait_until(lambda s: len(s.results) >= 3, timeout=60), daemon.log[-3000:]
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
    results = sorted(sub.results.values(), key=lambda r: r["recorded_at"])
    first = results[0]
    assert first["patient_ref"] == "BED-12" and first["site"] == "tricuspid"
    assert first["duration_s"] == 5.0 and first["sample_rate"] == CAPTURE_RATE
    # the first window is seconds 5-10 of the capture: the same samples give the same answer
    window = samples[5 * CAPTURE_RATE : 10 * CAPTURE_RATE].astype(np.float32) / 32768.0
    expected = load_model(model).analyse(Audio(window, CAPTURE_RATE, "window"))
    assert first["label"] == expected.label and first["probabilities"] == expected.probabilities
