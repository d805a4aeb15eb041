"""Helpers for the delivery tests: contract-valid results and an MQTT subscriber that counts them."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt

from device import contract


def make_result(device_id: str = "pi-test", **changes: Any) -> dict[str, Any]:
    """The contract's example result with a fresh uuid4 (valid against result.v1.json)."""
    result = copy.deepcopy(contract.EXAMPLE_RESULT)
    result.update(result_id=str(uuid.uuid4()), device_id=device_id, **changes)
    return result


class Subscriber:
    """Subscribes to every device topic on a broker and keeps what arrives, by result_id."""

    def __init__(self, port: int, topics: tuple[str, ...] = (contract.ALL_RESULTS, contract.ALL_STATUS)) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.arrivals: Counter[str] = Counter()  # MQTT-level deliveries per result_id (QoS 1 may repeat)
        self.invalid: list[str] = []
        self.status: list[dict[str, Any]] = []
        self.audio: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.topics = topics
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("subscriber could not connect")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        time.sleep(0.2)  # let SUBACKs land before a test starts publishing
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        _, kind, rest = contract.parse_topic(msg.topic)
        with self._lock:
            if kind == "results":
                try:
                    result = contract.decode("result", msg.payload)
                except Exception as exc:  # recorded, asserted empty by the tests
                    self.invalid.append(f"{exc}")
                    return
                self.arrivals[result["result_id"]] += 1
                self.results[result["result_id"]] = result
            elif kind == "status":
                self.status.append(json.loads(msg.payload) | {"_retained": bool(msg.retain)})
            elif kind == "audio" and rest:
                self.audio[rest] = bytes(msg.payload)

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
