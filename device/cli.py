"""`steth`: one command line, subcommands grouped by part of the system.

The shell knows no other package: each package declares its commands in pyproject.toml's
``steth.commands`` entry-point group (``name = "module:register [extra]"``) and this module loads
whatever the installed distribution declares. A command whose extra is not installed is absent from
the help and, when called, says which extra to install. Heavy imports (TensorFlow, Django, librosa)
happen inside the command that needs them, so `steth --help` and the device's commands start fast.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from device import __version__
from device.core.errors import StethError

COMMAND_GROUP = "steth.commands"
DISTRIBUTION = "stethoscope-edge"
log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_RE = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


@functools.cache
def _extra_requirements() -> dict[str, tuple[str, ...]]:
    """Each extra's required distributions, from the installed package's own metadata."""
    out: dict[str, list[str]] = {}
    for req in metadata.requires(DISTRIBUTION) or []:
        extra, name = _EXTRA_RE.search(req), _NAME_RE.match(req)
        if extra and name:
            out.setdefault(extra[1], []).append(name[1])
    return {k: tuple(v) for k, v in out.items()}


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_extras(extras: Sequence[str]) -> list[str]:
    """The extras among ``extras`` of which some requirement is not installed."""
    reqs = _extra_requirements()
    return [e for e in extras if not all(_installed(n) for n in reqs.get(e, ()))]


def command_entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=COMMAND_GROUP))


def _needs_extra(name: str, extras: Sequence[str]) -> Callable[[argparse.Namespace], int]:
    spec = ",".join(extras)

    def refuse(_args: argparse.Namespace) -> int:
        noun = "extra" if len(extras) == 1 else "extras"
        print(
            f"steth: {name!r} needs the {' and '.join(extras)} {noun}: pip install '{DISTRIBUTION}[{spec}]'",
            file=sys.stderr,
        )
        return 2

    return refuse


def _add_placeholder(sub: Any, name: str, extras: Sequence[str]) -> None:
    # no help= (so it is not listed), no options of its own: whatever follows the name is accepted and
    # the command only says what to install
    p = sub.add_parser(name, add_help=False, prefix_chars="\0")
    p.add_argument("rest", nargs="*")
    p.set_defaults(func=_needs_extra(name, extras))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steth",
        description="stethoscope-edge: heart-sound screening support on a Raspberry Pi (not a diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"stethoscope-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    entry_points = command_entry_points()
    if not entry_points:
        log.warning("no %s entry points: is %s installed (pip install -e .)?", COMMAND_GROUP, DISTRIBUTION)
    for ep in entry_points:
        missing = missing_extras(ep.extras)
        if missing:  # this role was installed without the extra: the command is absent, and says so
            _add_placeholder(sub, ep.name, missing)
            continue
        try:
            # register() too: a module may import its extra's packages there (dashboard.cli imports django)
            ep.load()(sub)
        except ImportError as exc:
            log.debug("commands of %s unavailable: %s", ep.value, exc)
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
