"""Helpers for the delivery tests: contract-valid results and an MQTT subscriber that counts them."""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from device.core import contract
from tests.support.broker import Broker


def broker(workdir: Path, port: int | None = None) -> Broker:
    """A Mosquitto whose persistence works when the tests run as root.

    As root, mosquitto drops to the ``mosquitto`` user, which cannot write the test's private folder: the
    session store and log would silently not be written. ``user root`` keeps it able to (as another user
    the setting is ignored). Persistence matters here: sessions must survive a broker restart.
    """
    # queues as deep as production's (deploy/mosquitto/mosquitto.conf): with Mosquitto's default of 1000 a
    # reader slower than a draining device (the tests' Subscriber playing ingest) loses messages to it
    extra = "allow_anonymous true\nmax_queued_messages 100000\n" + ("user root\n" if os.geteuid() == 0 else "")
    return Broker(workdir, extra_config=extra) if port is None else Broker(workdir, port=port, extra_config=extra)


def make_result(device_id: str = "pi-test", **changes: Any) -> dict[str, Any]:
    """The contract's example result with a fresh uuid4 (valid against the current result schema)."""
    result = copy.deepcopy(contract.EXAMPLE_RESULT)
    result.update(result_id=str(uuid.uuid4()), device_id=device_id, **changes)
    return result


class Subscriber:
    """Subscribes to every device topic on a broker and keeps what arrives, by result_id.

    A persistent MQTT 5 session (clean_start False, an hour's expiry) that reconnects by itself, as an
    ingest worker does: across a broker restart it misses nothing the broker stored for it. With ``ack``
    (the default) it also plays ingest's part in delivery: every result and recording it receives is
    acknowledged on the device's acks topic, so the device deletes it from its outbox.
    """

    def __init__(
        self,
        port: int,
        topics: tuple[str, ...] = (contract.ALL_RESULTS, contract.ALL_STATUS),
        auth: tuple[str, str] | None = None,
        ack: bool = True,
    ) -> None:
        self.ack = ack
        self.acks_sent = 0
        self.results: dict[str, dict[str, Any]] = {}
        self.arrivals: Counter[str] = Counter()  # MQTT-level deliveries per result_id (QoS 1 may repeat)
        self.invalid: list[str] = []
        self.status: list[dict[str, Any]] = []
        self.audio: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(0.1, 0.5)
        if auth:
            self.client.username_pw_set(*auth)
        self.topics = topics
        props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber could not connect and subscribe")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if not self._connected.is_set():
            for topic in self.topics:
                client.subscribe(topic, qos=1)
            self._connected.set()

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        device_id, kind, rest = contract.parse_topic(msg.topic)
        with self._lock:
            if kind == "results":
                try:
                    result = contract.decode("result", msg.payload)
                except Exception as exc:  # recorded, asserted empty by the tests
                    self.invalid.append(f"{exc}")
                    return
                self.arrivals[result["result_id"]] += 1
                self.results[result["result_id"]] = result
                self._ack(device_id, result_ids=[result["result_id"]])
            elif kind == "status":
                self.status.append(json.loads(msg.payload) | {"_retained": bool(msg.retain)})
            elif kind == "audio" and rest:
                self.audio[rest] = bytes(msg.payload)
                self._ack(device_id, audio_ids=[rest])

    def _ack(self, device_id: str, result_ids: list[str] = [], audio_ids: list[str] = []) -> None:  # noqa: B006 - never mutated
        if self.ack:
            message = {"schema_version": 1, "device_id": device_id, "result_ids": result_ids, "audio_ids": audio_ids}
            self.client.publish(contract.acks_topic(device_id), contract.encode("ack", message), qos=1)
            self.acks_sent += 1

    def wait_for(self, result_ids: set[str], timeout: float = 30.0) -> set[str]:
        """Wait until every id has arrived; returns the ids still missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                missing = result_ids - set(self.results)
            if not missing:
                return set()
            time.sleep(0.05)
        with self._lock:
            return result_ids - set(self.results)

    def wait_until(self, predicate: Any, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self):
                    return True
            time.sleep(0.05)
        return False

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.arrivals.values())

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
