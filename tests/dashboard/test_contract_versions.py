"""Result schema version 2 beside version 1: what a result says about its windows, and older devices.

Devices and dashboards are upgraded at different times: a device of the previous release may still hold
version 1 results in its outbox when the dashboard already speaks version 2, so ingest stores both.
tests/contract_examples/result.v1.json is such a message, as the previous release wrote it (the shipped
sound_type model on device/samples/a0405.flac: 2 s windows every second, which version 1 did not say).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from django.urls import reverse

from dashboard.clinic.models import DeadLetter, Result
from dashboard.ingest import decoding
from device.core import contract
from device.core.inference import load_model
from device.core.messages import result_message as build_result
from tests.dashboard.conftest import result_message

V1_EXAMPLE = Path(__file__).resolve().parents[1] / "contract_examples" / "result.v1.json"


@pytest.fixture
def doc(login, physician):
    return login(physician)


def _v1(device_id: str) -> dict:
    message = json.loads(V1_EXAMPLE.read_text())
    return {**message, "result_id": str(uuid.uuid4()), "device_id": device_id}


def test_versions_come_from_the_schema_files_and_topics_stay_v1():
    assert contract.versions("result") == (1, 2) and contract.current_version("result") == 2
    assert contract.current_version("status") == 1 and contract.current_version("ack") == 1
    assert contract.results_topic("pi-1") == "steth/v1/devices/pi-1/results"
    assert contract.EXAMPLE_RESULT["schema_version"] == 2


def test_a_result_says_how_long_its_windows_are(samples_dir):
    for name in ("screening", "sound_type"):
        clf = load_model(name)
        message = build_result(clf.analyse_file(samples_dir / "a0405.flac"), "pi-1")
        contract.validate("result", message)
        assert message["schema_version"] == 2
        assert (message["window_s"], message["hop_s"]) == (clf.params.window_s, clf.params.hop_s)
        starts = [w["start_s"] for w in message["windows"]]
        assert starts == [round(i * clf.params.hop_s, 3) for i in range(len(starts))]


def test_the_stored_v1_example_is_v1_and_not_v2():
    message = json.loads(V1_EXAMPLE.read_text())
    assert message["schema_version"] == 1 and "window_s" not in message
    assert contract.errors("result", message) == []
    # the same fields under version 2 are valid too: v2 only added optional fields
    assert contract.errors("result", {**message, "schema_version": 2}) == []


@pytest.mark.django_db
def test_ingest_stores_a_v1_result_from_an_outbox_and_the_page_draws_its_windows_from_the_model(
    ingestor, device_a, doc
):
    message = _v1(device_a.device_id)
    payload = json.dumps(message).encode()
    assert decoding.decode("result", payload) == message  # the compiled fast path accepts v1 as well
    assert ingestor.handle(contract.results_topic(device_a.device_id), payload) == "result_created"
    assert DeadLetter.objects.count() == 0
    result = Result.objects.get()
    assert result.message["schema_version"] == 1 and result.task == "sound_type"
    page = doc.get(reverse("result", args=[result.result_id])).content.decode()
    # not the 5 s of FeatureParams' defaults: the sound_type model's own 2 s, from its sidecar
    assert f"({len(message['windows'])} windows of 2 s)" in page
    data = json.loads(page.split('id="recording-data" type="application/json">')[1].split("</script>")[0])
    assert data["windowSeconds"] == 2.0


@pytest.mark.django_db
def test_the_page_draws_windows_as_a_v2_message_says(ingestor, device_a, doc):
    message = result_message(device_a.device_id, window_s=3.0, hop_s=1.5)
    assert ingestor.handle(contract.results_topic(device_a.device_id), contract.encode("result", message)) == (
        "result_created"
    )
    page = doc.get(reverse("result", args=[message["result_id"]])).content.decode()
    assert "windows of 3 s)" in page and '"windowSeconds": 3.0' in page


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("exam_id", "exam-2026-11-20.P777", True),
        ("exam_id", "exam with spaces", False),
        ("cycles", {"s1": [0.12, 0.95], "s2": [0.41, 1.24]}, True),
        ("cycles", {"s1": [0.1] * 1001}, False),
        ("cycles", {"s3": [0.1]}, False),
        ("murmur", {"label": "present", "probability": 0.81}, True),
        ("murmur", {"label": "unknown", "probability": None}, True),
        ("murmur", {"label": "maybe", "probability": 0.5}, False),
        ("task", "murmur_grade", True),
        ("task", "Not A Task", False),
        ("window_s", 0, False),
    ],
)
def test_the_optional_v2_fields_agreed_between_branches(field, value, valid):
    message = {**contract.EXAMPLE_RESULT, field: value}
    assert (contract.errors("result", message) == []) is valid


def test_quality_reason_is_a_short_code():
    good = {**contract.EXAMPLE_RESULT, "quality": {**contract.EXAMPLE_RESULT["quality"], "reason": "no_heart_sounds"}}
    bad = {**contract.EXAMPLE_RESULT, "quality": {**contract.EXAMPLE_RESULT["quality"], "reason": "Too noisy!"}}
    assert contract.errors("result", good) == [] and contract.errors("result", bad) != []
