"""A small synchronous MQTT 5 client for the broker tests (paho-mqtt 2.x, its own network thread)."""

from __future__ import annotations

import queue
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

WAIT_S = 10.0  # how long to wait for an answer the broker owes us (never a timing assertion)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class TestClient:
    __test__ = False  # not a pytest class

    def __init__(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
        tls: bool | None = None,
        client_id: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        elif tls or (tls is None and ca is not None):
            self.client.tls_set(ca_certs=str(ca) if ca else None, cert_reqs=ssl.CERT_REQUIRED)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connack: queue.Queue[Any] = queue.Queue()
        self.disconnected = threading.Event()
        self._acks: dict[int, queue.Queue[Any]] = {}
        self._subacks: dict[int, queue.Queue[list[Any]]] = {}
        self.client.on_connect = lambda c, u, f, reason, p: self.connack.put(reason)
        self.client.on_disconnect = lambda c, u, f, reason, p: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.put(Received(m.topic, bytes(m.payload), m.retain))
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self._lock = threading.Lock()

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            box = self._acks.setdefault(mid, queue.Queue())
        box.put(reason)

    def _on_subscribe(self, c: Any, u: Any, mid: int, reasons: list[Any], props: Any) -> None:
        with self._lock:
            box = self._subacks.setdefault(mid, queue.Queue())
        box.put(reasons)

    def connect(self) -> Any:
        """Connect and return the CONNACK reason code (raises OSError/ssl.SSLError when the link fails)."""
        self.client.connect("localhost", self.port, keepalive=30, clean_start=True)
        self.client.loop_start()
        for _ in range(int(WAIT_S / 0.05)):
            try:
                return self.connack.get(timeout=0.05)
            except queue.Empty:
                if self.disconnected.is_set():
                    raise ConnectionError(f"port {self.port} closed the connection without a CONNACK") from None
        raise ConnectionError(f"no CONNACK from port {self.port}")

    def subscribe(self, *topics: str) -> list[Any]:
        result, mid = self.client.subscribe([(t, 1) for t in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS
        with self._lock:
            box = self._subacks.setdefault(mid, queue.Queue())
        return box.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> Any:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            box = self._acks.setdefault(info.mid, queue.Queue())
        return box.get(timeout=WAIT_S)

    def wait_message(self, topic: str) -> Received:
        """The next message, which must be on ``topic``; anything else received first fails the test."""
        got = self.messages.get(timeout=WAIT_S)
        assert got.topic == topic, f"expected a message on {topic}, got one on {got.topic}: {got.payload[:80]!r}"
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
