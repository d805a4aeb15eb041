"""One bedside recording, from the stethoscope (or a replayed file) to a kept result.

Used by `steth record` for a single site and, site after site, for a guided exam (device/edge/exam_flow.py).
The result is kept before the answer is shown: in the device's durable outbox (the daemon delivers it,
exactly once, like every result), or, when `steth record` is tried off a device without a configuration,
as JSON files in a local folder (nothing is sent).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from device.core import contract
from device.core.errors import AudioError
from device.edge.analyser import Analyser, Recording, make_entries
from device.edge.outbox import Entry, Outbox, OutboxError, OutboxFullError
from device.edge.sources import AudioSource

if TYPE_CHECKING:
    from device.core.inference import Analysis

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where a bedside result is kept before its answer is shown."""

    def save(self, entries: Sequence[Entry]) -> None:
        """Keep every entry, or raise OutboxError (the answer then says NOT SAVED)."""

    @property
    def where(self) -> str:
        """Where kept results go next, for the nurse ('sent when the device is online')."""

    def saved_line(self, entry: Entry) -> str: ...

    def close(self) -> None: ...


class OutboxSink:
    """The device's durable outbox: the daemon's publisher delivers what is in it."""

    def __init__(self, box: Outbox) -> None:
        self.box = box

    def save(self, entries: Sequence[Entry]) -> None:
        try:
            self.box.add(list(entries))
        except (OutboxFullError, OutboxError) as exc:
            for entry in entries:
                self.box.note_dropped_result(entry.result["result_id"], str(exc))
            raise

    @property
    def where(self) -> str:
        return "sent when the device is online"

    def saved_line(self, entry: Entry) -> str:
        return f"result {entry.result['result_id']}; {self.where}"

    def close(self) -> None:
        self.box.close()


class FolderSink:
    """Off a device: each result as ``<result_id>.json`` (the contract's message) in a local folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, entries: Sequence[Entry]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for entry in entries:
                data = contract.encode("result", entry.result)  # what a device would send, validated
                path = self.folder / f"{entry.result['result_id']}.json"
                tmp = path.with_suffix(".json.part")
                tmp.write_bytes(data + b"\n")
                os.replace(tmp, path)  # whole or absent: never a half-written result
        except OSError as exc:
            raise OutboxError(f"cannot write to {self.folder}: {exc.strerror or exc}") from exc

    @property
    def where(self) -> str:
        return f"kept in {self.folder}/, not sent"

    def saved_line(self, entry: Entry) -> str:
        return f"{self.folder / (entry.result['result_id'] + '.json')} (not sent)"

    def close(self) -> None:
        pass


@dataclass
class Attempt:
    """One recording of one site: its analyses and results, whether they were kept, or why it failed."""

    site: str
    analyses: list[Analysis] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    error: AudioError | None = None  # the recording could not be analysed (nothing was kept)
    not_saved: Exception | None = None
    latency_s: float = 0.0

    @property
    def result(self) -> dict[str, Any] | None:
        """The first model's result message (the one an exam is combined from)."""
        return self.entries[0].result if self.entries else None

    @property
    def poor(self) -> bool:
        """Worth recording again: not analysable, or the first model could not answer on this signal."""
        if self.error is not None or not self.analyses:
            return True
        first = self.analyses[0]
        return not first.quality.ok or first.label == "unsure"


class Progress:
    """The countdown a nurse sees while recording: in place on a terminal, every 5 s otherwise."""

    def __init__(self, seconds: float, out: TextIO) -> None:
        self.seconds = seconds
        self.out = out
        self.tty = out.isatty()
        self.last = -1

    def __call__(self, done_s: float) -> None:
        left = max(0, round(self.seconds - done_s))
        if left == self.last or (not self.tty and left % 5 and left):
            return
        self.last = left
        if self.tty:
            print(f"\r  recording: {left:3d} s left ", end="", file=self.out, flush=True)
        elif left:
            print(f"  recording: {left} s left", file=self.out, flush=True)

    def end(self) -> None:
        print(("\r" if self.tty else "") + "  recording: done        ", file=self.out, flush=True)


@dataclass
class Bedside:
    """What every recording at this bedside shares: the models, where results are kept, the patient."""

    analyser: Analyser
    sink: Sink
    device_id: str
    patient_ref: str
    seconds: float
    open_source: Callable[[Path | None], AudioSource]
    send_audio: bool = False
    countdown_s: int = 3
    out: TextIO = sys.stderr  # guidance for the nurse; answers go where the caller prints them
    sleep: Callable[[float], None] = time.sleep

    def record(self, site: str, *, exam_id: str | None = None, replay: Path | None = None) -> Attempt:
        """Record ``site``, analyse, keep the result; never raises for an unusable recording."""
        attempt = Attempt(site)
        with self.open_source(replay) as source:
            for n in range(self.countdown_s, 0, -1):
                print(f"  recording in {n}...", file=self.out, flush=True)
                self.sleep(1.0)
            print(f"  Recording {self.seconds:g} s from {source.name}: hold the stethoscope still on the "
                  f"{site} site...", file=self.out, flush=True)  # fmt: skip
            recorded_at = dt.datetime.now(dt.UTC)
            progress = Progress(self.seconds, self.out)
            audio = source.record(self.seconds, on_progress=progress)
            progress.end()
        ended = time.monotonic()
        try:
            attempt.analyses = self.analyser.analyse(audio)
        except AudioError as exc:
            attempt.error = exc
            self._report_refusal(exc, audio.source, site, exam_id, audio.duration_s)
            return attempt
        recording = Recording(audio, recorded_at, patient_ref=self.patient_ref, site=site, exam_id=exam_id)
        attempt.entries = make_entries(attempt.analyses, recording, self.device_id, send_audio=self.send_audio)
        try:
            self.sink.save(attempt.entries)
        except OutboxError as exc:  # OutboxFullError is one
            attempt.not_saved = exc
        attempt.latency_s = time.monotonic() - ended
        log.info("answer %.3f s after the end of the recording", attempt.latency_s)
        return attempt

    def _report_refusal(
        self, exc: AudioError, recording: str, site: str, exam_id: str | None, duration_s: float
    ) -> None:
        """The supervisor sees an unusable recording on the dashboard too (device/edge/refusals.py); the
        nurse has been told. Only the device's outbox delivers: a local folder keeps nothing to send."""
        if not isinstance(self.sink, OutboxSink):
            return
        from device.core.errors import ContractError
        from device.edge.refusals import refusal_message

        message = refusal_message(
            self.device_id, exc, source="record", recording=recording, patient_ref=self.patient_ref,
            site=site, duration_s=duration_s,
        )  # fmt: skip
        if exam_id:
            message["exam_id"] = exam_id
        try:
            self.sink.box.add_refusal(message)
        except (OutboxError, ContractError) as err:
            log.error("the refusal was not stored: %s", err)


def attempt_json(attempt: Attempt) -> list[dict[str, Any]]:
    """`--json`: one object per result of the attempt (as `steth classify --json`, plus where it went)."""
    if attempt.error is not None:
        return [{"site": attempt.site, "error": str(attempt.error), "stored": False}]
    out = []
    for analysis, entry in zip(attempt.analyses, attempt.entries, strict=True):
        out.append(
            {
                **analysis.to_json(),
                "result_id": entry.result["result_id"],
                "site": attempt.site,
                **({"exam_id": entry.result["exam_id"]} if "exam_id" in entry.result else {}),
                "stored": attempt.not_saved is None,
            }
        )
    return out


def dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=False)
