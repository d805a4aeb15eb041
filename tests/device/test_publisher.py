"""The publisher against a real Mosquitto: delivery, status, outages, reconnect at boot."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.core import contract
from device.edge.config import BrokerConfig
from device.edge.outbox import Entry, Outbox
from device.edge.publisher import Backoff, Publisher
from tests.device.outbox_support import Subscriber, make_result
from tests.device.outbox_support import broker as broker_at

DEVICE = "pi-test"


class Running:
    """A publisher on its own thread, as the daemon runs it."""

    def __init__(self, url: str, tmp: Path, broker: dict | None = None, **kwargs) -> None:
        self.broker_settings = broker or {}
        self.stop = threading.Event()
        self.box_path = tmp / "outbox.sqlite"
        self.audio_dir = tmp / "audio"
        self.url = url
        self.kwargs = kwargs
        self.publisher: Publisher | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        box = Outbox(self.box_path, self.audio_dir, 16 * 1024 * 1024)
        broker = BrokerConfig(
            url=self.url, reconnect_min_s=0.1, reconnect_max_s=0.5, status_interval_s=1, **self.broker_settings
        )
        self.publisher = Publisher(broker, DEVICE, box, **self.kwargs)
        self.ready.set()
        try:
            self.publisher.run(self.stop)
        finally:
            self.publisher.close()
            box.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def add(tmp: Path, results: list[dict], flac: bytes | None = None) -> None:
    """Add from a separate connection, as `steth record` (another process) does."""
    with Outbox(tmp / "outbox.sqlite", tmp / "audio", 16 * 1024 * 1024, check=False) as box:
        box.add([Entry(r, flac=flac) for r in results])


def waiting(tmp: Path) -> int:
    """Messages still in the outbox (read from a connection of our own)."""
    with Outbox(tmp / "outbox.sqlite", tmp / "audio", 16 * 1024 * 1024, check=False) as box:
        stats = box.stats()
    return stats.pending_results + stats.pending_audio


def wait_empty(tmp: Path, timeout: float = 30.0) -> bool:
    """Until ingest's acks (here the Subscriber's) have emptied the outbox."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if waiting(tmp) == 0:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def subscriber(mqtt_broker) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_broker.port, topics=(contract.ALL_RESULTS, contract.ALL_STATUS, contract.ALL_AUDIO))
    yield sub
    sub.close()


def test_backoff_is_bounded_and_jittered():
    backoff = Backoff(1.0, 30.0)
    delays = [backoff.next() for _ in range(12)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert max(delays) > 14  # it grows
    assert len({round(d, 6) for d in delays[6:]}) > 1  # capped ones still differ: jitter
    backoff.reset()
    assert backoff.next() <= 1.0


def test_it_delivers_every_result_and_empties_the_outbox(mqtt_broker, subscriber, tmp_path):
    results = [make_result(DEVICE) for _ in range(25)]
    add(tmp_path, results)
    running = Running(mqtt_broker.url, tmp_path)
    try:
        ids = {r["result_id"] for r in results}
        assert subscriber.wait_for(ids) == set()
        assert subscriber.invalid == []
        assert all(subscriber.results[r["result_id"]] == r for r in results)
        assert subscriber.wait_until(lambda s: s.status and s.status[-1]["outbox"]["pending_results"] == 0)
    finally:
        running.close()
    with Outbox(tmp_path / "outbox.sqlite", tmp_path / "audio", 1 << 24) as box:
        stats = box.stats()
        assert stats.pending_results == 0 and stats.delivered_results == 25
    assert subscriber.duplicates == 0


def test_status_is_retained_online_with_counters_then_offline_at_a_clean_stop(mqtt_broker, subscriber, tmp_path):
    running = Running(mqtt_broker.url, tmp_path, models=lambda: [{"name": "m", "version": "1", "sha256": "a" * 64}])
    result = make_result(DEVICE)
    add(tmp_path, [result])
    assert subscriber.wait_for({result["result_id"]}) == set()  # connected, status published
    late = Subscriber(mqtt_broker.port)  # joins after the status was published: gets the retained one
    try:
        assert late.wait_until(lambda s: bool(s.status))
        online = late.status[0]
        assert online["state"] == "online" and online["_retained"]
        online.pop("_retained")
        assert contract.errors("status", online) == []
        assert online["models"][0]["name"] == "m" and set(online["outbox"]) >= {"dropped_results", "pending_results"}
        running.close()
        assert late.wait_until(lambda s: s.status[-1]["state"] == "offline")
        assert late.status[-1]["outbox"]["pending_results"] == 0
    finally:
        late.close()
    again = Subscriber(mqtt_broker.port)
    try:
        assert again.wait_until(lambda s: bool(s.status))
        assert again.status[-1]["state"] == "offline" and again.status[-1]["_retained"]
    finally:
        again.close()


def test_audio_goes_on_its_own_topic_after_the_result(mqtt_broker, subscriber, tmp_path):
    result = make_result(DEVICE)
    flac = b"fLaC" + bytes(range(256)) * 40
    add(tmp_path, [result], flac=flac)
    running = Running(mqtt_broker.url, tmp_path)
    try:
        assert subscriber.wait_until(lambda s: result["result_id"] in s.audio)
        assert subscriber.audio[result["result_id"]] == flac
        assert result["result_id"] in subscriber.results
        assert wait_empty(tmp_path)
    finally:
        running.close()
    assert list((tmp_path / "audio").glob("*.flac")) == []


def test_it_keeps_trying_when_the_broker_is_unreachable_at_boot(tmp_path):
    broker = broker_at(tmp_path / "broker").start()
    sub = Subscriber(broker.port)  # its session outlives the broker's restart (persistence)
    broker.stop()
    results = [make_result(DEVICE) for _ in range(5)]
    add(tmp_path, results)
    running = Running(broker.url, tmp_path)
    try:
        time.sleep(2.0)  # several failed attempts
        assert running.publisher is not None and running.publisher.state == "down"
        assert running.publisher.pending() == 5
        broker.start()
        assert sub.wait_for({r["result_id"] for r in results}, timeout=20) == set()
    finally:
        running.close()
        sub.close()
        broker.stop()


def test_a_broker_outage_mid_stream_loses_nothing(tmp_path):
    broker = broker_at(tmp_path / "broker").start()
    sub = Subscriber(broker.port)
    running = Running(broker.url, tmp_path)
    sent: list[str] = []
    try:
        for i in range(60):
            result = make_result(DEVICE)
            add(tmp_path, [result])
            sent.append(result["result_id"])
            if i == 20:
                broker.stop()  # mid-stream
            if i == 40:
                broker.start()
            time.sleep(0.03)
        assert sub.wait_for(set(sent)) == set()
        assert sub.invalid == []
        assert wait_empty(tmp_path), "acknowledged results are still in the outbox"
    finally:
        running.close()
        sub.close()
        broker.stop()
    with Outbox(tmp_path / "outbox.sqlite", tmp_path / "audio", 1 << 24) as box:
        stats = box.stats()
        assert stats.pending_results == 0 and stats.delivered_results == 60
    # QoS 1 may repeat a message whose acknowledgement the outage cut off; never more than those in flight
    assert sub.duplicates <= 10


def test_results_dropped_for_space_are_counted_in_the_status(mqtt_broker, tmp_path):
    with Outbox(tmp_path / "outbox.sqlite", tmp_path / "audio", 1024 * 1024) as box:
        for _ in range(300):
            result = make_result(DEVICE, quality={"score": 0.5, "ok": False, "issues": ["z" * 200] * 16})
            box.add([Entry(result)])
        dropped = box.stats().dropped_results
    assert dropped > 0
    sub = Subscriber(mqtt_broker.port)
    running = Running(mqtt_broker.url, tmp_path)
    try:
        assert sub.wait_until(lambda s: any(m["state"] == "online" for m in s.status))
        online = next(m for m in sub.status if m["state"] == "online")
        assert online["outbox"]["dropped_results"] == dropped
        assert sub.wait_until(lambda s: len(s.results) == 300 - dropped)
    finally:
        running.close()
        sub.close()


def test_a_message_the_broker_refuses_stays_in_the_outbox(tmp_path):
    """MQTT 5 PUBACK with 'not authorised': not delivered, so not deleted (and said loudly)."""
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {contract.status_topic(DEVICE)}\ntopic read #\n")
    mosquitto = broker_at(tmp_path / "broker")
    mosquitto.extra_config += f"acl_file {acl}\n"
    mosquitto.start()
    result = make_result(DEVICE)
    add(tmp_path, [result])
    running = Running(mosquitto.url, tmp_path)
    try:
        assert running.publisher is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not running.publisher.refused:
            time.sleep(0.05)
        assert running.publisher.refused == 1, "the broker's refusal was not noticed"
        assert running.publisher.pending() == 1
    finally:
        running.close()
        mosquitto.stop()
    with Outbox(tmp_path / "outbox.sqlite", tmp_path / "audio", 1 << 24) as box:
        assert box.result_ids() == [result["result_id"]]


# -- end-to-end acknowledgements ---------------------------------------------------------------------------


def awaiting(tmp: Path) -> int:
    with Outbox(tmp / "outbox.sqlite", tmp / "audio", 16 * 1024 * 1024, check=False) as box:
        return box.stats().awaiting_ack


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def send_ack(port: int, result_ids: list[str], audio_ids: list[str] = []) -> None:  # noqa: B006 - never mutated
    """Ingest's part, by hand: an ack for DEVICE naming these ids."""
    ack = {"schema_version": 1, "device_id": DEVICE, "result_ids": result_ids, "audio_ids": audio_ids}
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sender.connect("127.0.0.1", port)
    sender.loop_start()
    try:
        info = sender.publish(contract.acks_topic(DEVICE), contract.encode("ack", ack), qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        sender.disconnect()
        sender.loop_stop()


def test_the_brokers_puback_alone_keeps_a_result_until_ingest_acknowledges_it(mqtt_broker, tmp_path):
    sub = Subscriber(mqtt_broker.port, ack=False)  # takes the results, acknowledges nothing
    result = make_result(DEVICE)
    add(tmp_path, [result])
    running = Running(mqtt_broker.url, tmp_path)
    try:
        assert sub.wait_for({result["result_id"]}) == set()
        assert wait_for(lambda: awaiting(tmp_path) == 1)
        assert waiting(tmp_path) == 1
        assert sub.wait_until(lambda s: s.status[-1]["outbox"].get("awaiting_ack") == 1)
        send_ack(mqtt_broker.port, [str(uuid.uuid4())])  # an id it never held: harmless
        send_ack(mqtt_broker.port, [result["result_id"]])
        assert wait_empty(tmp_path)
        send_ack(mqtt_broker.port, [result["result_id"]])  # the same ack again: harmless
        assert sub.wait_until(lambda s: s.status[-1]["outbox"].get("awaiting_ack") == 0)
        assert running.publisher is not None and running.publisher.confirmed == 1
    finally:
        running.close()
        sub.close()
    assert sub.arrivals[result["result_id"]] == 1  # acknowledged within the timeout: never sent again


def test_a_result_without_an_ack_is_sent_again_after_the_timeout_also_after_a_restart(mqtt_broker, tmp_path):
    sub = Subscriber(mqtt_broker.port, ack=False)
    result = make_result(DEVICE)
    add(tmp_path, [result])
    running = Running(mqtt_broker.url, tmp_path, broker={"ack_timeout_s": 1})
    try:
        assert sub.wait_until(lambda s: s.arrivals[result["result_id"]] >= 2)  # sent, then sent again
    finally:
        running.close()
    before = sub.arrivals[result["result_id"]]
    assert waiting(tmp_path) == 1 and awaiting(tmp_path) == 1  # what the broker took survives the restart
    running = Running(mqtt_broker.url, tmp_path, broker={"ack_timeout_s": 1})
    try:
        assert sub.wait_until(lambda s: s.arrivals[result["result_id"]] > before)
        send_ack(mqtt_broker.port, [result["result_id"]])
        assert wait_empty(tmp_path)
        assert running.publisher is not None and running.publisher.resent >= 1
    finally:
        running.close()
        sub.close()


def test_acks_sent_while_the_device_was_offline_arrive_when_it_reconnects(mqtt_broker, tmp_path):
    sub = Subscriber(mqtt_broker.port, ack=False)
    results = [make_result(DEVICE) for _ in range(3)]
    add(tmp_path, results)
    running = Running(mqtt_broker.url, tmp_path)  # the default timeout (60 s): no re-send in this test
    try:
        assert sub.wait_for({r["result_id"] for r in results}) == set()
        assert wait_for(lambda: awaiting(tmp_path) == 3)
    finally:
        running.close()
    send_ack(mqtt_broker.port, [r["result_id"] for r in results])  # the device is offline
    assert waiting(tmp_path) == 3
    running = Running(mqtt_broker.url, tmp_path)  # its persistent session kept the ack
    try:
        assert wait_empty(tmp_path)
    finally:
        running.close()
        sub.close()
    assert all(sub.arrivals[r["result_id"]] == 1 for r in results)


def test_after_a_long_ingest_outage_re_sends_go_a_window_at_a_time(mqtt_broker, tmp_path):
    results = [make_result(DEVICE) for _ in range(30)]
    with Outbox(tmp_path / "outbox.sqlite", tmp_path / "audio", 16 * 1024 * 1024) as box:
        box.add([Entry(r) for r in results])
        box.mark_sent(box.pending(limit=100))  # the broker took them all; ingest never answered
        box._db.execute("UPDATE messages SET sent_at = sent_at - 3600")
    sub = Subscriber(mqtt_broker.port, ack=False)
    running = Running(mqtt_broker.url, tmp_path, max_inflight=5)
    try:
        assert sub.wait_until(lambda s: len(s.arrivals) == 5)
        time.sleep(1.5)  # the window stays full: no ack, and the 60 s timeout is far away
        assert len(sub.arrivals) == 5
        send_ack(mqtt_broker.port, list(sub.arrivals))
        assert sub.wait_until(lambda s: len(s.arrivals) == 10)  # acks free the window
        send_ack(mqtt_broker.port, [r["result_id"] for r in results])
        assert wait_empty(tmp_path)
    finally:
        running.close()
        sub.close()
    assert sub.duplicates == 0


def test_acks_from_the_broker_delete_on_puback_when_configured(mqtt_broker, tmp_path):
    sub = Subscriber(mqtt_broker.port, ack=False)
    results = [make_result(DEVICE) for _ in range(5)]
    add(tmp_path, results)
    running = Running(mqtt_broker.url, tmp_path, broker={"delivery_ack": "broker"})
    try:
        assert sub.wait_for({r["result_id"] for r in results}) == set()
        assert wait_empty(tmp_path)
    finally:
        running.close()
        sub.close()
