"""The publisher against a real Mosquitto: delivery, status, outages, reconnect at boot."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device import contract
from device.config import BrokerConfig
from device.outbox import Entry, Outbox
from device.publisher import Backoff, Publisher
from tests.device.outbox_support import Subscriber, make_result
from tests.device.outbox_support import broker as broker_at

DEVICE = "pi-test"


class Running:
    """A publisher on its own thread, as the daemon runs it."""

    def __init__(self, url: str, tmp: Path, **kwargs) -> None:
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
        broker = BrokerConfig(url=self.url, reconnect_min_s=0.1, reconnect_max_s=0.5, status_interval_s=1)
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
