"""`steth record` at the bedside, capturing through real PortAudio from an ALSA file PCM."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.core import contract
from device.edge.delivery_lock import DeliveryLock
from device.edge.outbox import Outbox
from tests.device.alsa_support import CAPTURE_RATE, alsa_env, alsa_home, raw_recording
from tests.device.daemon_support import REPO, model_ref, write_config
from tests.device.outbox_support import Subscriber

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> str:
    return model_ref()


def steth(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=alsa_env(home),
        timeout=180,
        check=False,
    )


def bedside(tmp_path: Path, source: Path, model: str, url: str = "mqtt://127.0.0.1:9") -> tuple[Path, Path, np.ndarray]:
    raw, _, samples = raw_recording(source, tmp_path / "audio")
    home = alsa_home(tmp_path, {"stethoscope_file": raw})
    audio = f'input_device = "stethoscope"\nsample_rate = {CAPTURE_RATE}\n'
    return home, write_config(tmp_path, url, audio=audio, model=model), samples


def outbox_results(tmp_path: Path) -> list[dict]:
    with Outbox(tmp_path / "state" / "outbox.sqlite", tmp_path / "run" / "outbox-audio", 1 << 30) as box:
        return [json.loads(p.payload) for p in box.pending(100)]


def test_record_answers_like_classify_on_the_same_recording(samples_dir, tmp_path, model):
    home, config, samples = bedside(tmp_path, samples_dir / "a0405.flac", model)
    seconds = 12.5
    proc = steth(home, "record", "--patient", "P-000123", "--site", "mitral", "--seconds", str(seconds),
                 "--config", str(config), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads(proc.stdout)["results"][0]
    # the same samples, saved as a WAV, through `steth classify`
    wav = tmp_path / "as-captured.wav"
    sf.write(str(wav), samples[: round(seconds * CAPTURE_RATE)], CAPTURE_RATE, subtype="PCM_16")
    classified = steth(home, "classify", str(wav), "--model", model, "--json")
    assert classified.returncode == 0, classified.stderr
    reference = json.loads(classified.stdout)
    assert recorded["label"] == reference["label"]
    for key in ("confidence", "probabilities", "heart_rate_bpm", "quality", "windows"):
        assert recorded[key] == reference[key], key
    assert recorded["stored"] is True
    stored = outbox_results(tmp_path)
    assert [r["result_id"] for r in stored] == [recorded["result_id"]]
    assert stored[0]["patient_ref"] == "P-000123" and stored[0]["site"] == "mitral"
    assert stored[0]["sample_rate"] == CAPTURE_RATE and stored[0]["duration_s"] == seconds
    assert contract.errors("result", stored[0]) == []


def test_record_prints_a_clear_answer_for_the_nurse(samples_dir, tmp_path, model):
    home, config, _ = bedside(tmp_path, samples_dir / "a0405.flac", model)
    proc = steth(home, "record", "--patient", "P-1", "--site", "aortic", "--seconds", "10", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # the label with what the model leaned to, said the same way for every label (never "confidence")
    said = r"^Result: +(Normal — model: \d+% normal|Abnormal — model: \d+% abnormal)$"
    assert re.search(said, out, re.MULTILINE), out
    assert "confidence" not in out
    assert "Heart rate:" in out and "Signal quality:" in out
    assert "Saved:" in out and "Screening support, not a diagnosis" in out
    assert "Recording 10 s from 'stethoscope'" in proc.stderr


def test_a_kit_calibrated_on_its_own_recordings_decides_at_its_threshold_and_says_so(samples_dir, tmp_path, model):
    from device.core.inference import load_model
    from device.core.local_threshold import LocalThreshold

    clf = load_model(model)
    thresholds = tmp_path / "thresholds"
    LocalThreshold(clf.info.name, clf.info.version, clf.info.sha256, 0.2, clf.model_threshold,
                   {"normal": 30, "abnormal": 12}, 0.52, 0.63, "2026-11-20T10:00:00Z").write(thresholds)  # fmt: skip
    home, config, _ = bedside(tmp_path, samples_dir / "a0405.flac", model)
    config.write_text(config.read_text().replace("[models]\n", f'[models]\nthreshold_dir = "{thresholds}"\n'))
    proc = steth(home, "record", "--patient", "P-1", "--site", "mitral", "--seconds", "10", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "Threshold:       set on this kit's 42 labelled recordings (2026-11-20)" in proc.stdout
    stored = outbox_results(tmp_path)[0]
    assert stored["decision"]["threshold"] == 0.2 and stored["decision"]["labelled"]["abnormal"] == 12
    assert contract.errors("result", stored) == []


def test_a_silent_stethoscope_gets_unsure_and_a_reason_to_record_again(tmp_path, model):
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(2000 * 12, dtype=np.float32), 2000, subtype="PCM_16")
    home, config, _ = bedside(tmp_path, silent, model)
    proc = steth(home, "record", "--patient", "P-1", "--site", "aortic", "--seconds", "10", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    # the reason in words and the model's leaning; what to do said once, without a trailing "record again"
    assert re.search(r"^Result: +Unsure — poor signal: silent \(RMS -\d+ dBFS\)\. Model: \d+% (normal|abnormal)$",
                     proc.stdout, re.MULTILINE), proc.stdout  # fmt: skip
    assert "Record again:    check that the stethoscope is on the chest, connected and not muted;" in proc.stdout
    assert "confidence" not in proc.stdout and proc.stdout.lower().count("record again") == 1
    assert outbox_results(tmp_path)[0]["label"] == "unsure"  # kept too: the physician sees the attempt


def test_a_missing_stethoscope_is_a_clear_error_listing_the_inputs(samples_dir, tmp_path, model):
    home, config, _ = bedside(tmp_path, samples_dir / "a0405.flac", model)
    config.write_text(config.read_text().replace('input_device = "stethoscope"', 'input_device = "Littmann"'))
    proc = steth(home, "record", "--patient", "P-1", "--site", "aortic", "--seconds", "10", "--config", str(config))
    assert proc.returncode == 2
    assert "'Littmann' not found" in proc.stderr and "stethoscope_file" in proc.stderr
    assert outbox_results(tmp_path) == []


def test_bad_arguments_are_refused_before_recording(tmp_path):
    home = alsa_home(tmp_path, {})
    proc = steth(home, "record", "--patient", "Jane Doe", "--site", "mitral")
    assert proc.returncode == 2 and "never a name" in proc.stderr
    proc = steth(home, "record", "--patient", "P-1", "--site", "elbow")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = steth(home, "record", "--patient", "P-1", "--site", "mitral", "--seconds", "2")
    assert proc.returncode == 2 and "between 5 and 300" in proc.stderr


def test_record_can_deliver_at_once(samples_dir, tmp_path, model, mqtt_broker):
    home, config, _ = bedside(tmp_path, samples_dir / "a0405.flac", model, url=mqtt_broker.url)
    sub = Subscriber(mqtt_broker.port)
    try:
        proc = steth(home, "record", "--patient", "P-1", "--site", "pulmonic", "--seconds", "10",
                     "--config", str(config), "--json", "--send", "10")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        rid = json.loads(proc.stdout)["results"][0]["result_id"]
        assert sub.wait_for({rid}) == set()
        assert "Delivered." in proc.stderr
        assert sub.results[rid]["site"] == "pulmonic"
    finally:
        sub.close()
    assert outbox_results(tmp_path) == []


def test_record_leaves_delivery_to_a_running_device_service(samples_dir, tmp_path, model, mqtt_broker):
    # both would connect with the device's client id and take the session from each other
    home, config, _ = bedside(tmp_path, samples_dir / "a0405.flac", model, url=mqtt_broker.url)
    with DeliveryLock(tmp_path / "state" / "outbox.sqlite") as service:
        assert service.acquire()
        proc = steth(home, "record", "--patient", "P-1", "--site", "pulmonic", "--seconds", "10",
                     "--config", str(config), "--json", "--send", "10")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "The device service is running: it delivers the result." in proc.stderr
    rid = json.loads(proc.stdout)["results"][0]["result_id"]
    assert [r["result_id"] for r in outbox_results(tmp_path)] == [rid], "saved, and left for the service"
