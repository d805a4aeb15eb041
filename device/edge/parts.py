"""The pieces the device service is made of: each runs on its own thread and reports progress.

The daemon (device.edge.daemon) starts them in order and stops them in mirror order; the watchdog is
petted only while every part's heartbeat is recent.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from device.edge.config import DeviceConfig
from device.edge.outbox import Outbox
from device.edge.publisher import Publisher

log = logging.getLogger(__name__)

STUCK_AFTER_S = 120.0  # a part that has not made progress for this long fails the watchdog


def audio_dir(config: DeviceConfig) -> Path:
    return config.audio.transient_dir / "outbox-audio"


def open_outbox(config: DeviceConfig, check: bool = False) -> Outbox:
    return Outbox(config.outbox.path, audio_dir(config), config.outbox.max_bytes, check=check)


class Part(ABC):
    """One piece of the daemon, run on its own thread."""

    name = "part"

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.heartbeat = time.monotonic()
        self.failed: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self.failed = exc
            log.critical("%s stopped on an unexpected error: %s", self.name, exc, exc_info=True)

    @abstractmethod
    def run(self) -> None: ...

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("%s did not stop within %.0f s", self.name, timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def progressing(self) -> bool:
        return self.running and time.monotonic() - self.heartbeat < STUCK_AFTER_S


class PublisherPart(Part):
    name = "publisher"

    def __init__(self, config: DeviceConfig, outbox: Outbox, models: Callable[[], list[dict[str, str]]]) -> None:
        super().__init__()
        # Built here, not in the thread: a missing password file is a start-up error, not a dead thread.
        self.publisher = Publisher(
            config.broker, config.device_id, outbox, max_inflight=config.outbox.max_inflight, models=models
        )

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.publisher.step()
            self.heartbeat = self.publisher.heartbeat
        self.publisher.close()
