"""`steth device ...`: run the device service, check its configuration, list audio inputs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from device.edge import config as device_config


def register(sub: Any) -> None:
    device = sub.add_parser("device", help="the device service: run it, check its configuration, list inputs")
    device_sub = device.add_subparsers(dest="device_command", metavar="SUBCOMMAND")
    device_sub.required = True

    run = device_sub.add_parser("run", help="run the device service (what systemd starts)")
    run.add_argument("--config", type=Path, help=f"TOML file (default: ${device_config.CONFIG_ENV} or "
                     f"{device_config.DEFAULT_CONFIG_PATH})")  # fmt: skip
    run.set_defaults(func=run_daemon)

    check = device_sub.add_parser("validate-config", help="check a configuration file and say what is wrong")
    check.add_argument("file", type=Path, help="the TOML file")
    check.add_argument(
        "--no-file-checks",
        action="store_true",
        help="only the settings; skip checking that the certificate, key and password files exist here",
    )
    check.set_defaults(func=validate)

    inputs = device_sub.add_parser("list-inputs", help="the audio inputs PortAudio sees (for audio.input_device)")
    inputs.set_defaults(func=list_inputs)

    box = device_sub.add_parser("outbox", help="what is waiting in the outbox, and what was dropped")
    box.add_argument("--config", type=Path, help="TOML file")
    box.set_defaults(func=outbox_status)


def _log_level(level: str) -> None:
    logging.getLogger().setLevel(level)
    if os.environ.get("JOURNAL_STREAM"):  # under systemd: journald stamps the time itself
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def run_daemon(args: argparse.Namespace) -> int:
    from device.edge.daemon import Daemon

    config = device_config.load(args.config)
    if not args.verbose:
        _log_level(config.log_level)
    return Daemon(config).run()


def validate(args: argparse.Namespace) -> int:
    config = device_config.load(args.file)
    problems = [] if args.no_file_checks else device_config.check_files(config)
    if problems:
        print(f"{args.file}: settings are valid, but:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK (device {config.device_id}, {config.mode} mode, broker {config.broker.url})")
    return 0


def list_inputs(args: argparse.Namespace) -> int:
    from device.edge.sources import describe_inputs, list_devices

    print(describe_inputs(list_devices()))
    return 0


def outbox_status(args: argparse.Namespace) -> int:
    from device.edge.parts import open_outbox

    config = device_config.load(args.config)
    with open_outbox(config) as box:
        print(json.dumps(box.stats().__dict__, indent=2))
    return 0
