"""Storing messages in batches (Ingestor.handle_batch) gives each message the outcome ``handle`` gives it."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection

from dashboard.clinic.models import DeadLetter, Device, Result
from dashboard.clinic.records import insert_new
from device.core import contract
from tests.dashboard.conftest import INGESTOR_ID, result_message

pytestmark = pytest.mark.django_db

TOPIC = contract.results_topic("clinic-a-pi-01")


def _encode(msg):
    return contract.encode("result", msg)


def test_a_batch_stores_every_result_once_and_marks_the_device_seen(ingestor, device_a):
    messages = [result_message(patient_ref=f"P-{i}") for i in range(10)]
    outcomes = ingestor.handle_batch([(TOPIC, _encode(m)) for m in messages])
    assert outcomes == ["result_created"] * 10
    stored = {str(r.result_id): r for r in Result.objects.all()}
    assert set(stored) == {m["result_id"] for m in messages}
    for m in messages:
        row = stored[m["result_id"]]
        assert row.message == m and row.patient_ref == m["patient_ref"] and row.ingested_by == INGESTOR_ID
        assert row.device == device_a and row.clinic == device_a.clinic and row.windows == m["windows"]
    assert Device.objects.get().last_seen is not None
    assert ingestor.stats == {"result_created": 10}


def test_a_batch_gives_each_message_the_outcome_handle_would(ingestor, device_a):
    first = result_message()
    ingestor.handle(TOPIC, _encode(first))  # stored earlier: arrives again as a duplicate
    conflicting = {**first, "label": "normal"}
    new = result_message()
    batch = [
        (TOPIC, _encode(new)),
        (TOPIC, _encode(first)),
        (TOPIC, _encode(conflicting)),
        (TOPIC, b"{not json"),
        (contract.results_topic("ghost-7"), _encode(result_message("ghost-7"))),
        (TOPIC, _encode(new)),  # the same result twice in one batch (a redelivery)
        (TOPIC, _encode({**new, "label": "unsure"})),  # and a different one with its id
        (contract.status_topic(device_a.device_id), contract.encode("status", {**contract.EXAMPLE_STATUS,
                                                                             "device_id": device_a.device_id})),
        ("elsewhere/topic", b"{}"),
    ]  # fmt: skip
    outcomes = ingestor.handle_batch(batch)
    assert outcomes == [
        "result_created",
        "result_duplicate",
        "dead_conflict",
        "dead_malformed",
        "dead_unknown_device",
        "result_duplicate",
        "dead_conflict",
        "status",
        "dead_bad_topic",
    ]
    assert Result.objects.count() == 2 and Result.objects.get(pk=first["result_id"]).message == first
    assert Result.objects.get(pk=new["result_id"]).message == new
    reasons = sorted(DeadLetter.objects.values_list("reason", flat=True))
    assert reasons == ["bad_topic", "conflict", "conflict", "malformed", "unknown_device"]
    assert Device.objects.get().state == "online"


def test_insert_new_says_which_rows_it_stored(device_a):
    rows = []
    for _ in range(3):
        msg = result_message()
        rows.append(Result(result_id=uuid.UUID(msg["result_id"]), device=device_a, clinic=device_a.clinic,
                           **Result.fields_from_message(msg)))  # fmt: skip
    assert insert_new(rows[:1]) == {rows[0].result_id}
    assert insert_new(rows) == {rows[1].result_id, rows[2].result_id}  # the first is there already
    assert insert_new(rows) == set()
    assert Result.objects.count() == 3
    back = Result.objects.get(pk=rows[2].result_id)
    assert back.message == rows[2].message and back.recorded_at == rows[2].recorded_at


def test_the_last_seen_time_never_moves_backwards(ingestor, device_a):
    ingestor.handle_batch([(TOPIC, _encode(result_message())) for _ in range(2)])
    seen = Device.objects.get().last_seen
    Device.objects.update(last_seen=seen.replace(year=seen.year + 1))
    ingestor.handle_batch([(TOPIC, _encode(result_message())) for _ in range(2)])
    assert Device.objects.get().last_seen.year == seen.year + 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="only PostgreSQL refuses a NUL in JSON text")
def test_a_result_the_database_refuses_fails_the_batch_so_the_worker_can_store_one_by_one(ingestor, device_a):
    from django.db import DatabaseError

    good = result_message()
    bad = result_message(quality={"score": 0.5, "ok": False, "issues": ["nul \u0000 here"]})
    with pytest.raises(DatabaseError):
        ingestor.handle_batch([(TOPIC, _encode(good)), (TOPIC, json.dumps(bad).encode())])
    assert Result.objects.count() == 0  # nothing of the batch is half stored
    assert ingestor.handle(TOPIC, _encode(good)) == "result_created"
