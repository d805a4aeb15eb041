"""Where results come from in the daemon: replayed recordings, or rolling windows of a live input.

Every result goes into the outbox (with, for replayed recordings, the recording's identity in the same
transaction) before anything tries to send it; a recording that cannot be analysed is logged with the
reason, reported to ingest as a refused recording (refusals.py) and remembered, and the producer carries on.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from device.core.audio_io import Audio
from device.core.errors import AudioError, ContractError, StethError
from device.edge.analyser import Analyser, Recording, answer, make_entries
from device.edge.config import DeviceConfig
from device.edge.outbox import Outbox, OutboxFullError
from device.edge.parts import Part, open_outbox
from device.edge.refusals import Source, refusal_message
from device.edge.replay_manifest import Listed, ManifestError
from device.edge.replay_manifest import load as load_manifest
from device.edge.sources import (
    AudioSource,
    CaptureError,
    EndOfSource,
    ReplaySource,
    SoundDeviceSource,
    recordings,
    segments,
)

log = logging.getLogger(__name__)

REPLAY_POLL_S = 5.0


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


class Producer(Part):
    """Turns audio into results in the outbox; subclasses decide where the audio comes from."""

    def __init__(self, config: DeviceConfig, analyser: Analyser) -> None:
        super().__init__()
        self.config = config
        self.analyser = analyser
        self.stored = 0
        self.failed_recordings = 0

    source_kind: Source = "capture"

    def refuse(
        self, box: Outbox, exc: StethError, *, recording: str, key: str | None, duration_s: float | None = None,
        patient_ref: str | None = None, site: str | None = None,
    ) -> None:  # fmt: skip
        """Log a recording that gives no result, report it to ingest (through the outbox) and remember it."""
        self.failed_recordings += 1
        log.error("recording not analysed: %s", exc)  # the message names the recording
        message = refusal_message(
            self.config.device_id, exc, source=self.source_kind, recording=recording, key=key,
            patient_ref=patient_ref, site=site, duration_s=duration_s,
        )  # fmt: skip
        try:
            box.add_refusal(message, source_key=key)
        except (OutboxFullError, ContractError) as err:
            log.error("the refusal of %s was not stored either: %s", recording, err)
            if key:
                box.note_failure(key, str(exc))
            return
        log.info("%s refused (%s): reported as %s", recording, message["reason"], message["refusal_id"])

    def store(self, box: Outbox, recording: Recording) -> bool:
        """Analyse and store one recording; False (logged) when it cannot be used or stored."""
        label = recording.audio.source
        try:
            analyses = self.analyser.analyse(recording.audio)
        except AudioError as exc:
            self.refuse(
                box, exc, recording=label, key=recording.key, duration_s=recording.audio.duration_s,
                patient_ref=recording.patient_ref, site=recording.site,
            )  # fmt: skip
            return False
        entries = make_entries(analyses, recording, self.config.device_id, send_audio=self.config.audio.send_audio)
        try:
            report = box.add(entries, source_key=recording.key)
        except OutboxFullError as exc:
            for entry in entries:
                box.note_dropped_result(entry.result["result_id"], str(exc))
            return False
        except ContractError as exc:
            log.error("%s: the result breaks the contract and was not stored", label)
            self.refuse(box, exc, recording=label, key=recording.key, duration_s=recording.audio.duration_s,
                        patient_ref=recording.patient_ref, site=recording.site)  # fmt: skip
            return False
        self.stored += len(report.result_ids)
        for analysis, entry in zip(analyses, entries, strict=True):
            log.info("%s -> %s\n%s", label, entry.result["result_id"], answer(analysis).replace("\n", "\n    "))
        return True


class ReplayProducer(Producer):
    """Every recording in audio.replay_path, once, even across restarts and kill -9."""

    name = "replay"
    source_kind: Source = "replay"

    def run(self) -> None:
        assert self.config.audio.replay_path is not None
        box = open_outbox(self.config)
        try:
            while not self.stop_event.is_set():
                self.beat()
                try:
                    files = recordings(self.config.audio.replay_path)
                    listed = self.manifest()
                except (CaptureError, ManifestError) as exc:
                    log.error("replay: %s", exc)
                    files = []
                for path in files:
                    if self.stop_event.is_set():
                        break
                    self.process(box, path, listed.get(path.name))
                    self.beat()
                self.stop_event.wait(REPLAY_POLL_S)
        finally:
            box.close()

    def manifest(self) -> dict[str, Listed]:
        """Who and where each file is, read at every pass (a demo may add recordings and rows)."""
        path = self.config.audio.replay_manifest
        return load_manifest(path) if path is not None else {}

    def process(self, box: Outbox, path: Path, listed: Listed | None = None) -> None:
        try:
            st = path.stat()
        except OSError:
            return  # gone between listing and reading
        base = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if box.source_done(base):
            return
        mtime = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)
        if self.config.audio.replay_recorded_at == "replayed":
            mtime = dt.datetime.now(dt.UTC)  # a demo's "recorded" time is when the stethoscope would have been on
        who = listed or Listed(None, "unknown", None)
        offset = 0.0
        try:
            for i, audio in enumerate(segments(path, self.config.audio.max_segment_s)):
                key = f"{base}#{i}"
                if not box.source_done(key):
                    when = mtime + dt.timedelta(seconds=offset)
                    recording = Recording(audio, when, patient_ref=who.patient_ref, site=who.site, key=key,
                                          exam_id=who.exam_id)  # fmt: skip
                    stored = self.store(box, recording)
                    if not stored and not box.source_done(key):
                        return  # not stored for want of space: tried again at the next pass
                offset += audio.duration_s
                self.beat()
                if self.stop_event.is_set():
                    return  # the rest of the file at the next start; what is done stays done
        except AudioError as exc:  # the file itself: empty, unreadable, truncated
            self.refuse(box, exc, recording=str(path), key=base, site="unknown")
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
