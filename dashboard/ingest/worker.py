"""The ingest loop: small steps with a shutdown flag, one thread, nothing acknowledged before it is stored.

Why manual acknowledgements: paho acknowledges a QoS 1 message as soon as ``on_message`` returns, so
a message whose database write failed would be gone. Here ``on_message`` only queues the delivery;
the loop stores it and then acknowledges. When the database is unavailable the loop retries that
same message with bounded, jittered backoff, keeping the MQTT connection alive in between (the broker
sends at most ``receive_maximum`` unacknowledged messages and holds the rest in our session). If the
worker stops, or the connection drops, before a message is stored, it is never acknowledged and the
broker delivers it again: at-least-once delivery, made exactly-once in effect by idempotent writes.

Under load, everything already waiting on the socket is read and stored in batches (one transaction
each, see Ingestor.handle_batch) and acknowledged after the commit; a message arriving alone is stored
alone, with no waiting for company.

Two acknowledgements follow each commit: the MQTT one to the broker, and an application one to each
device whose messages the batch stored (acks.py; QoS 1 on the device's acks topic). The device deletes
a result from its outbox only on the second, so a broker that loses a message after acknowledging it to
the device (Mosquitto 2.0.11 with shared subscriptions over a restart) costs a re-send, not a result.

Each time its subscriptions are in place (every start, every reconnect) the worker publishes a retained
``online`` status with a new ``start_id`` on ``steth/v1/ingest/{client id}/status`` (its last will, and its
clean stop, say ``offline``). Devices read it and send again at once whatever awaits ingest's ack: Mosquitto
2.0.11 does not queue messages for a shared subscription while no member of the group is subscribed (after
a broker restart, before the workers are back), and without this those messages waited for the device's
ack timeout (60 s).

Deliveries are tagged with the connection they came on: after a reconnect, packet ids restart, so an
acknowledgement for an old delivery could acknowledge a different message. Old ones are dropped
unacknowledged instead; the broker redelivers them on the new connection.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connections

from dashboard.clinic.models import DeadLetter
from dashboard.ingest.acks import ack_messages
from dashboard.ingest.handlers import Ingestor
from dashboard.ingest.mqtt import BrokerConfig, BrokerUnavailableError, connect, new_client, subscriptions
from dashboard.lib.backoff import Backoff
from device.core import contract

log = logging.getLogger(__name__)

CONNACK_TIMEOUT_S = 10.0
LOOP_TIMEOUT_S = 0.2


@dataclass(frozen=True)
class Delivery:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes


class IngestWorker:
    def __init__(
        self, config: BrokerConfig, ingestor: Ingestor, *, max_backoff_s: float = 30.0, batch_size: int = 1
    ) -> None:
        self.config = config
        self.ingestor = ingestor
        self.max_backoff_s = max_backoff_s
        self.batch_size = max(1, batch_size)  # 1: one transaction per message
        self.stop_requested = threading.Event()
        self.pending: deque[Delivery] = deque()
        self.generation = 0  # bumped on every successful CONNACK
        self.connected = False
        self.connecting_since: float | None = None
        self.acks_sent = 0  # ack messages published to devices (not an outcome: kept out of ingestor.stats)
        self.start_id: str | None = None  # of the last "online" announcement
        self.status_topic = contract.ingest_status_topic(config.client_id)  # refuses a device-like client id
        self.client = new_client(config)
        self.client.will_set(self.status_topic, contract.ingest_offline_will(config.client_id), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # -- paho callbacks (run inside client.loop(), on this same thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connecting_since = None
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self.config.where, reason)
            return
        self.connected = True
        self.generation += 1
        self.pending = deque(d for d in self.pending if d.generation == self.generation)
        log.info(
            "connected to %s as %s (session %s)",
            self.config.where,
            self.config.client_id,
            "resumed" if flags.session_present else "new",
        )
        client.subscribe(subscriptions())

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused subscriptions: %s (check the ingest user's ACL)", ", ".join(failed))
        else:
            self._announce("online")
            log.info("ingest ready: subscribed as %s (start %s)", self.config.client_id, self.start_id)

    def _announce(self, state: str) -> mqtt.MQTTMessageInfo:
        """Retained status: ``online`` with a new start_id once subscribed (devices re-send what awaits an
        ack), ``offline`` at a clean stop (the last will says it when the connection just drops)."""
        message: dict[str, Any] = {
            "schema_version": contract.SCHEMA_VERSION,
            "worker": self.config.client_id,
            "state": state,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if state == "online":
            self.start_id = str(uuid.uuid4())
            message["start_id"] = self.start_id
        return self.client.publish(self.status_topic, contract.encode("ingest_status", message), qos=1, retain=True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected:
            log.warning("disconnected from %s: %s", self.config.where, reason)
        self.connected = False
        self.connecting_since = None

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.pending.append(Delivery(self.generation, msg.mid, msg.qos, msg.topic, bytes(msg.payload)))

    # -- the loop
    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

    def run(self) -> dict[str, int]:
        """Until asked to stop: stay connected, store what arrives. Returns the outcome counts."""
        backoff = Backoff(maximum=self.max_backoff_s)
        first = True
        try:
            while not self.stop_requested.is_set():
                if not self.connected and self.connecting_since is None:
                    if not first:  # every reconnect waits, so a refusing broker is not hammered
                        self._pause(backoff.next())
                    first = False
                    if self.stop_requested.is_set() or not self._try_connect():
                        continue
                self.client.loop(timeout=LOOP_TIMEOUT_S)
                if self.connecting_since and time.monotonic() - self.connecting_since > CONNACK_TIMEOUT_S:
                    log.warning("no CONNACK from %s within %.0f s; reconnecting", self.config.where, CONNACK_TIMEOUT_S)
                    self.client.disconnect()
                    self.connecting_since = None
                if self.connected:
                    backoff.reset()
                    self._read_more()
                    self._drain()
        finally:
            self._close()
        return dict(self.ingestor.stats)

    def _try_connect(self) -> bool:
        try:
            connect(self.client, self.config)
        except BrokerUnavailableError as exc:
            log.warning("%s; will retry", exc.message)
            return False
        self.connecting_since = time.monotonic()
        return True

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once for a stop request; keep the connection serviced while connected."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.connected:
                self.client.loop(timeout=min(left, LOOP_TIMEOUT_S))
            else:
                self.stop_requested.wait(min(left, LOOP_TIMEOUT_S))

    def _read_more(self) -> None:
        """Take every message already waiting on the socket (``loop`` reads one packet per call), so a
        busy stream is stored in batches; never waits."""
        for _ in range(self.batch_size - len(self.pending)):
            before = len(self.pending)
            # paho's loop_read reads one packet (its max_packets argument is overridden)
            if not self.connected or self.client.loop_read() != mqtt.MQTT_ERR_SUCCESS or len(self.pending) == before:
                return

    def _drain(self) -> None:
        while self.pending and not self.stop_requested.is_set():
            batch: list[Delivery] = []
            while self.pending and len(batch) < self.batch_size:
                delivery = self.pending.popleft()
                if delivery.generation == self.generation:
                    batch.append(delivery)  # else: came on a lost connection; the broker redelivers it
            if not batch:
                return
            outcomes = self._store_batch(batch) if len(batch) > 1 else self._store(batch[0])
            if outcomes is None:
                if self.stop_requested.is_set():
                    self.pending.extendleft(reversed(batch))
                continue
            self._ack_devices(batch, outcomes)
            if self.connected:
                for delivery in batch:
                    if delivery.generation == self.generation and delivery.qos > 0:
                        self.client.ack(delivery.mid, delivery.qos)

    def _ack_devices(self, batch: list[Delivery], outcomes: list[str]) -> None:
        """Tell each device what of the batch is stored (committed). Published even while disconnected:
        paho sends a QoS 1 message after the reconnect; one lost with the process is harmless, the device
        sends the result again after its ack timeout and this acknowledges the duplicate."""
        for topic, payload in ack_messages([(d.topic, d.payload) for d in batch], outcomes):
            self.client.publish(topic, payload, qos=1)
            self.acks_sent += 1

    def _store_batch(self, batch: list[Delivery]) -> list[str] | None:
        """Store several deliveries in one transaction (see Ingestor.handle_batch); their outcomes when done.

        Retries while the database is down, like ``_store``. When the database refuses something in
        the batch, the batch is stored one delivery at a time, so only the culprit becomes a dead letter.
        """
        backoff = Backoff(maximum=self.max_backoff_s)
        generation = batch[0].generation
        while not self.stop_requested.is_set() and generation == self.generation:
            close_old_connections()
            try:
                return self.ingestor.handle_batch([(d.topic, d.payload) for d in batch])
            except (OperationalError, InterfaceError) as exc:
                self._database_down(exc, backoff)
                continue
            except DatabaseError as exc:
                log.warning("database refused a batch of %d (%s); storing them one by one", len(batch), exc)
                outcomes: list[str] = []
                for delivery in batch:
                    done = self._store(delivery)
                    if done is None:
                        return None
                    outcomes += done
                return outcomes
        return None

    def _store(self, delivery: Delivery) -> list[str] | None:
        """Store (or dead-letter) one delivery; its outcome when done. Retries while the database is down."""
        backoff = Backoff(maximum=self.max_backoff_s)
        while not self.stop_requested.is_set() and delivery.generation == self.generation:
            close_old_connections()
            try:
                outcome = self.ingestor.handle(delivery.topic, delivery.payload)
            except (OperationalError, InterfaceError) as exc:
                self._database_down(exc, backoff)
                continue
            except DatabaseError as exc:
                # Not the database being away but this message it cannot hold: keep it, with the reason.
                try:
                    self.ingestor.stats["dead_database"] += 1
                    DeadLetter.record(
                        reason="database", topic=delivery.topic, payload=delivery.payload, detail=str(exc)
                    )
                except (OperationalError, InterfaceError) as down:
                    self._database_down(down, backoff)
                    continue
                log.error("database refused a message on %s: %s", delivery.topic, exc)
                return ["dead_database"]
            log.debug("%s <- %s", outcome, delivery.topic)
            return [outcome]
        return None

    def _database_down(self, exc: Exception, backoff: Backoff) -> None:
        delay = backoff.next()
        self.ingestor.stats["database_retries"] += 1
        log.warning("database unavailable (%s); retrying the same message in %.1f s", str(exc).strip(), delay)
        for conn in connections.all():
            conn.close_if_unusable_or_obsolete()
            try:
                conn.close()
            except DatabaseError:
                log.debug("closing a broken connection failed", exc_info=True)
        self._pause(delay)

    def _close(self) -> None:
        if self.connected:
            info = self._announce("offline")  # a clean DISCONNECT does not send the last will
            deadline = time.monotonic() + 2.0
            while not info.is_published() and self.connected and time.monotonic() < deadline:
                self.client.loop(timeout=0.05)
            self.client.disconnect()
            for _ in range(5):  # let the DISCONNECT go out
                if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        log.info(
            "ingest stopped; %d deliveries left unacknowledged for redelivery; %d ack message(s) sent to devices",
            len(self.pending),
            self.acks_sent,
        )
