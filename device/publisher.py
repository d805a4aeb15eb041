"""Delivering the outbox over MQTT: QoS 1, and a message leaves the outbox only once the broker has it.

One thread owns the MQTT client and its own outbox connection and drives the network loop itself
(``client.loop()``), so the acknowledgement callback deletes the acknowledged row from the same thread
that published it. Reconnection is ours, not paho's: bounded exponential backoff with jitter, from the
very first attempt, so a device that boots with the link down simply keeps trying.

Within one process a message is published once; paho resends it after a reconnect, with the same
packet id, until the broker acknowledges it. After a crash or restart everything still in the outbox
is published again: a message the broker had but whose acknowledgement was lost then arrives twice,
with the same ``result_id``, which receivers de-duplicate (contract.md).

The device's status topic is retained, with a last will of ``offline`` (contract.offline_will), and an
``online`` status carrying the outbox counters is refreshed when they change and every
``broker.status_interval_s``.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from device import __version__, contract
from device.config import BrokerConfig
from device.outbox import Outbox, OutboxError, Pending

log = logging.getLogger(__name__)

CONNACK_TIMEOUT_S = 15.0
POLL_EMPTY_S = 0.25  # how often an empty outbox is looked at again (other processes add to it)
STATUS_MIN_GAP_S = 2.0
HOLD_REFUSED_S = 60.0  # a message the broker refused (MQTT 5 reason code) is retried after this
CHECK_FILE_S = 5.0
MAX_AUDIO_IN_FLIGHT = 2  # recordings are megabytes each: bound the memory they take while in flight


class OutboxReplacedError(OutboxError):
    """The outbox file was replaced under us (set aside as corrupt by another process)."""


class Backoff:
    """Exponential delays from ``min_s`` to ``max_s``, each scaled by a random factor in [0.5, 1]."""

    def __init__(self, min_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        self.min_s, self.max_s, self.rng = min_s, max_s, rng
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.max_s, self.min_s * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return delay * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.attempt = 0


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Publisher:
    """Drains one outbox to the broker. Call ``step()`` in a loop (or ``run(stop)``), then ``close()``."""

    def __init__(
        self,
        broker: BrokerConfig,
        device_id: str,
        outbox: Outbox,
        *,
        max_inflight: int = 10,
        models: Callable[[], list[dict[str, str]]] = list,
        client_id: str | None = None,
        announce: bool = True,
    ) -> None:
        self.broker = broker
        self.device_id = device_id
        self.outbox = outbox
        self.max_inflight = max_inflight
        self.models = models
        self.announce = announce  # False for a one-off sender: no status, no last will
        self.heartbeat = time.monotonic()
        self.started = time.monotonic()
        self.state = "down"  # down -> connecting -> up
        self.published = 0
        self.acknowledged = 0
        self.refused = 0
        self._backoff = Backoff(broker.reconnect_min_s, broker.reconnect_max_s)
        self._next_attempt = 0.0
        self._connect_started = 0.0
        self._inflight: dict[int, Pending] = {}
        self._held: dict[int, float] = {}  # seq -> monotonic time to retry
        self._next_poll = 0.0
        self._next_file_check = time.monotonic() + CHECK_FILE_S
        self._last_status = -1e9
        self._last_status_outbox: dict[str, int] | None = None
        self._status_topic = contract.status_topic(device_id)
        self._client = self._make_client(client_id or device_id)

    # -- client -----------------------------------------------------------------------------------------

    def _make_client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if self.announce:
            client.will_set(self._status_topic, contract.offline_will(self.device_id), qos=1, retain=True)
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password())
        if self.broker.tls:
            client.tls_set(
                ca_certs=str(self.broker.ca_file) if self.broker.ca_file else None,
                certfile=str(self.broker.cert_file) if self.broker.cert_file else None,
                keyfile=str(self.broker.key_file) if self.broker.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect(self) -> None:
        self._connect_started = time.monotonic()
        try:
            self._client.connect(self.broker.host, self.broker.port, self.broker.keepalive_s, clean_start=True)
        except ssl.SSLError as exc:
            self._lost(f"TLS with {self.broker.url} failed: {exc} (check broker.ca_file, cert_file, key_file)")
            return
        except OSError as exc:
            self._lost(f"cannot reach {self.broker.url}: {exc}")
            return
        self.state = "connecting"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            hint = " (check broker.username and the password)" if "authori" in str(reason).lower() else ""
            self._lost(f"the broker refused the connection: {reason}{hint}")
            client.disconnect()
            return
        self.state = "up"
        self._backoff.reset()
        stats = self.outbox.stats()
        log.info(
            "connected to %s; %d result(s) and %d audio waiting",
            self.broker.url,
            stats.pending_results,
            stats.pending_audio,
        )
        if self.announce:
            self._publish_status("online")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.state not in ("down", "closed"):
            self._lost(f"disconnected: {reason}")

    def _lost(self, why: str) -> None:
        was = self.state
        self.state = "down"
        delay = self._backoff.next()
        self._next_attempt = time.monotonic() + delay
        level = logging.WARNING if was == "up" or self._backoff.attempt <= 1 else logging.INFO
        log.log(
            level,
            "broker link down (%s); %d message(s) in flight stay in the outbox; retrying in %.1f s",
            why,
            len(self._inflight),
            delay,
        )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        item = self._inflight.pop(mid, None)
        if item is None:
            return  # a status message
        if reason is not None and reason.is_failure:
            # MQTT 5 tells us the broker did not take it (e.g. not authorised by its ACL): keep it, retry later.
            log.error("the broker refused %s %s: %s; kept, retrying later", item.kind, item.result_id, reason)
            self.refused += 1
            self._held[item.seq] = time.monotonic() + HOLD_REFUSED_S
            return
        self.acknowledged += 1
        self.outbox.ack(item)
        log.debug("broker acknowledged %s %s", item.kind, item.result_id)

    # -- the loop ---------------------------------------------------------------------------------------

    def step(self, timeout: float = 0.2) -> None:
        """One round: (re)connect when due, run the network loop, publish what waits."""
        now = time.monotonic()
        self.heartbeat = now
        if now >= self._next_file_check:
            self._next_file_check = now + CHECK_FILE_S
            if self.outbox.replaced():
                raise OutboxReplacedError(
                    f"the outbox {self.outbox.path} was replaced by a fresh one (the old one was set aside)",
                    "restart the service so every part uses the new file (systemd does this by itself)",
                )
        if self.state == "down":
            if now < self._next_attempt:
                time.sleep(min(timeout, self._next_attempt - now))
                return
            self._connect()
            if self.state == "down":
                return
        rc = self._client.loop(timeout=timeout)
        if rc != mqtt.MQTT_ERR_SUCCESS and self.state != "down":
            self._lost(mqtt.error_string(rc))
        if self.state == "connecting" and time.monotonic() - self._connect_started > CONNACK_TIMEOUT_S:
            self._client.disconnect()
            self._lost(f"no answer from {self.broker.url} within {CONNACK_TIMEOUT_S:.0f} s")
        if self.state == "up":
            self._fill()
            if self.announce:
                self._status_if_due()

    def _fill(self) -> None:
        room = self.max_inflight - len(self._inflight)
        now = time.monotonic()
        if room <= 0 or now < self._next_poll:
            return
        self._held = {seq: t for seq, t in self._held.items() if t > now}
        exclude = [item.seq for item in self._inflight.values()] + list(self._held)
        audio_room = MAX_AUDIO_IN_FLIGHT - sum(item.kind == "audio" for item in self._inflight.values())
        items = self.outbox.pending(room, exclude=exclude, max_audio=max(0, audio_room))
        if len(items) < room:
            self._next_poll = now + POLL_EMPTY_S
        for item in items:
            info = self._client.publish(item.topic, item.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST):
                log.error("could not publish %s %s: %s", item.kind, item.result_id, mqtt.error_string(info.rc))
                self._held[item.seq] = now + HOLD_REFUSED_S
                continue
            # NO_CONN, CONN_LOST (the link broke as it was written; found by the drills, which saw it held
            # for a minute and then sent twice): paho keeps a QoS 1 message and sends it after the
            # reconnect, so it is in flight too
            self._inflight[info.mid] = item
            self.published += 1

    def status_message(self, state: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "schema_version": contract.SCHEMA_VERSION,
            "device_id": self.device_id,
            "state": state,
            "at": utc_now(),
            "software_version": __version__,
            "outbox": self.outbox.stats().for_status(),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
        models = self.models()
        if models:
            message["models"] = models
        return message

    def _publish_status(self, state: str) -> mqtt.MQTTMessageInfo:
        message = self.status_message(state)
        self._last_status = time.monotonic()
        self._last_status_outbox = message["outbox"]
        return self._client.publish(self._status_topic, contract.encode("status", message), qos=1, retain=True)

    def _status_if_due(self) -> None:
        since = time.monotonic() - self._last_status
        if since >= self.broker.status_interval_s or (
            since >= STATUS_MIN_GAP_S and self.outbox.stats().for_status() != self._last_status_outbox
        ):
            self._publish_status("online")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()

    def pending(self) -> int:
        stats = self.outbox.stats()
        return stats.pending_results + stats.pending_audio

    def drain(self, timeout: float) -> bool:
        """Publish until the outbox is empty or ``timeout`` passes; True when everything was delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step(timeout=0.1)
            if self.state == "up" and not self._inflight and self.pending() == 0:
                return True
        return False

    def close(self, grace_s: float = 3.0) -> None:
        """Wait briefly for acknowledgements in flight, say ``offline``, disconnect cleanly."""
        if self.state == "up":
            deadline = time.monotonic() + grace_s
            while self._inflight and self.state == "up" and time.monotonic() < deadline:
                self._client.loop(timeout=0.1)
            if self.announce and self.state == "up":
                info = self._publish_status("offline")
                deadline = time.monotonic() + 2.0
                while not info.is_published() and self.state == "up" and time.monotonic() < deadline:
                    self._client.loop(timeout=0.1)
            if self._inflight:
                log.info("%d message(s) still unacknowledged at shutdown stay in the outbox", len(self._inflight))
        self.state = "closed"
        self._client.disconnect()
        self._client.loop(timeout=0.1)
