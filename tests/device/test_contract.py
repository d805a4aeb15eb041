from __future__ import annotations

import copy
import json

import pytest

from device.core import contract
from device.core.errors import ContractError


def test_the_examples_are_valid():
    assert contract.errors("result", contract.EXAMPLE_RESULT) == []
    assert contract.errors("status", contract.EXAMPLE_STATUS) == []
    assert json.loads(contract.offline_will("pi-1")) == {
        "schema_version": 1,
        "device_id": "pi-1",
        "state": "offline",
    }


def test_topics_are_versioned_per_device_and_parse_back():
    assert contract.results_topic("pi-1") == "steth/v1/devices/pi-1/results"
    assert contract.parse_topic("steth/v1/devices/pi-1/status") == ("pi-1", "status", None)
    assert contract.parse_topic(contract.audio_topic("pi-1", "abc")) == ("pi-1", "audio", "abc")
    assert contract.shared(contract.ALL_RESULTS) == "$share/ingest/steth/v1/devices/+/results"
    for bad in (
        "steth/v1/devices/pi-1/other",
        "steth/v2/devices/pi-1/results",
        "steth/v1/devices/PI/results",
    ):
        with pytest.raises(ContractError):
            contract.parse_topic(bad)
    with pytest.raises(ContractError, match="invalid device id"):
        contract.results_topic("../etc")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("result_id",), "not-a-uuid", "result_id:"),
        (("probabilities", "abnormal"), 1.7, "probabilities.abnormal: 1.7 is greater than the maximum of 1"),
        (("heart_rate_bpm",), "fast", "heart_rate_bpm: 'fast' is not of type"),
        (("site",), "knee", "site: 'knee' is not one of"),
        (("model", "sha256"), "xyz", "model.sha256:"),
        (("recorded_at",), "yesterday", "recorded_at:"),
        (("quality", "score"), -1, "quality.score:"),
    ],
)
def test_each_bad_field_gets_a_readable_error(path, value, expected):
    msg = copy.deepcopy(contract.EXAMPLE_RESULT)
    target = msg
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = contract.errors("result", msg)
    assert any(e.startswith(expected) for e in errors), errors


def test_missing_and_unknown_fields_are_reported():
    msg = copy.deepcopy(contract.EXAMPLE_RESULT)
    del msg["label"]
    msg["colour"] = "red"
    errors = " ".join(contract.errors("result", msg))
    assert "'label' is a required property" in errors and "'colour' was unexpected" in errors


def test_decode_refuses_non_json_wrong_version_and_oversized():
    with pytest.raises(ContractError, match="not JSON"):
        contract.decode("result", b"\xff{")
    with pytest.raises(ContractError, match="schema_version 3"):
        contract.decode("result", json.dumps({**contract.EXAMPLE_RESULT, "schema_version": 3}))
    with pytest.raises(ContractError, match="exceeds"):
        contract.decode("result", b" " * (contract.MAX_RESULT_BYTES + 1))
    with pytest.raises(ContractError, match="JSON object"):
        contract.decode("status", b"[1, 2]")


def test_encode_refuses_what_a_receiver_would_refuse_and_round_trips():
    payload = contract.encode("result", contract.EXAMPLE_RESULT)
    assert contract.decode("result", payload) == contract.EXAMPLE_RESULT
    with pytest.raises(ContractError):
        contract.encode("result", {**contract.EXAMPLE_RESULT, "label": ""})


def test_refused_and_ingest_status_messages_and_topics():
    assert contract.errors("refused", contract.EXAMPLE_REFUSED) == []
    assert contract.errors("ingest_status", contract.EXAMPLE_INGEST_STATUS) == []
    assert contract.parse_topic(contract.refused_topic("pi-1")) == ("pi-1", "refused", None)
    assert contract.ingest_status_topic("svc.ingest.h-1") == "steth/v1/ingest/svc.ingest.h-1/status"
    # online without a start id, a reason that is no code, an unknown field: refused
    online = {k: v for k, v in contract.EXAMPLE_INGEST_STATUS.items() if k != "start_id"}
    assert any("start_id" in e for e in contract.errors("ingest_status", online))
    assert contract.errors("ingest_status", json.loads(contract.ingest_offline_will("svc.ingest.h-1"))) == []
    assert contract.errors("refused", {**contract.EXAMPLE_REFUSED, "reason": "Too Short"})
    assert contract.errors("refused", {**contract.EXAMPLE_REFUSED, "patient_name": "X"})
    # a worker's id is a topic level and never a device's
    for bad in ("pi-1", "svc/ingest", "svc.ingest.+", "", "a" * 65):
        with pytest.raises(ContractError):
            contract.check_worker_id(bad)
