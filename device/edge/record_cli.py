"""`steth record`: the bedside workflow. Record, analyse, answer at once, keep the result safe.

One site (``--site``) or a guided exam of several (``--sites``, device/edge/exam_flow.py). The model is
loaded before the recording starts, so the answer is printed well within a second of the end of the
recording (the analysis of 15 s takes milliseconds). The result goes into the outbox before the answer
is shown; the daemon's publisher delivers it (``--send`` also tries to deliver it now).

Off a device, to try it: ``--replay FILE`` with no device configuration keeps the results as JSON files
in a local folder (``--out``, default ./steth-records) and sends nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from device.core.contract import REF_RE, SITES
from device.core.errors import ConfigError
from device.core.wording import NOTICE
from device.edge import config as device_config
from device.edge.analyser import Analyser, answer
from device.edge.bedside import Bedside, FolderSink, OutboxSink, Sink, attempt_json, dumps
from device.edge.exam_flow import Prompter, exam_json, exam_summary, run_exam

log = logging.getLogger(__name__)

LOCAL_OUT = Path("steth-records")
LOCAL_DEVICE_ID = "local"  # the device id of results kept off a device (never sent)


def patient_ref(value: str) -> str:
    if not REF_RE.match(value):
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


def exam_id(value: str) -> str:
    if not REF_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an exam id: letters, digits, _ . : - (at most 64)")
    return value


def site_list(value: str) -> tuple[str, ...]:
    sites = tuple(s.strip().lower() for s in value.split(",") if s.strip())
    wrong = [s for s in sites if s not in SITES]
    if not sites or wrong:
        raise argparse.ArgumentTypeError(
            f"{', '.join(wrong) or 'no site'}: give sites from {', '.join(SITES)}, separated by commas"
        )
    if len(set(sites)) != len(sites):
        raise argparse.ArgumentTypeError(f"{value!r} names a site twice: a site is recorded again on request")
    return sites


def register(sub: Any) -> None:
    p = sub.add_parser(
        "record",
        help="record at the bedside, analyse, and show the answer (screening support); --sites guides an exam",
    )
    p.add_argument("--patient", required=True, type=patient_ref, help="pseudonymous patient reference, never a name")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--site", choices=SITES, help="record one site: where the stethoscope is placed")
    where.add_argument(
        "--sites",
        type=site_list,
        metavar="SITE,SITE,...",
        help="a guided exam of these sites in this order (e.g. aortic,pulmonic,tricuspid,mitral): one answer",
    )
    p.add_argument("--exam-id", type=exam_id, help="the exam's id (default: a new one, E-<UTC time>-<random>)")
    p.add_argument("--seconds", type=seconds, help="recording length (default: audio.record_seconds, 15)")
    p.add_argument("--countdown", type=int, default=3, choices=range(0, 11), metavar="0-10",
                   help="seconds of countdown before each recording (default 3)")  # fmt: skip
    p.add_argument("--config", type=Path, help="device TOML file (default: $STETH_DEVICE_CONFIG)")
    p.add_argument(
        "--replay",
        type=Path,
        action="append",
        metavar="FILE",
        help="use this WAV/FLAC instead of the stethoscope (demos, training); in an exam, once for every "
        "site or once per site, in the order of --sites",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="keep results as JSON files in this folder instead of the device's outbox (nothing is sent); "
        f"the default with --replay and no device configuration: ./{LOCAL_OUT}",
    )
    p.add_argument(
        "--send",
        type=float,
        metavar="SECONDS",
        help="also try to deliver now, for up to SECONDS (unless the device service runs: it delivers)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON (for scripts)")
    p.set_defaults(func=run)


def _config_given(args: argparse.Namespace) -> bool:
    return bool(args.config or os.environ.get(device_config.CONFIG_ENV) or device_config.DEFAULT_CONFIG_PATH.exists())


def run(args: argparse.Namespace) -> int:
    from device.edge.parts import open_outbox
    from device.edge.producers import make_source
    from device.edge.sources import AudioSource, ReplaySource

    sites = args.sites or (args.site,)
    replay: list[Path] = args.replay or []
    if len(replay) > 1 and len(replay) != len(sites):
        raise ConfigError(
            f"--replay given {len(replay)} times for {len(sites)} site(s)",
            "give one file for every site, or one per site in the order of --sites",
        )
    local = args.out is not None or (bool(replay) and not _config_given(args))
    if not local and not _config_given(args):
        raise ConfigError(
            "no device configuration: `steth record` needs one to use the stethoscope and keep results for sending",
            f"give --config FILE or set ${device_config.CONFIG_ENV} (on a device: "
            f"{device_config.DEFAULT_CONFIG_PATH}); to try it off a device, give a recording: "
            "--replay FILE [--out FOLDER]",
        )
    if local and args.send is not None:
        raise ConfigError("--send needs a device configuration (the broker to send to)", "drop --send or --out")
    config = None if local and not _config_given(args) else device_config.load(args.config)
    if config is not None and not local:
        sink: Sink = OutboxSink(open_outbox(config, check=True))
    else:
        sink = FolderSink(args.out or LOCAL_OUT)
        print(
            f"Results are kept in {sink.folder}/ and not sent"
            + ("" if config is not None else " (no device configuration: trying it out)"),
            file=sys.stderr,
        )
    analyser = (
        Analyser(config.models.run, config.models.threshold_dir) if config is not None else Analyser(("screening",))
    )
    analyser.classifiers  # noqa: B018 - load before recording: a missing model is said at once

    def open_source(file: Path | None) -> AudioSource:
        if file is not None:
            # A replayed recording takes as long as a real one, so the demo and the timing are the bedside's.
            return ReplaySource(file, realtime=True)
        assert config is not None  # local mode needs --replay (above)
        return make_source(config, reconnect=False)

    bedside = Bedside(
        analyser,
        sink,
        device_id=config.device_id if config is not None else LOCAL_DEVICE_ID,
        patient_ref=args.patient,
        seconds=args.seconds or (config.audio.record_seconds if config is not None else 15.0),
        open_source=open_source,
        send_audio=config.audio.send_audio if config is not None and not local else False,
        countdown_s=args.countdown if args.sites else 0,  # one site: the nurse started it just now
    )
    try:
        code = _exam(args, bedside, replay) if args.sites else _single(args, bedside, replay[0] if replay else None)
        if code == 0 and args.send and config is not None:
            _send_now(config, sink, args.send)
    finally:
        sink.close()
    return code


def _single(args: argparse.Namespace, bedside: Bedside, replay: Path | None) -> int:
    attempt = bedside.record(args.site, exam_id=args.exam_id, replay=replay)
    if attempt.error is not None:
        exc = attempt.error
        print(f"steth: could not analyse the recording: {exc}\nRecord again: {exc.hint or 'check the stethoscope'}",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.json:
        print(dumps({"results": attempt_json(attempt), "answer_latency_s": round(attempt.latency_s, 3)}), flush=True)
    else:
        for analysis, entry in zip(attempt.analyses, attempt.entries, strict=True):
            print(answer(analysis))
            if attempt.not_saved is None:
                print(f"Saved:           {bedside.sink.saved_line(entry)}")
        if attempt.not_saved is not None:
            print(f"NOT SAVED: {attempt.not_saved}")
        print(NOTICE, flush=True)
    return 3 if attempt.not_saved is not None else 0


def _exam(args: argparse.Namespace, bedside: Bedside, replay: list[Path]) -> int:
    answers = sys.stderr if args.json else sys.stdout
    prompter = Prompter(sys.stdin, sys.stderr)
    try:
        exam = run_exam(bedside, args.sites, prompter, answers, exam_id=args.exam_id, replay=replay)
    except KeyboardInterrupt:
        print("\nExam stopped: the sites recorded so far are kept.", file=sys.stderr)
        raise
    if args.json:
        results = [r for a in exam.attempts for r in attempt_json(a)]
        print(dumps({"exam": exam_json(exam), "results": results}), flush=True)
    else:
        print("\n" + "\n".join(exam_summary(exam)))
        if exam.saved:
            print(f"Saved:           {exam.saved} result(s) of exam {exam.exam_id}; {bedside.sink.where}")
        for problem in exam.not_saved:
            print(f"NOT SAVED: {problem}")
        print(NOTICE, flush=True)
    return 3 if exam.not_saved else 0


def _send_now(config: device_config.DeviceConfig, sink: Sink, timeout: float) -> None:
    from device.edge.delivery_lock import DeliveryLock
    from device.edge.publisher import Publisher

    with DeliveryLock(config.outbox.path) as lock:
        if not lock.acquire():
            # the broker gives both the device's own client id: a second connection would take the
            # service's session away from it (device/edge/delivery_lock.py)
            print("The device service is running: it delivers the result.", file=sys.stderr)
            return
        assert isinstance(sink, OutboxSink)
        publisher = Publisher(config.broker, config.device_id, sink.box, announce=False)
        try:
            delivered = publisher.drain(timeout)
        finally:
            publisher.close(grace_s=1.0)
    print("Delivered." if delivered else "Not delivered yet: the device service will send it.", file=sys.stderr)
