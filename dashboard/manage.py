"""Django's command line for the dashboard: `python -m dashboard.manage <command>` (or `steth dashboard`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["steth dashboard", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
