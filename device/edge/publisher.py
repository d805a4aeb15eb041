"""Delivering the outbox over MQTT: QoS 1, and a message leaves the outbox only once ingest has stored it.

One thread owns the MQTT client and its own outbox connection and drives the network loop itself
(``client.loop()``), so the callbacks touch the outbox from the same thread that published. Reconnection
is ours, not paho's: bounded exponential backoff with jitter, from the very first attempt, so a device
that boots with the link down simply keeps trying.

End-to-end acknowledgements (``broker.delivery_ack = "ingest"``, the default): the broker's PUBACK only
marks a message ``sent``; it is deleted when ingest's ack naming it arrives on the device's acks topic
(sent after the database commit). The device subscribes to that topic on a persistent session
(``clean_start`` off, a week's expiry), so acks sent while it was offline arrive when it reconnects. A
message sent but not acknowledged within ``broker.ack_timeout_s`` is sent again, also after a restart;
at most ``max_inflight`` re-sends wait for their ack at once (a slot frees when the ack comes or the
timeout passes again), so thousands of unacknowledged messages after a long ingest outage trickle out
instead of flooding the broker. Why: a broker may acknowledge a message and then lose it (Mosquitto
2.0.11 loses messages for shared subscriptions over a restart, RELIABILITY.md); a PUBACK is not proof
that a result is stored. With ``delivery_ack = "broker"`` the PUBACK deletes the message, as before.

Re-sending at once when ingest is back: each ingest worker keeps a retained status on
``steth/v1/ingest/{worker}/status`` and publishes ``online`` with a new ``start_id`` every time its
subscriptions are in place. The device reads them; a start id it has not seen makes everything the broker
took before that moment, and ingest has not acknowledged, due again at once (still at most ``max_inflight``
re-sends waiting for their ack). Mosquitto 2.0.11 drops messages for a shared subscription while no member
of the group is subscribed (after a broker restart, before the workers reconnect): those used to wait for
the ack timeout; now they go again seconds after ingest is back. The timeout stays, as the safety net.

Within one process a message is published once per attempt; paho resends it after a reconnect, with the
same packet id, until the broker acknowledges it. Any message may so arrive more than once, with the same
``result_id``, which receivers de-duplicate (contract.md).

The device's status topic is retained, with a last will of ``offline`` (contract.offline_will), and an
``online`` status carrying the outbox counters is refreshed when they change and every
``broker.status_interval_s``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import select
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device import __version__
from device.core import contract
from device.core.errors import ContractError
from device.edge.config import BrokerConfig
from device.edge.outbox import Outbox, OutboxError, Pending

log = logging.getLogger(__name__)

CONNACK_TIMEOUT_S = 15.0
POLL_EMPTY_S = 0.25  # how often an empty outbox is looked at again (other processes add to it)
STATUS_MIN_GAP_S = 2.0
HOLD_REFUSED_S = 60.0  # a message the broker refused (MQTT 5 reason code) is retried after this
CHECK_FILE_S = 5.0
MAX_AUDIO_IN_FLIGHT = 2  # recordings are megabytes each: bound the memory they take while in flight
ACK_SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps acks for an offline device this long
MAX_PACKETS_PER_ROUND = 200  # packets already received, read in one round of the loop (see _loop)
RESEND_LOG_GAP_S = 60.0  # re-sends are logged at WARNING at most this often (a long outage re-sends many)
# After an ingest announcement, messages published before it but not yet PUBACKed may have met the gap
# too: the due time is set once they are acknowledged by the broker, or after this long at most.
ANNOUNCE_SETTLE_S = 5.0
MAX_KNOWN_STARTS = 256


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
    """Drains one outbox to the broker. Call ``step()`` in a loop (or ``run(stop)``), then ``close()``.

    ``announce=False`` makes a one-off sender (``steth record --send``, only while the device service
    is not running: device/edge/delivery_lock.py): no status, no last will. It is the device, with the
    device's client id (which the broker enforces) and the device's persistent session, so the acks
    it leaves unread wait there for the service.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        device_id: str,
        outbox: Outbox,
        *,
        max_inflight: int = 10,
        models: Callable[[], list[dict[str, str]]] = list,
        announce: bool = True,
    ) -> None:
        self.broker = broker
        self.device_id = device_id
        self.outbox = outbox
        self.max_inflight = max_inflight
        self.models = models
        self.announce = announce  # False for a one-off sender: no status, no last will
        self.end_to_end = broker.delivery_ack == "ingest"
        self.persistent = self.end_to_end
        self.heartbeat = time.monotonic()
        self.started = time.monotonic()
        self.state = "down"  # down -> connecting -> up
        self.published = 0
        self.acknowledged = 0
        self.refused = 0
        self.confirmed = 0  # messages ingest acknowledged as stored
        self.resent = 0  # messages sent again for want of an ack
        self._backoff = Backoff(broker.reconnect_min_s, broker.reconnect_max_s)
        self._next_attempt = 0.0
        self._connect_started = 0.0
        self._inflight: dict[int, Pending] = {}
        self._held: dict[int, float] = {}  # seq -> monotonic time to retry
        self._resending: dict[int, float] = {}  # seq of a re-send -> monotonic time its ack is due
        self._sent: list[Pending] = []  # PUBACKed in this loop round, to mark sent in one commit
        self._last_resend_log = -1e9
        self._acks_topic = contract.acks_topic(device_id)
        self._ingest_starts: dict[str, None] = {}  # start ids of ingest workers seen (insertion order)
        self._ingest_states: dict[str, str] = {}  # worker -> its last state, to log changes only
        self._announced: tuple[float, set[int]] | None = None  # (when, seqs in flight then) until settled
        self._due_before: float | None = None  # wall time: what the broker took before it is due again now
        self.ingest_announcements = 0
        self._next_poll = 0.0
        self._next_file_check = time.monotonic() + CHECK_FILE_S
        self._last_status = -1e9
        self._last_status_outbox: dict[str, int] | None = None
        self._status_topic = contract.status_topic(device_id)
        self._client = self._make_client(device_id)

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
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self) -> None:
        self._connect_started = time.monotonic()
        props = None
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = ACK_SESSION_EXPIRY_S
        try:
            self._client.connect(
                self.broker.host,
                self.broker.port,
                self.broker.keepalive_s,
                clean_start=not self.persistent,
                properties=props,
            )
        except ssl.SSLError as exc:
            self._lost(f"TLS with {self.broker.url} failed: {exc} (check broker.ca_file, cert_file, key_file)")
            return
        except OSError as exc:
            self._lost(f"cannot reach {self.broker.url}: {exc}")
            return
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            # small packets both ways (a PUBACK for an ack, then the next result): without this, Nagle's
            # algorithm holds the second until the first is acknowledged by TCP (measured: 4x slower
            # draining one message at a time)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
            "connected to %s; %d result(s) and %d audio waiting, %d of them sent and awaiting ingest's ack",
            self.broker.url,
            stats.pending_results,
            stats.pending_audio,
            stats.awaiting_ack,
        )
        if self.end_to_end:
            # every time: the session (and its subscription) may be gone, e.g. a broker without persistence
            client.subscribe([(self._acks_topic, 1), (contract.ALL_INGEST_STATUS, 1)])
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
        if self.end_to_end:
            self._sent.append(item)  # marked after this loop round, before anything is picked to send
        else:
            self.outbox.ack(item)
        log.debug("broker acknowledged %s %s", item.kind, item.result_id)

    def _readable(self) -> bool:
        """Bytes wait to be read now (in the TLS layer's buffer, which select does not see, or the socket)."""
        sock = self._client.socket()
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error(
                "the broker refused the subscription to %s (%s): results will be sent again every %.0f s and "
                "never leave the outbox; check the broker's ACL (deploy/mosquitto/steth.acl)",
                self._acks_topic,
                ", ".join(failed),
                self.broker.ack_timeout_s,
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """An ack from ingest: delete what it names (paho sends our PUBACK when this returns); or an ingest
        worker's status."""
        if msg.topic.startswith(contract.INGEST_ROOT + "/"):
            self._on_ingest_status(msg)
            return
        if msg.topic != self._acks_topic:
            log.warning("ignored a message on %s: this device only reads its acks topic", msg.topic)
            return
        try:
            ack = contract.decode("ack", bytes(msg.payload))
        except ContractError as exc:
            log.error("ignored an invalid ack: %s", exc)
            return
        if ack["device_id"] != self.device_id:
            log.error("ignored an ack for device %s on this device's topic", ack["device_id"])
            return
        try:
            done = self.outbox.confirm(ack["result_ids"], ack["audio_ids"])
        except (OutboxError, sqlite3.Error) as exc:
            # the messages stay; they are sent again after the ack timeout and acknowledged again
            log.error("could not remove acknowledged messages from the outbox: %s", exc)
            return
        for seq in done.seqs:
            self._resending.pop(seq, None)
        self.confirmed += len(done.seqs)
        log.debug(
            "ingest stored %d result(s) and %d recording(s) (%d named were no longer here)",
            done.results,
            done.audio,
            len(ack["result_ids"]) + len(ack["audio_ids"]) - len(done.seqs),
        )

    def _on_ingest_status(self, msg: mqtt.MQTTMessage) -> None:
        """An ingest worker's status: a new ``online`` start id means it has just (re)subscribed."""
        try:
            status = contract.decode("ingest_status", bytes(msg.payload))
        except ContractError as exc:
            if msg.payload:  # an empty retained message clears a worker's status: nothing to say
                log.warning("ignored an invalid ingest status on %s: %s", msg.topic, exc)
            return
        said = self._ingest_states.get(status["worker"])
        self._ingest_states[status["worker"]] = status["state"]
        if status["state"] != "online":
            if said != "offline":  # the retained copy comes again at each of our reconnects
                log.info("ingest worker %s is offline", status["worker"])
            return
        start_id = status["start_id"]
        if start_id in self._ingest_starts:
            return  # seen before (the retained copy again after our own reconnect)
        self._ingest_starts[start_id] = None
        while len(self._ingest_starts) > MAX_KNOWN_STARTS:
            self._ingest_starts.pop(next(iter(self._ingest_starts)))
        self.ingest_announcements += 1
        log.info("ingest worker %s is online (start %s)", status["worker"], start_id)
        if self.end_to_end:
            self._announced = (time.monotonic(), {item.seq for item in self._inflight.values()})

    def _settle_announcement(self) -> None:
        """Once what was in flight at an ingest announcement is PUBACKed (and marked sent), make every
        message the broker took until now due again (see the module's docstring)."""
        if self._announced is None:
            return
        when, seqs = self._announced
        in_flight = {item.seq for item in self._inflight.values()}
        if seqs & in_flight and time.monotonic() - when < ANNOUNCE_SETTLE_S:
            return
        self._announced = None
        self._due_before = time.time()
        self._resending.clear()  # a fresh budget of re-sends: ingest is there to acknowledge them
        self._next_poll = 0.0
        waiting = self.outbox.stats().awaiting_ack
        if waiting:
            log.info("ingest is back: sending again now the %d message(s) awaiting its ack", waiting)

    def _loop(self, timeout: float) -> int:
        """One round of paho's network loop and every packet already waiting, then the PUBACKed messages
        marked sent (one commit).

        paho's ``loop`` reads one packet per call. Draining a backlog, PUBACKs and ingest's acks arrive
        faster than one per round, and a broker drops what it cannot queue for a slow reader
        (Mosquitto's max_queued_messages, 1000 by default): an ack lost so costs a re-send a minute later
        (found by tests/device/bench_delivery.py).
        """
        rc: int = self._client.loop(timeout=timeout)
        for _ in range(MAX_PACKETS_PER_ROUND):
            if rc != mqtt.MQTT_ERR_SUCCESS or not self._readable():
                break
            rc = self._client.loop_read()
        if self._sent:
            sent, self._sent = self._sent, []
            try:
                self.outbox.mark_sent(sent)
            except (OutboxError, sqlite3.Error) as exc:
                # not marked: they look unsent and go again now, which ingest absorbs
                log.error("could not mark %d message(s) sent in the outbox: %s", len(sent), exc)
        self._settle_announcement()
        return rc

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
        rc = self._loop(timeout)
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
        if self.end_to_end:
            self._resending = {seq: t for seq, t in self._resending.items() if t > now}
            items = self.outbox.pending(
                room,
                exclude=exclude,
                max_audio=max(0, audio_room),
                ack_timeout_s=self.broker.ack_timeout_s,
                max_resend=max(0, self.max_inflight - len(self._resending)),
                due_before=self._due_before,
            )
            self._note_resends([item for item in items if item.attempts], now)
        else:
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

    def _note_resends(self, items: list[Pending], now: float) -> None:
        if not items:
            return
        for item in items:
            self._resending[item.seq] = now + self.broker.ack_timeout_s
        self.resent += len(items)
        if self._due_before is not None and time.time() - self._due_before < self.broker.ack_timeout_s:
            # re-sends since ingest came back (said once at INFO when it did)
            log.debug("sending %d message(s) again (e.g. %s %s)", len(items), items[0].kind, items[0].result_id)
            return
        level = logging.WARNING if now - self._last_resend_log >= RESEND_LOG_GAP_S else logging.DEBUG
        if level == logging.WARNING:
            self._last_resend_log = now
        log.log(
            level,
            "no ack from ingest within %.0f s for %d message(s) the broker took (e.g. %s %s, sent %d time(s)); "
            "sending them again (ingest down or slow, or the broker lost them)",
            self.broker.ack_timeout_s,
            len(items),
            items[0].kind,
            items[0].result_id,
            items[0].attempts,
        )

    def status_message(self, state: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "schema_version": contract.current_version("status"),
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
        """Publish until the outbox is empty or ``timeout`` passes; True when everything was delivered
        (with end-to-end acks: stored by ingest, not only taken by the broker)."""
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
                self._loop(0.1)
            if self.announce and self.state == "up":
                info = self._publish_status("offline")
                deadline = time.monotonic() + 2.0
                while not info.is_published() and self.state == "up" and time.monotonic() < deadline:
                    self._loop(0.1)
            if self._inflight:
                log.info("%d message(s) still unacknowledged at shutdown stay in the outbox", len(self._inflight))
        self.state = "closed"
        self._client.disconnect()
        self._client.loop(timeout=0.1)
