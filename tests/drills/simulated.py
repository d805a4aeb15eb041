"""Lightweight devices for the soak: the real outbox and publisher (device.edge.outbox, device.edge.publisher) in
threads of the test's process, without the audio pipeline, so twenty of them reach thousands of results.

Each has a producer thread (results into its own outbox connection, as `steth record` does) and a
publisher thread (its own connection, as the daemon's publisher part). ``crash`` is the nearest a
thread gets to kill -9: the publisher is abandoned without a goodbye (its socket closed under it, no
DISCONNECT, no wait for acknowledgements) and its outbox connection dropped; ``start_publisher`` makes a
new one that sends again whatever the outbox still holds.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from device.core import contract
from device.edge.config import BrokerConfig
from device.edge.outbox import Entry, Outbox
from device.edge.publisher import Publisher
from device.fleet.provision import SECRET_NAME


@dataclass
class SimDevice:
    device_id: str
    root: Path
    bundle: Path
    broker_url: str
    results: int  # to produce
    interval_s: float
    produced: dict[str, float] = field(default_factory=dict)  # result_id -> time it entered the outbox
    crashes: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.box_path = self.root / self.device_id / "outbox.sqlite"
        self.audio_dir = self.root / self.device_id / "audio"
        self._stop = threading.Event()
        self._pub_stop = threading.Event()
        self._pub_thread: threading.Thread | None = None
        self._publisher: Publisher | None = None
        self._producer = threading.Thread(target=self._produce, name=f"{self.device_id}-producer", daemon=True)

    def config(self) -> BrokerConfig:
        return BrokerConfig(
            url=self.broker_url,
            ca_file=self.bundle / "ca.crt",
            username=self.device_id,
            password_file=self.bundle / SECRET_NAME,
            keepalive_s=5,
            reconnect_min_s=0.5,
            reconnect_max_s=3.0,
            status_interval_s=30,
            ack_timeout_s=5,  # what ingest has not acknowledged goes again after 5 s (60 s in production)
        )

    def outbox(self) -> Outbox:
        return Outbox(self.box_path, self.audio_dir, 64 * 1024 * 1024)

    def start(self) -> SimDevice:
        self.start_publisher()
        self._producer.start()
        return self

    def _produce(self) -> None:
        box = self.outbox()
        try:
            for _ in range(self.results):
                if self._stop.is_set():
                    return
                message = copy.deepcopy(contract.EXAMPLE_RESULT)
                rid = str(uuid.uuid4())
                now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                message.update(result_id=rid, device_id=self.device_id, recorded_at=now, patient_ref=None)
                box.add([Entry(message)])
                self.produced[rid] = time.time()
                self._stop.wait(self.interval_s)
        except Exception as exc:  # a producer error must fail the soak, not vanish with the thread
            self.errors.append(f"producer: {exc!r}")
        finally:
            box.close()

    def start_publisher(self) -> None:
        self._pub_stop = threading.Event()
        stop = self._pub_stop
        box = self.outbox()
        publisher = Publisher(self.config(), self.device_id, box, max_inflight=10)
        self._publisher = publisher

        def run() -> None:
            try:
                while not stop.is_set():
                    publisher.step()
            except Exception as exc:
                self.errors.append(f"publisher: {exc!r}")

        self._pub_thread = threading.Thread(target=run, name=f"{self.device_id}-publisher", daemon=True)
        self._pub_thread.start()

    def crash(self) -> None:
        """Abandon the publisher mid-delivery, then start a fresh one (a restart after kill -9)."""
        assert self._publisher is not None and self._pub_thread is not None
        self._pub_stop.set()
        self._pub_thread.join(10)
        sock = self._publisher._client.socket()  # no DISCONNECT: the broker sees the link die
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(Exception):
            self._publisher.outbox._db.close()
        self.crashes += 1
        self.start_publisher()

    @property
    def done_producing(self) -> bool:
        return not self._producer.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._producer.join(30)
        self._pub_stop.set()
        if self._pub_thread is not None:
            self._pub_thread.join(30)
        if self._publisher is not None:
            self._publisher.close(grace_s=1.0)
            self._publisher.outbox.close()
