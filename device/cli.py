"""`steth`: one command line, subcommands grouped by part of the system.

Each part registers its own subcommands; heavy imports (TensorFlow, Django, librosa) happen inside the
command that needs them, so `steth --help` and the device's commands start fast and work with only the
`device` extra installed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from device import __version__
from device.core.errors import StethError

# module exposing register(subparsers): each adds its own subcommands
COMMAND_MODULES = (
    "converter.data_cli",
    "converter.train",
    "converter.ablation",
    "converter.convert",
    "converter.evaluate",
    "converter.calibrate",
    "converter.murmur",
    "device.edge.classify_cli",
    "device.edge.exam_cli",
    "device.edge.record_cli",
    "device.edge.daemon_cli",
    "device.fleet.provision",
    "dashboard.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steth",
        description="stethoscope-edge: heart-sound screening support on a Raspberry Pi (not a diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"stethoscope-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            # register() too: a module may import its extra's packages there (dashboard.cli imports django)
            importlib.import_module(name).register(sub)
        except ImportError as exc:  # a role's extra is not installed: its commands are simply absent
            logging.getLogger(__name__).debug("commands of %s unavailable: %s", name, exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except StethError as exc:
        print(f"steth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
