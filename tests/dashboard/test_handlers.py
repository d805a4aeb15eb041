"""What ingest does with each kind of message (the worker's MQTT side is in test_ingest.py)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from dashboard.clinic.models import DeadLetter, Device, Recording, Result
from device.core import contract
from tests.dashboard.conftest import INGESTOR_ID, result_message

pytestmark = pytest.mark.django_db

TOPIC = contract.results_topic("clinic-a-pi-01")


def _only_letter():
    assert DeadLetter.objects.count() == 1, list(DeadLetter.objects.values_list("reason", "detail"))
    return DeadLetter.objects.get()


def test_a_valid_result_lands_and_marks_the_device_seen(ingestor, device_a):
    msg = result_message()
    assert ingestor.handle(TOPIC, contract.encode("result", msg)) == "result_created"
    assert ingestor.handle(TOPIC, contract.encode("result", msg)) == "result_duplicate"
    assert Result.objects.get().ingested_by == INGESTOR_ID
    assert Device.objects.get().last_seen is not None and DeadLetter.objects.count() == 0


DECISION = {
    "source": "local",
    "threshold": 0.31,
    "model_threshold": 0.534,
    "labelled": {"normal": 28, "abnormal": 12},
    "set_at": "2026-11-26T09:00:00Z",
}


def test_a_result_decided_at_a_local_threshold_lands_with_it(ingestor, device_a):
    msg = result_message(decision=DECISION)
    assert ingestor.handle(TOPIC, contract.encode("result", msg)) == "result_created"
    assert Result.objects.get().decision == DECISION


def test_a_malformed_local_threshold_goes_to_the_dead_letters(ingestor, device_a):
    msg = {**result_message(), "decision": {**DECISION, "source": "guess"}}
    assert ingestor.handle(TOPIC, json.dumps(msg).encode()) == "dead_invalid"
    assert Result.objects.count() == 0 and "decision" in _only_letter().detail


@pytest.mark.parametrize(
    ("payload", "reason", "says"),
    [
        (b'{"schema_version": 1, "result_id": ', "malformed", "not JSON"),
        (b"[1, 2, 3]", "malformed", "JSON object"),
        (
            json.dumps({**contract.EXAMPLE_RESULT, "schema_version": 3}).encode(),  # a version not yet known
            "wrong_schema_version",
            "schema_version 3",
        ),
        (json.dumps({**contract.EXAMPLE_RESULT, "label": 7}).encode(), "invalid", "label: 7 is not of type"),
        (b" " * (contract.MAX_RESULT_BYTES + 1), "oversized", "exceeds"),
    ],
)
def test_refused_results_become_dead_letters_with_the_reason(ingestor, device_a, payload, reason, says):
    assert ingestor.handle(TOPIC, payload) == f"dead_{reason}"
    letter = _only_letter()
    assert (letter.reason, letter.topic, letter.payload_bytes) == (reason, TOPIC, len(payload))
    assert says in letter.detail and Result.objects.count() == 0


def test_an_unknown_device_is_refused_unless_auto_registration_is_on(ingestor, db):
    msg = result_message("stranger-1")
    topic = contract.results_topic("stranger-1")
    assert ingestor.handle(topic, contract.encode("result", msg)) == "dead_unknown_device"
    assert "not registered" in _only_letter().detail and Result.objects.count() == 0
    ingestor.auto_register = True
    assert ingestor.handle(topic, contract.encode("result", msg)) == "result_created"
    device = Device.objects.get()
    assert device.auto_registered and device.clinic is None and Result.objects.get().device == device


def test_a_message_for_another_devices_topic_is_refused(ingestor, device_a, device_b):
    msg = result_message("clinic-b-pi-01")
    assert ingestor.handle(TOPIC, contract.encode("result", msg)) == "dead_device_mismatch"
    assert _only_letter().device_id == "clinic-a-pi-01"


def test_a_reused_result_id_with_other_content_is_a_conflict(ingestor, device_a):
    msg = result_message()
    ingestor.handle(TOPIC, contract.encode("result", msg))
    assert ingestor.handle(TOPIC, contract.encode("result", {**msg, "label": "normal"})) == "dead_conflict"
    assert Result.objects.get().label == "abnormal"


def test_topics_outside_the_contract_are_kept(ingestor, db):
    assert ingestor.handle("steth/v1/devices/Bad Id/results", b"{}") == "dead_bad_topic"
    assert ingestor.handle(contract.commands_topic("pi-1"), b"{}") == "dead_bad_topic"
    assert DeadLetter.objects.filter(reason="bad_topic").count() == 2


def test_audio_lands_before_or_after_its_result_and_is_checked(ingestor, device_a, sample_flac):
    digest = hashlib.sha256(sample_flac).hexdigest()
    early = result_message(audio={"format": "flac", "sha256": digest, "bytes": len(sample_flac)})
    early_topic = contract.audio_topic(device_a.device_id, early["result_id"])
    assert ingestor.handle(early_topic, sample_flac) == "audio_created"  # audio first
    assert ingestor.handle(TOPIC, contract.encode("result", early)) == "result_created"
    assert ingestor.handle(early_topic, sample_flac) == "audio_duplicate"
    assert Result.objects.get().recording.sha256 == digest

    wrong = result_message(audio={"format": "flac", "sha256": "1" * 64, "bytes": len(sample_flac)})
    ingestor.handle(TOPIC, contract.encode("result", wrong))
    topic = contract.audio_topic(device_a.device_id, wrong["result_id"])
    assert ingestor.handle(topic, sample_flac) == "dead_bad_audio"
    assert "differs" in DeadLetter.objects.get(reason="bad_audio").detail
    assert ingestor.handle(contract.audio_topic(device_a.device_id, str(uuid.uuid4())), b"%PDF-1.7") == "dead_bad_audio"
    assert Recording.objects.count() == 1


def test_oversized_audio_is_refused_by_the_configured_limit(ingestor, device_a, sample_flac):
    ingestor.max_audio_bytes = 1024
    topic = contract.audio_topic(device_a.device_id, str(uuid.uuid4()))
    assert ingestor.handle(topic, sample_flac) == "dead_oversized"
    assert "STETH_MAX_AUDIO_BYTES" in _only_letter().detail


def test_status_tracks_online_offline_and_versions(ingestor, device_a):
    status = {**contract.EXAMPLE_STATUS, "device_id": device_a.device_id, "software_version": "0.3.1"}
    topic = contract.status_topic(device_a.device_id)
    assert ingestor.handle(topic, contract.encode("status", status)) == "status"
    device = Device.objects.get()
    assert (device.state, device.software_version, device.outbox["pending_results"]) == ("online", "0.3.1", 0)
    assert device.model_names == "screening-lstm 1.0.0" and device.last_seen is not None
    assert ingestor.handle(topic, contract.offline_will(device_a.device_id)) == "status"
    assert Device.objects.get().state == "offline"
    assert ingestor.handle(contract.status_topic("nobody"), contract.offline_will("nobody")) == "dead_unknown_device"
