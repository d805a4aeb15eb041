"""Drills: the real system under faults and attacks. Light form in CI (`-m "drill and not full"`), full
form on demand (`-m "drill and full"`). Dashboard fixtures come from tests/dashboard (Django is set
up there, with the same throwaway settings)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.dashboard.settings")

from tests.dashboard.conftest import (  # noqa: F401 - fixtures, re-exported for the drills
    PASSWORD,
    admin_user,
    clinic_a,
    clinic_b,
    device_a,
    login,
    make_result,
    make_user,
    nurse_a,
    physician,
    sample_flac,
)

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "artifacts" / "drills"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    # The full form runs only when asked for by name (-m "drill and full"): CI runs everything else.
    asked = "full" in (config.option.markexpr or "")
    skip_full = pytest.mark.skip(reason='the long form: run it with -m "drill and full"')
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.drill)
            if not asked and item.get_closest_marker("full"):
                item.add_marker(skip_full)


@pytest.fixture(scope="session")
def record_figures():
    """Write a drill's figures to artifacts/drills/<name>.json (RELIABILITY.md quotes the last run)."""

    def _record(name: str, figures: dict[str, Any]) -> None:
        FIGURES.mkdir(parents=True, exist_ok=True)
        (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")

    return _record
