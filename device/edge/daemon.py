"""`steth device run`: the long-running device service.

Its parts start in order and stop in mirror order (frigate style): the outbox (checked, repaired if
corrupt), the publisher (drains the outbox to the broker), then the producer of results for the
configured mode:

- ``deliver``: none; results come from `steth record` (another process writing the same outbox);
- ``continuous``: classify rolling windows of the audio source and store a result every interval;
- ``replay``: analyse every recording in a folder once (new files are picked up as they appear).

Every result goes into the outbox before anything tries to send it. SIGTERM sets the stop flag; the
producer finishes the recording in hand and stores its result, the publisher waits briefly for the
acknowledgements in flight and says ``offline``, the outbox checkpoints its log. Under systemd the
daemon reports READY=1 once started and pings the watchdog only while every part makes progress.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from device.core.errors import BusyError, ModelError
from device.edge import sdnotify
from device.edge.analyser import Analyser
from device.edge.config import DeviceConfig
from device.edge.delivery_lock import DeliveryLock
from device.edge.outbox import Outbox
from device.edge.parts import Part, PublisherPart, open_outbox
from device.edge.producers import ContinuousProducer, Producer, ReplayProducer

log = logging.getLogger(__name__)

STATUS_EVERY_S = 30.0
# `steth record --send` may be delivering when the service starts: wait this long for it to finish
LOCK_WAIT_S = 60.0


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), or '' when unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3:
            point = fields[1].replace("\\040", " ")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


class Daemon:
    """Ordered start, mirror-order stop, watchdog."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.parts: list[Part] = []
        self.analyser = Analyser(config.models.run, config.models.threshold_dir)
        self.outbox: Outbox | None = None
        self.lock = DeliveryLock(config.outbox.path)

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
        self.stop_event.set()

    def _check_transient_dir(self) -> None:
        kind = filesystem_type(self.config.audio.transient_dir)
        if self.config.audio.send_audio and kind not in ("tmpfs", "ramfs", ""):
            log.warning(
                "audio.transient_dir %s is on %s, not tmpfs: audio waiting for upload will be written to "
                "persistent storage (use /run/steth, which systemd's RuntimeDirectory= makes)",
                self.config.audio.transient_dir,
                kind,
            )

    def _load_models(self) -> None:
        try:
            self.analyser.classifiers  # noqa: B018 - loads now: a missing model is a start-up error
        except ModelError as exc:
            if self.config.mode != "deliver":
                raise
            log.warning("no model loaded (%s); delivering the outbox only", exc)
            return

    def _take_delivery(self) -> None:
        """Become the one process delivering this device's outbox (device/edge/delivery_lock.py)."""
        deadline = time.monotonic() + LOCK_WAIT_S
        said = False
        while not self.lock.acquire():
            if time.monotonic() >= deadline or self.stop_event.is_set():
                raise BusyError(
                    f"another process (pid {self.lock.holder() or '?'}) is delivering the outbox "
                    f"{self.config.outbox.path}",
                    "is a second device service running with this configuration? stop it (one service per "
                    "device), or wait for `steth record --send` to finish",
                )
            if not said:
                log.info("waiting for pid %s to finish delivering the outbox", self.lock.holder() or "?")
                said = True
            self.stop_event.wait(0.5)

    def start(self) -> None:
        self._take_delivery()
        self.outbox = open_outbox(self.config, check=True)
        self._check_transient_dir()
        self._load_models()
        producers: dict[str, type[Producer]] = {"continuous": ContinuousProducer, "replay": ReplayProducer}
        planned: list[Callable[[], Part]] = [
            lambda: PublisherPart(self.config, self._outbox, self.analyser.models_info)
        ]
        if self.config.mode in producers:
            planned.append(lambda: producers[self.config.mode](self.config, self.analyser))
        for make in planned:
            part = make()
            part.start()
            self.parts.append(part)
            log.info("started %s", part.name)

    @property
    def _outbox(self) -> Outbox:
        assert self.outbox is not None
        return self.outbox

    def stop(self) -> None:
        sdnotify.notify("STOPPING=1")
        for part in reversed(self.parts):
            part.stop()
            log.info("stopped %s", part.name)
        self.parts.clear()
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
        self.lock.release()

    def _status_line(self) -> None:
        """One line for `systemctl status`: what waits, what went, what was lost."""
        if self.outbox is None or not sdnotify.notify_socket():
            return
        stats = self.outbox.stats()
        sdnotify.notify(
            f"STATUS={self.config.mode}: {stats.pending_results} result(s) waiting, "
            f"{stats.delivered_results} delivered, {stats.dropped_results} dropped"
        )

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit code says whether a part failed."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        code = 0
        try:
            self.start()
            sdnotify.notify(f"READY=1\nSTATUS=running ({self.config.mode}), device {self.config.device_id}")
            log.info("device %s running in %s mode (pid %d)", self.config.device_id, self.config.mode, os.getpid())
            interval = sdnotify.watchdog_interval()
            tick = min(1.0, interval / 3) if interval else 1.0
            next_status = time.monotonic() + STATUS_EVERY_S
            while not self.stop_event.wait(tick):
                dead = [p for p in self.parts if not p.running]
                if dead:
                    log.critical("%s stopped unexpectedly; exiting so the service is restarted", dead[0].name)
                    code = 1
                    break
                stuck = [p.name for p in self.parts if not p.progressing()]
                if stuck:
                    log.error("no progress from %s: not petting the watchdog", ", ".join(stuck))
                elif interval:
                    sdnotify.notify("WATCHDOG=1")
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + STATUS_EVERY_S
                    self._status_line()
        finally:
            self.stop()
        return code
