"""`steth dashboard ...`: the dashboard's Django commands (migrate, ingest, demodata, runserver, ...)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    import django  # noqa: F401 - without the dashboard extra, this command is simply absent

    parser = sub.add_parser(
        "dashboard",
        help="run a dashboard command: migrate, ingest, demodata, runserver, createuser, check --deploy ...",
        description="Runs a Django management command of the dashboard; `steth dashboard help` lists them all.",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="a Django management command and its options")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dashboard.manage import main

    main(args.args or ["help"])
    return 0
