"""The dashboard's database tests again, against the running PostgreSQL.

Django fixes its database when it starts, so one pytest process cannot run the same tests on SQLite
and on PostgreSQL. This test runs every dashboard test but the browser ones in a second pytest with
STETH_TEST_DB=postgresql (a database made for that run on 127.0.0.1:5432, user postgres, dropped
after it). Run only that pass with `STETH_TEST_DB=postgresql pytest tests/dashboard -m "not browser"`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from django.conf import settings

from tests.dashboard.conftest import REPO

pytestmark = pytest.mark.slow


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.timeout(900)
def test_the_dashboard_tests_pass_on_postgresql():
    if settings.TEST_DB == "postgresql":
        pytest.skip("this is the PostgreSQL pass already")
    if not _postgres_up() and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 (bash scripts/services.sh starts it)")
    env = {**os.environ, "STETH_TEST_DB": "postgresql"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not browser", "tests/dashboard"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"PostgreSQL pass: {summary}")
    assert proc.returncode == 0, f"PostgreSQL pass failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in summary and " failed" not in summary
