"""`steth record`: the bedside workflow. Record, analyse, answer at once, keep the result safe.

The model is loaded before the recording starts, so the answer is printed well within a second of the
end of the recording (the analysis of 15 s takes milliseconds). The result goes into the outbox before
the answer is shown; the daemon's publisher delivers it (``--send`` also tries to deliver it now).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from device.core.contract import SITES
from device.core.errors import AudioError, ContractError
from device.edge import config as device_config
from device.edge.analyser import NOTICE, Analyser, Recording, answer, make_entries
from device.edge.outbox import OutboxError, OutboxFullError

log = logging.getLogger(__name__)

PATIENT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def patient_ref(value: str) -> str:
    if not PATIENT_RE.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a patient reference: use the pseudonymous code (letters, digits, _ . : -, "
            "at most 64), e.g. P-000123 — never a name"
        )
    return value


def seconds(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 5 <= n <= 300:
        raise argparse.ArgumentTypeError(f"{n:g} s: record between 5 and 300 seconds (15 s is usual)")
    return n


def register(sub: Any) -> None:
    p = sub.add_parser("record", help="record at the bedside, analyse, and show the answer (screening support)")
    p.add_argument("--patient", required=True, type=patient_ref, help="pseudonymous patient reference, never a name")
    p.add_argument("--site", required=True, choices=SITES, help="where the stethoscope is placed")
    p.add_argument("--seconds", type=seconds, help="recording length (default: audio.record_seconds)")
    p.add_argument("--config", type=Path, help="device TOML file (default: $STETH_DEVICE_CONFIG)")
    p.add_argument("--replay", type=Path, help="use this WAV/FLAC instead of the stethoscope (demos, training)")
    p.add_argument(
        "--send",
        type=float,
        metavar="SECONDS",
        help="also try to deliver now, for up to SECONDS (unless the device service runs: it delivers)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON (for scripts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from device.edge.parts import open_outbox
    from device.edge.producers import make_source
    from device.edge.sources import ReplaySource

    config = device_config.load(args.config)
    length = args.seconds or config.audio.record_seconds
    analyser = Analyser(config.models.run, config.models.threshold_dir)
    analyser.classifiers  # noqa: B018 - load before recording: a missing model is said at once
    box = open_outbox(config, check=True)
    try:
        # A replayed recording takes as long as a real one, so the demo and the timing are the bedside's.
        source = ReplaySource(args.replay, realtime=True) if args.replay else make_source(config, reconnect=False)
        with source:
            print(f"Recording {length:g} s from {source.name}: hold the stethoscope still on the "
                  f"{args.site} site...", file=sys.stderr, flush=True)  # fmt: skip
            recorded_at = dt.datetime.now(dt.UTC)
            audio = source.record(length)
        ended = time.monotonic()
        try:
            analyses = analyser.analyse(audio)
        except AudioError as exc:
            print(f"steth: could not analyse the recording: {exc}\nre-record: {exc.hint or 'record again'}",
                  file=sys.stderr)  # fmt: skip
            _report_refusal(config.device_id, box, exc, audio.source, args, audio.duration_s)
            return 2
        recording = Recording(audio, recorded_at, patient_ref=args.patient, site=args.site)
        entries = make_entries(analyses, recording, config.device_id, send_audio=config.audio.send_audio)
        saved_error = None
        try:
            box.add(entries)
        except (OutboxFullError, OutboxError) as exc:
            saved_error = exc
            for entry in entries:
                box.note_dropped_result(entry.result["result_id"], str(exc))
        latency = time.monotonic() - ended
        log.info("answer %.3f s after the end of the recording", latency)
        _print(args, analyses, entries, saved_error, latency)
        if saved_error is not None:
            return 3
        if args.send:
            _send_now(config, box, args.send)
    finally:
        box.close()
    return 0


def _report_refusal(device_id: str, box: Any, exc: AudioError, recording: str, args: argparse.Namespace,
                    duration_s: float) -> None:  # fmt: skip
    """The supervisor sees it on the dashboard too (device/edge/refusals.py); the nurse has been told."""
    from device.edge.refusals import refusal_message

    message = refusal_message(device_id, exc, source="record", recording=recording, patient_ref=args.patient,
                              site=args.site, duration_s=duration_s)  # fmt: skip
    try:
        box.add_refusal(message)
    except (OutboxError, ContractError) as err:
        log.error("the refusal was not stored: %s", err)


def _print(args: argparse.Namespace, analyses: list[Any], entries: list[Any], error: Exception | None,
           latency: float) -> None:  # fmt: skip
    if args.json:
        out = [
            {**a.to_json(), "result_id": e.result["result_id"], "stored": error is None}
            for a, e in zip(analyses, entries, strict=True)
        ]
        print(json.dumps({"results": out, "answer_latency_s": round(latency, 3)}), flush=True)
        return
    for analysis, entry in zip(analyses, entries, strict=True):
        print(answer(analysis))
        if error is None:
            print(f"Saved:           result {entry.result['result_id']}; sent when the device is online")
    if error is not None:
        print(f"NOT SAVED: {error}")
    print(NOTICE, flush=True)


def _send_now(config: device_config.DeviceConfig, box: Any, timeout: float) -> None:
    from device.edge.delivery_lock import DeliveryLock
    from device.edge.publisher import Publisher

    with DeliveryLock(config.outbox.path) as lock:
        if not lock.acquire():
            # the broker gives both the device's own client id: a second connection would take the
            # service's session away from it (device/edge/delivery_lock.py)
            print("The device service is running: it delivers the result.", file=sys.stderr)
            return
        publisher = Publisher(config.broker, config.device_id, box, announce=False)
        try:
            delivered = publisher.drain(timeout)
        finally:
            publisher.close(grace_s=1.0)
    print("Delivered." if delivered else "Not delivered yet: the device service will send it.", file=sys.stderr)
