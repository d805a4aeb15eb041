"""Delivery acknowledgements: ingest tells each device, after the commit, what of its messages is stored;
the device's outbox lets a result go only then. Real Mosquitto, real worker processes, the test database."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from dashboard.clinic.models import DeadLetter, Result
from dashboard.ingest.acks import ack_messages, result_id_of
from device.core import contract
from device.edge.config import BrokerConfig
from device.edge.outbox import Entry, Outbox
from device.edge.publisher import Publisher as DevicePublisher
from tests.dashboard.conftest import result_message
from tests.dashboard.workers import Publisher, Worker, wait_until
from tests.support.broker import Broker

# -- which messages of a batch are acknowledged, to whom (no broker, no database) -------------------------


def _payload(message: dict) -> bytes:
    return contract.encode("result", message)


def test_every_stored_message_is_acknowledged_to_its_own_device_once():
    a, b = result_message("pi-a"), result_message("pi-b")
    audio_id = str(uuid.uuid4())
    batch = [
        (contract.results_topic("pi-a"), _payload(a)),
        (contract.results_topic("pi-a"), _payload(a)),  # the same twice in a batch: named once
        (contract.results_topic("pi-b"), _payload(b)),
        (contract.audio_topic("pi-a", audio_id), b"fLaC"),
        (contract.status_topic("pi-a"), contract.encode("status", {**contract.EXAMPLE_STATUS, "device_id": "pi-a"})),
        (contract.results_topic("pi-b"), b"{not json"),  # a dead letter naming no result: nothing to ack
        (contract.audio_topic("pi-b", "not-a-uuid"), b"fLaC"),
        ("elsewhere/topic", _payload(a)),
    ]
    outcomes = ["result_created", "result_duplicate", "dead_unknown_device", "audio_created", "status",
                "dead_malformed", "dead_bad_topic", "dead_bad_topic"]  # fmt: skip
    acks = {topic: contract.decode("ack", payload, max_bytes=contract.MAX_ACK_BYTES) for topic, payload in
            ack_messages(batch, outcomes)}  # fmt: skip
    assert acks == {
        contract.acks_topic("pi-a"): {"schema_version": 1, "device_id": "pi-a", "result_ids": [a["result_id"]],
                                       "audio_ids": [audio_id]},
        contract.acks_topic("pi-b"): {"schema_version": 1, "device_id": "pi-b", "result_ids": [b["result_id"]],
                                       "audio_ids": []},
    }  # fmt: skip


def test_a_big_batch_is_split_into_acks_the_contract_accepts():
    messages = [result_message("pi-a") for _ in range(contract.MAX_ACK_IDS + 10)]
    acks = ack_messages([(contract.results_topic("pi-a"), _payload(m)) for m in messages],
                        ["result_created"] * len(messages))  # fmt: skip
    decoded = [contract.decode("ack", payload) for _, payload in acks]
    assert [len(d["result_ids"]) for d in decoded] == [contract.MAX_ACK_IDS, 10]
    assert [rid for d in decoded for rid in d["result_ids"]] == [m["result_id"] for m in messages]


def test_the_result_id_is_the_one_a_receiver_would_store():
    message = result_message()
    assert result_id_of(_payload(message)) == message["result_id"]
    spaced = json.dumps(message, indent=2).encode()
    assert result_id_of(spaced) == message["result_id"]
    # the key twice (JSON keeps the last): the payload is parsed, not searched
    twice = b'{"result_id":"' + str(uuid.uuid4()).encode() + b'",' + _payload(message)[1:]
    assert result_id_of(twice) == message["result_id"]
    assert result_id_of(b'{"result_id": "not-a-uuid"}') is None
    assert result_id_of(b'["result_id"]') is None


# -- a real worker publishes them after the commit ----------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


class AckListener:
    """Subscribes to every device's acks topic; keeps (device, "result_ids"/"audio_ids", id) of each."""

    def __init__(self, port: int) -> None:
        self.got: list[tuple[str, str, str]] = []
        self.invalid: list[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(f"{contract.TOPIC_ROOT}/+/acks", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = contract.decode("ack", msg.payload)
        except Exception as exc:  # asserted empty by the test
            self.invalid.append(str(exc))
            return
        if msg.topic != contract.acks_topic(ack["device_id"]):
            self.invalid.append(f"ack for {ack['device_id']} on {msg.topic}")
        for field in ("result_ids", "audio_ids"):
            self.got += [(ack["device_id"], field, rid) for rid in ack[field]]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_worker_acknowledges_rows_duplicates_and_dead_letters_after_storing_them(broker, device_a, sample_flac):
    listener = AckListener(broker.port)
    worker = Worker(broker.url, "svc.ingest.acks").start().wait_ready()
    device = Publisher(broker.url)
    try:
        dev = device_a.device_id
        stored = result_message(dev)
        invalid = {**result_message(dev), "label": ""}  # refused by the contract: kept as a dead letter
        stranger = result_message("not-registered")  # an unknown device: a dead letter too
        status = contract.encode("status", {**contract.EXAMPLE_STATUS, "device_id": dev})
        device.publish(contract.results_topic(dev), contract.encode("result", stored))
        device.publish(contract.results_topic(dev), contract.encode("result", stored))  # a re-send
        device.publish(contract.results_topic(dev), json.dumps(invalid).encode())
        device.publish(contract.results_topic("not-registered"), contract.encode("result", stranger))
        device.publish(contract.audio_topic(dev, stored["result_id"]), sample_flac)
        device.publish(contract.status_topic(dev), status)  # not in any outbox: never acknowledged
        device.publish(contract.results_topic(dev), b"{not json")  # names no result: nothing to acknowledge
        expected = {
            (dev, "result_ids", stored["result_id"]),
            (dev, "result_ids", invalid["result_id"]),
            ("not-registered", "result_ids", stranger["result_id"]),
            (dev, "audio_ids", stored["result_id"]),
        }
        wait_until(lambda: expected <= set(listener.got), what="the acks")
        stats = worker.stop()
        assert stats == {"result_created": 1, "result_duplicate": 1, "dead_invalid": 1, "dead_unknown_device": 1,
                         "audio_created": 1, "status": 1, "dead_malformed": 1}, stats  # fmt: skip
        assert Result.objects.filter(pk=stored["result_id"]).exists()
        assert DeadLetter.objects.count() == 3
        assert set(listener.got) == expected  # nothing else, the duplicate acknowledged too
        assert listener.invalid == []
    finally:
        device.close()
        listener.close()
        if worker.alive():
            worker.stop()


def outbox_of(device_id: str, folder: Path, n: int) -> Outbox:
    """A device's outbox holding ``n`` results waiting to be sent."""
    box = Outbox(folder / "outbox.sqlite", folder / "audio", 16 * 1024 * 1024)
    box.add([Entry(result_message(device_id, patient_ref=f"P-{i}")) for i in range(n)])
    return box


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_device_outbox_empties_only_through_ingest_acks(broker, device_a, tmp_path):
    """The real device publisher and the real worker: PUBACK marks sent, ingest's ack deletes."""
    box = outbox_of(device_a.device_id, tmp_path, 20)
    config = BrokerConfig(url=broker.url, reconnect_min_s=0.1, reconnect_max_s=0.5, ack_timeout_s=30)
    publisher = DevicePublisher(config, device_a.device_id, box)
    worker: Worker | None = None
    try:
        # no ingest subscribed yet: the broker takes every result (PUBACK) and, with no subscriber, drops
        # it; a broker losing what it acknowledged, as Mosquitto 2.0.11 does over a restart
        assert not publisher.drain(3)
        stats = box.stats()
        assert (stats.pending_results, stats.awaiting_ack, stats.delivered_results) == (20, 20, 0)
        assert Result.objects.count() == 0
        publisher.close()
        # ingest starts; the device comes back and, after its ack timeout, sends them again
        worker = Worker(broker.url, "svc.ingest.1").start().wait_ready()
        config = BrokerConfig(url=broker.url, reconnect_min_s=0.1, reconnect_max_s=0.5, ack_timeout_s=1)
        publisher = DevicePublisher(config, device_a.device_id, box)
        assert publisher.drain(60), box.stats()
        assert Result.objects.count() == 20
        stats = box.stats()
        assert (stats.pending_results, stats.awaiting_ack, stats.delivered_results) == (0, 0, 20)
        assert publisher.resent >= 20 and publisher.confirmed == 20
    finally:
        publisher.close()
        box.close()
        if worker is not None and worker.alive():
            worker.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_running_device_sends_again_at_once_when_ingest_announces_itself(broker, device_a, tmp_path):
    """What the broker dropped while no worker was subscribed (Mosquitto 2.0.11's shared-subscription hole)
    goes again as soon as a worker says it is online, not after the device's ack timeout (60 s here)."""
    box = outbox_of(device_a.device_id, tmp_path, 20)
    config = BrokerConfig(url=broker.url, reconnect_min_s=0.1, reconnect_max_s=0.5, ack_timeout_s=60)
    publisher = DevicePublisher(config, device_a.device_id, box)
    worker: Worker | None = None
    try:
        assert not publisher.drain(3)  # no worker: every result PUBACKed and dropped
        assert box.stats().awaiting_ack == 20 and Result.objects.count() == 0
        worker = Worker(broker.url, "svc.ingest.announce").start().wait_ready()
        ready = time.monotonic()
        assert publisher.drain(30), box.stats()  # the same running publisher, its timeout far off
        took = time.monotonic() - ready
        assert Result.objects.count() == 20 and box.stats().delivered_results == 20
        assert publisher.ingest_announcements == 1 and publisher.resent == 20
        assert took < 15, f"{took:.1f} s after the worker was ready"
    finally:
        publisher.close()
        box.close()
        if worker is not None and worker.alive():
            worker.stop()
