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

import datetime as dt
import logging
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import numpy as np

from device import sdnotify
from device.analyser import Analyser, Recording, answer, make_entries
from device.audio_io import Audio
from device.config import DeviceConfig
from device.errors import AudioError, ContractError, ModelError, StethError
from device.outbox import Outbox, OutboxFullError
from device.publisher import Publisher
from device.sources import AudioSource, CaptureError, EndOfSource, ReplaySource, SoundDeviceSource, recordings, segments

log = logging.getLogger(__name__)

STUCK_AFTER_S = 120.0  # a part that has not made progress for this long fails the watchdog
REPLAY_POLL_S = 5.0


def audio_dir(config: DeviceConfig) -> Path:
    return config.audio.transient_dir / "outbox-audio"


def open_outbox(config: DeviceConfig, check: bool = False) -> Outbox:
    return Outbox(config.outbox.path, audio_dir(config), config.outbox.max_bytes, check=check)


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


def make_source(
    config: DeviceConfig,
    *,
    reconnect: bool,
    stop: threading.Event | None = None,
    on_wait: Callable[[], None] | None = None,
) -> AudioSource:
    audio = config.audio
    if audio.source == "replay":
        assert audio.replay_path is not None  # the configuration guarantees it
        return ReplaySource(audio.replay_path, realtime=audio.replay_realtime)
    return SoundDeviceSource(
        audio.input_device,
        audio.sample_rate,
        channels=audio.channels,
        stall_timeout_s=audio.stall_timeout_s,
        reconnect=reconnect,
        stop=stop,
        on_wait=on_wait,
    )


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


class Producer(Part):
    """Turns audio into results in the outbox; subclasses decide where the audio comes from."""

    def __init__(self, config: DeviceConfig, analyser: Analyser) -> None:
        super().__init__()
        self.config = config
        self.analyser = analyser
        self.stored = 0
        self.failed_recordings = 0

    def store(self, box: Outbox, recording: Recording) -> bool:
        """Analyse and store one recording; False (logged) when it cannot be used or stored."""
        label = recording.audio.source
        try:
            analyses = self.analyser.analyse(recording.audio)
        except AudioError as exc:
            self.failed_recordings += 1
            log.error("recording not analysed: %s", exc)  # the message names the recording
            if recording.key:
                box.note_failure(recording.key, str(exc))
            return False
        entries = make_entries(analyses, recording, self.config.device_id, send_audio=self.config.audio.send_audio)
        try:
            report = box.add(entries, source_key=recording.key)
        except OutboxFullError as exc:
            for entry in entries:
                box.note_dropped_result(entry.result["result_id"], str(exc))
            return False
        except ContractError as exc:
            log.error("%s: the result breaks the contract and was not stored: %s", label, exc)
            if recording.key:
                box.note_failure(recording.key, str(exc))
            return False
        self.stored += len(report.result_ids)
        for analysis, entry in zip(analyses, entries, strict=True):
            log.info("%s -> %s\n%s", label, entry.result["result_id"], answer(analysis).replace("\n", "\n    "))
        return True


class ReplayProducer(Producer):
    """Every recording in audio.replay_path, once, even across restarts and kill -9."""

    name = "replay"

    def run(self) -> None:
        assert self.config.audio.replay_path is not None
        box = open_outbox(self.config)
        try:
            while not self.stop_event.is_set():
                self.beat()
                try:
                    files = recordings(self.config.audio.replay_path)
                except CaptureError as exc:
                    log.error("replay: %s", exc)
                    files = []
                for path in files:
                    if self.stop_event.is_set():
                        break
                    self.process(box, path)
                    self.beat()
                self.stop_event.wait(REPLAY_POLL_S)
        finally:
            box.close()

    def process(self, box: Outbox, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return  # gone between listing and reading
        base = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if box.source_done(base):
            return
        mtime = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)
        offset = 0.0
        try:
            for i, audio in enumerate(segments(path, self.config.audio.max_segment_s)):
                key = f"{base}#{i}"
                if not box.source_done(key):
                    when = mtime + dt.timedelta(seconds=offset)
                    stored = self.store(box, Recording(audio, when, site="unknown", key=key))
                    if not stored and not box.source_done(key):
                        return  # not stored for want of space: tried again at the next pass
                offset += audio.duration_s
                self.beat()
                if self.stop_event.is_set():
                    return  # the rest of the file at the next start; what is done stays done
        except AudioError as exc:
            self.failed_recordings += 1
            log.error("recording not analysed: %s", exc)
            box.note_failure(base, str(exc))
            return
        box.mark_done(base)


class ContinuousProducer(Producer):
    """Rolling windows of the audio source: every interval_s of audio, the last window_s is analysed."""

    name = "continuous"

    def run(self) -> None:
        cont = self.config.continuous
        source = make_source(self.config, reconnect=True, stop=self.stop_event, on_wait=self.beat)
        box = open_outbox(self.config)
        try:
            try:
                source.open()
            except CaptureError as exc:
                log.error("audio input unavailable at start: %s; retrying", exc)  # read() keeps retrying
            chunks: list[np.ndarray] = []
            have = since = 0
            rate = 0
            while not self.stop_event.is_set():
                self.beat()
                try:
                    block = source.read()
                except EndOfSource:
                    log.info("continuous: the replay source has ended; delivering only")
                    self.stop_event.wait()
                    break
                except CaptureError as exc:
                    if self.stop_event.is_set():
                        break
                    raise StethError(f"audio input failed: {exc}") from exc
                if block.fresh or block.sample_rate != rate:
                    chunks, have, since, rate = [], 0, 0, block.sample_rate
                chunks.append(block.samples)
                have += len(block.samples)
                since += len(block.samples)
                window = round(cont.window_s * rate)
                if have > window:  # keep only what the next window needs
                    joined = np.concatenate(chunks)[-window:]
                    chunks, have = [joined], len(joined)
                if have >= window and since >= round(cont.interval_s * rate):
                    since = 0
                    samples = np.concatenate(chunks)[-window:]
                    now = dt.datetime.now(dt.UTC)
                    audio = Audio(samples=samples, sample_rate=rate, source=f"{source.name} (continuous)")
                    recording = Recording(
                        audio, now - dt.timedelta(seconds=cont.window_s), patient_ref=cont.patient_ref, site=cont.site
                    )
                    self.store(box, recording)
        finally:
            source.close()
            box.close()


class Daemon:
    """Ordered start, mirror-order stop, watchdog."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.parts: list[Part] = []
        self.analyser = Analyser(config.models.run)
        self.outbox: Outbox | None = None

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
        if self.config.mode != "deliver":  # only a mode that analyses needs librosa: import it off the start path
            self.analyser.warm_up_in_background()

    def start(self) -> None:
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
        finally:
            self.stop()
        return code
