from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import soundfile as sf

from dashboard.clinic.models import DeadLetter, Device, Recording, Result
from dashboard.clinic.recordings import RecordingConflictError, playback_file, save_recording
from dashboard.clinic.records import store_result
from dashboard.lib.backoff import Backoff
from device.core.errors import UnreadableAudioError
from tests.dashboard.conftest import result_message

pytestmark = pytest.mark.django_db


def test_it_stores_a_result_once_and_reports_duplicates(device_a):
    msg = result_message()
    first = store_result(msg, device=device_a, clinic=device_a.clinic, ingested_by="w1")
    again = store_result(msg, device=device_a, clinic=device_a.clinic, ingested_by="w2")
    assert (first.outcome, again.outcome) == ("created", "duplicate")
    row = Result.objects.get()
    assert str(row.result_id) == msg["result_id"] and row.ingested_by == "w1"
    assert row.model_sha256 == msg["model"]["sha256"] and row.message == msg
    assert row.clinic == device_a.clinic and row.location == "mitral" and row.heart_rate_bpm == 72.5


def test_it_keeps_the_first_result_when_an_id_is_reused_with_other_content(device_a):
    msg = result_message()
    store_result(msg, device=device_a, clinic=device_a.clinic)
    changed = {**msg, "label": "normal"}
    assert store_result(changed, device=device_a, clinic=device_a.clinic).outcome == "conflict"
    assert Result.objects.get().label == "abnormal"


def test_dead_letters_are_counted_not_duplicated_and_shown_safely():
    payload = b'{"a": "\x00\xff"}' + b"x" * (DeadLetter.PAYLOAD_KEEP + 10)
    DeadLetter.record(reason="malformed", topic="steth/v1/devices/x/results", payload=payload, detail="bad\x00")
    letter = DeadLetter.record(reason="malformed", topic="steth/v1/devices/x/results", payload=payload, detail="bad")
    letter.refresh_from_db()
    assert DeadLetter.objects.count() == 1 and letter.count == 2
    assert letter.payload_bytes == len(payload) and len(bytes(letter.payload)) == DeadLetter.PAYLOAD_KEEP
    assert "\x00" not in letter.detail and "\\x00" in letter.detail
    assert "\x00" not in letter.preview and "\\x00" in letter.preview and "bytes in all" in letter.preview


def test_the_latest_status_wins_whatever_the_order(device_a):
    now = datetime.now(UTC)
    device_a.apply_status(
        {
            "schema_version": 1,
            "device_id": device_a.device_id,
            "state": "online",
            "at": now.isoformat(),
            "software_version": "0.2.0",
            "models": [{"name": "m", "version": "1", "sha256": "0" * 64}],
        },
        now,
    )
    older = {
        "schema_version": 1,
        "device_id": device_a.device_id,
        "state": "offline",
        "at": (now - timedelta(minutes=5)).isoformat(),
    }
    device_a.apply_status(older, now)
    device = Device.objects.get()
    assert device.state == "online" and device.software_version == "0.2.0" and device.model_names == "m 1"
    device.apply_status(
        {"schema_version": 1, "device_id": device.device_id, "state": "offline"}, now + timedelta(seconds=1)
    )
    assert Device.objects.get().state == "offline"


def test_it_stores_a_recording_once_and_refuses_a_different_one_for_the_same_result(settings, tmp_path, sample_flac):
    settings.MEDIA_ROOT = tmp_path
    rid = uuid.uuid4()
    first = save_recording(rid, sample_flac, fmt="flac", device_id="pi")
    again = save_recording(rid, sample_flac, fmt="flac", device_id="pi")
    assert first.created and not again.created and Recording.objects.count() == 1
    rec = Recording.objects.get()
    assert (tmp_path / rec.file.name).read_bytes() == sample_flac and rec.sample_rate == 2000
    other = _flac(np.zeros(4000) + 0.1, 2000)
    with pytest.raises(RecordingConflictError, match="already has a different recording"):
        save_recording(rid, other, fmt="flac")


def test_it_refuses_a_recording_that_is_not_audio(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    with pytest.raises(UnreadableAudioError, match="not a readable WAV or FLAC"):
        save_recording(uuid.uuid4(), b"%PDF-1.7\n" + b"0" * 1000, fmt="flac")
    assert Recording.objects.count() == 0 and not any(tmp_path.rglob("*.flac"))


def test_the_playback_copy_is_a_wav_browsers_can_play(settings, tmp_path, sample_flac):
    settings.MEDIA_ROOT = tmp_path
    rec = save_recording(uuid.uuid4(), sample_flac, fmt="flac").recording
    path = playback_file(rec)
    info = sf.info(str(path))
    assert info.format == "WAV" and info.samplerate >= 8000
    assert abs(info.duration - rec.duration_s) < 0.01
    data, _ = sf.read(str(path))
    assert 0.85 < np.max(np.abs(data)) <= 0.91
    assert playback_file(rec) == path  # made once


def test_a_result_awaits_review_when_abnormal_or_unsure_and_unreviewed(device_a, physician):
    abnormal = store_result(result_message(), device=device_a, clinic=device_a.clinic).result
    normal = store_result(
        result_message(label="normal", probabilities={"normal": 0.9, "abnormal": 0.1}),
        device=device_a,
        clinic=device_a.clinic,
    ).result
    assert abnormal.awaiting_review and not normal.awaiting_review
    abnormal.add_review(physician, agrees=True, label="abnormal", note="murmur")
    assert not abnormal.awaiting_review and abnormal.latest_review.note == "murmur"


def test_backoff_grows_with_jitter_and_stays_bounded():
    b = Backoff(initial=0.5, maximum=8)
    delays = [b.next() for _ in range(200)]
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0
    assert all(d <= 8 for d in delays) and max(delays[10:]) > 4 and len(set(delays)) > 100
    b.reset()
    assert b.next() <= 0.5


def _flac(samples, rate):
    import io

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="FLAC")
    return buf.getvalue()
