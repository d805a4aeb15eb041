"""The ingest worker against a real Mosquitto, as a real process, on the test database."""

from __future__ import annotations

import hashlib
import json
import signal

import pytest

from dashboard.clinic.models import DeadLetter, Device, Recording, Result
from device.core import contract
from tests.dashboard.conftest import result_message
from tests.dashboard.workers import Publisher, Worker, wait_until
from tests.support.broker import Broker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def workers(broker):
    started: list[Worker] = []

    def start(client_id: str = "svc.ingest.1", **kwargs) -> Worker:
        w = Worker(broker.url, client_id, **kwargs).start()
        started.append(w)
        return w

    yield start
    for w in started:
        if w.alive():
            w.stop()


@pytest.fixture
def device(broker, device_a):
    pub = Publisher(broker.url)
    yield pub
    pub.close()


def _results() -> int:
    return Result.objects.count()


def test_valid_messages_land_once_with_audio_and_status(workers, device, device_a, sample_flac):
    worker = workers().wait_ready()
    digest = hashlib.sha256(sample_flac).hexdigest()
    msg = result_message(audio={"format": "flac", "sha256": digest, "bytes": len(sample_flac)})
    status = {**contract.EXAMPLE_STATUS, "device_id": device_a.device_id, "software_version": "0.4.0"}
    device.publish(contract.status_topic(device_a.device_id), contract.encode("status", status), retain=True)
    device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))
    device.publish(contract.audio_topic(device_a.device_id, msg["result_id"]), sample_flac)
    wait_until(lambda: Recording.objects.count() == 1 and _results() == 1, what="result and audio")
    wait_until(lambda: Device.objects.get().state == "online", what="status")
    assert Result.objects.get().recording.sha256 == digest
    assert Device.objects.get().software_version == "0.4.0"
    stats = worker.stop()
    assert stats == {"result_created": 1, "audio_created": 1, "status": 1}, stats


def test_duplicates_and_replays_change_nothing(workers, device, device_a):
    worker = workers().wait_ready()
    messages = [result_message(patient_ref=f"P-{i}") for i in range(5)]
    for msg in messages:
        device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))
    wait_until(lambda: _results() == 5, what="5 results")
    before = {str(r.result_id): (r.received_at, r.message) for r in Result.objects.all()}
    for _ in range(3):  # a device replaying its outbox, and a broker redelivering
        for msg in messages:
            device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))
    worker.wait_for(r"already stored \(duplicate\)", count=15)
    stats = worker.stop()
    assert stats.get("result_created") == 5 and stats.get("result_duplicate") == 15, stats
    after = {str(r.result_id): (r.received_at, r.message) for r in Result.objects.all()}
    assert after == before and DeadLetter.objects.count() == 0


def test_bad_messages_land_in_dead_letters_and_the_worker_goes_on(workers, device, device_a):
    worker = workers().wait_ready()
    topic = contract.results_topic(device_a.device_id)
    device.publish(topic, b"{not json")
    device.publish(topic, json.dumps({**result_message(), "schema_version": 3}))  # a version not yet known
    device.publish(topic, b"x" * (contract.MAX_RESULT_BYTES + 1))
    device.publish(contract.results_topic("ghost-7"), contract.encode("result", result_message("ghost-7")))
    device.publish(topic, contract.encode("result", result_message()))  # a good one after the bad ones
    wait_until(lambda: _results() == 1 and DeadLetter.objects.count() == 4, what="1 result and 4 dead letters")
    reasons = sorted(DeadLetter.objects.values_list("reason", flat=True))
    assert reasons == ["malformed", "oversized", "unknown_device", "wrong_schema_version"]
    assert worker.alive()
    stats = worker.stop()
    assert stats["result_created"] == 1 and sum(v for k, v in stats.items() if k.startswith("dead_")) == 4


def test_messages_published_while_the_worker_is_down_all_land(workers, device, device_a):
    worker = workers("svc.ingest.persistent").wait_ready()
    worker.stop()
    messages = [result_message(patient_ref=f"P-{i}") for i in range(20)]
    for msg in messages:
        device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))
    assert _results() == 0
    worker = workers("svc.ingest.persistent")  # same client id: the broker kept its session and messages
    wait_until(lambda: _results() == 20, what="20 results after restart")
    assert "session resumed" in worker.log
    assert {str(r) for r in Result.objects.values_list("result_id", flat=True)} == {m["result_id"] for m in messages}


def test_a_killed_worker_loses_nothing_it_had_not_stored(workers, device, device_a):
    worker = workers("svc.ingest.crash").wait_ready()
    messages = [result_message(patient_ref=f"K-{i}") for i in range(30)]
    for msg in messages:
        device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))
    worker.stop(signal.SIGKILL)  # whatever it had not acknowledged is redelivered
    workers("svc.ingest.crash")
    wait_until(lambda: _results() == 30, what="30 results after a crash")


def test_two_workers_on_a_shared_subscription_store_every_message_exactly_once(workers, device, device_a):
    first, second = workers("svc.ingest.a").wait_ready(), workers("svc.ingest.b").wait_ready()
    messages = [result_message(patient_ref=f"S-{i}") for i in range(40)]
    for msg in messages:
        device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))
    wait_until(lambda: _results() == 40, what="40 results")
    a, b = first.stop(), second.stop()
    assert a.get("result_created", 0) + b.get("result_created", 0) == 40, (a, b)
    assert a.get("result_duplicate", 0) + b.get("result_duplicate", 0) == 0, (a, b)
    assert a.get("result_created", 0) > 0 and b.get("result_created", 0) > 0, "the stream was not shared"
    by_worker = dict.fromkeys(("svc.ingest.a", "svc.ingest.b"), 0)
    for who in Result.objects.values_list("ingested_by", flat=True):
        by_worker[who] += 1
    assert by_worker == {"svc.ingest.a": a["result_created"], "svc.ingest.b": b["result_created"]}


def test_the_worker_waits_for_a_broker_that_is_not_up_yet_and_survives_its_restart(tmp_path, workers, device_a):
    broker = Broker(tmp_path / "late")
    worker = Worker(broker.url, "svc.ingest.late").start()
    try:
        worker.wait_for("cannot reach the MQTT broker", count=2)  # first connect failed, and it retried
        broker.start()
        worker.wait_ready()
        pub = Publisher(broker.url)
        pub.publish(contract.results_topic(device_a.device_id), contract.encode("result", result_message()))
        wait_until(lambda: _results() == 1, what="first result")
        pub.close()
        broker.restart()
        worker.wait_ready(count=2)
        pub = Publisher(broker.url)
        pub.publish(contract.results_topic(device_a.device_id), contract.encode("result", result_message()))
        wait_until(lambda: _results() == 2, what="result after the broker restart")
        pub.close()
    finally:
        if worker.alive():
            worker.stop()
        broker.stop()


def test_nothing_is_lost_while_the_database_is_unreachable(workers, device, device_a):
    """PostgreSQL going away (a restart): the worker retries the same message and acknowledges nothing
    it has not stored; when the database is back every message lands exactly once."""
    from django.db import connection

    from tests.dashboard.workers import database_url, worker_env
    from tests.support.tcpproxy import TcpProxy

    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass (STETH_TEST_DB=postgresql; test_postgresql.py starts it)")
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"], int(db["PORT"] or 5432)).start()
    url = database_url().replace(f"@{db['HOST']}:{db['PORT'] or 5432}/", f"@127.0.0.1:{proxy.port}/")
    try:
        worker = workers("svc.ingest.db", env=worker_env(url)).wait_ready()
        topic = contract.results_topic(device_a.device_id)
        device.publish(topic, contract.encode("result", result_message(patient_ref="before")))
        wait_until(lambda: _results() == 1, what="the first result")
        proxy.cut()
        during = [result_message(patient_ref=f"during-{i}") for i in range(10)]
        for msg in during:
            device.publish(topic, contract.encode("result", msg))
        worker.wait_for("database unavailable", count=2)
        assert _results() == 1 and worker.alive()
        proxy.restore()
        wait_until(lambda: _results() == 11, timeout=30, what="the results published during the outage")
        stats = worker.stop()
        assert stats["result_created"] == 11 and stats.get("result_duplicate", 0) == 0, stats
        assert stats["database_retries"] >= 2
        assert DeadLetter.objects.count() == 0
    finally:
        proxy.stop()


def test_two_workers_sharing_an_exams_results_and_their_repeats_make_one_exam_each(workers, device, device_a):
    """Ten exams of four sites, each result published twice, spread over two workers: every exam once,
    with all four results and an answer computed from all of them (the exam row lock serialises refreshes)."""
    from dashboard.clinic.models import Exam

    first, second = workers("svc.ingest.a").wait_ready(), workers("svc.ingest.b").wait_ready()
    sites = ("aortic", "pulmonic", "tricuspid", "mitral")
    messages = [
        result_message(
            exam_id=f"EX-{e}",
            site=site,
            patient_ref=f"P-{e}",
            label="abnormal" if e == 3 and site != "aortic" else "normal",
            probabilities={"normal": 0.2, "abnormal": 0.8}
            if e == 3 and site != "aortic"
            else {"normal": 0.9, "abnormal": 0.1},
        )
        for e in range(10)
        for site in sites
    ]
    for msg in messages + messages:
        device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))
    try:
        wait_until(lambda: _results() == 40, timeout=60, what="40 results")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- svc.ingest.a:\n{first.log[-2000:]}\n--- svc.ingest.b:\n{second.log[-2000:]}"
        ) from None
    a, b = first.stop(), second.stop()
    assert a.get("result_created", 0) + b.get("result_created", 0) == 40, (a, b)
    exams = {e.exam_id: e for e in Exam.objects.all()}
    assert sorted(exams) == sorted(f"EX-{e}" for e in range(10))
    assert all(e.n_results == 4 and Result.objects.filter(exam=e).count() == 4 for e in exams.values())
    assert {k: e.label for k, e in exams.items() if e.label != "normal"} == {"EX-3": "abnormal"}
    # the mean over all four sites ((3 x 0.8 + 0.1) / 4); a refresh that missed one result gives 0.8 or 0.567
    assert exams["EX-3"].answer["probabilities"]["abnormal"] == 0.625
