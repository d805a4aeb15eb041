"""Settings come from the environment through helpers that refuse bad values."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from dashboard.lib.env import env_bool, env_choice, env_int, env_list, env_str, env_url
from dashboard.lib.jsonlog import JsonFormatter
from tests.dashboard.conftest import REPO

KEY = "k" * 20 + "-random-enough-for-a-test-0123456789abcdef"


def test_booleans_accept_only_clear_values():
    assert env_bool("X", False, {"X": "yes"}) is True and env_bool("X", True, {"X": "0"}) is False
    assert env_bool("X", True, {}) is True
    with pytest.raises(ImproperlyConfigured, match="X='maybe' is not a boolean"):
        env_bool("X", False, {"X": "maybe"})


def test_numbers_are_checked_against_their_bounds():
    assert env_int("N", 5, environ={"N": "1_000"}) == 1000
    with pytest.raises(ImproperlyConfigured, match="N='ten' is not a whole number"):
        env_int("N", 5, environ={"N": "ten"})
    with pytest.raises(ImproperlyConfigured, match="N=0 is below the minimum of 1"):
        env_int("N", 5, minimum=1, environ={"N": "0"})


def test_secrets_come_from_a_file_but_never_from_both(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert env_str("PW", "", {"PW_FILE": str(secret)}) == "s3cret"
    with pytest.raises(ImproperlyConfigured, match="PW and PW_FILE are both set"):
        env_str("PW", "", {"PW": "x", "PW_FILE": str(secret)})
    with pytest.raises(ImproperlyConfigured, match=r"PW_FILE=.* cannot be read"):
        env_str("PW", "", {"PW_FILE": str(tmp_path / "missing")})


def test_urls_lists_and_choices_are_validated():
    assert env_url("U", "mqtt://h:1883", ("mqtt", "mqtts"), {}) == "mqtt://h:1883"
    with pytest.raises(ImproperlyConfigured, match="U must start with one of mqtt://, mqtts://"):
        env_url("U", "", ("mqtt", "mqtts"), {"U": "http://broker"})
    with pytest.raises(ImproperlyConfigured, match="not a valid URL"):
        env_url("U", "", ("mqtt",), {"U": "mqtt://h:port"})
    assert env_list("L", [], {"L": "a, b,,c"}) == ["a", "b", "c"]
    with pytest.raises(ImproperlyConfigured, match="is not one of: text, json"):
        env_choice("F", "text", ("text", "json"), {"F": "xml"})


def _django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STETH_", "DJANGO_", "DATABASE_", "SECRET_"))}
    return subprocess.run(
        [sys.executable, "-m", "dashboard.manage", *args],
        cwd=REPO,
        env={**base, "DJANGO_SETTINGS_MODULE": "dashboard.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_production_settings_pass_the_deployment_checks(tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY)
    prod = {"SECRET_KEY_FILE": str(key), "ALLOWED_HOSTS": "steth.example.org", "STETH_VAR_DIR": str(tmp_path)}
    done = _django(prod, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stdout + done.stderr
    refused = _django({"STETH_VAR_DIR": str(tmp_path)}, "check")
    assert refused.returncode != 0 and "SECRET_KEY (or SECRET_KEY_FILE) must be set" in refused.stderr
    typo = _django({**prod, "STETH_INGEST_AUTO_REGISTER": "sometimes"}, "check")
    assert "STETH_INGEST_AUTO_REGISTER='sometimes' is not a boolean" in typo.stderr


@pytest.mark.slow
def test_postgresql_is_configured_from_database_url(tmp_path):
    env = {
        "DEBUG": "1",
        "STETH_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://steth:pw@db.internal:6543/dashboard",
    }
    code = "from django.conf import settings as s; import json; d=s.DATABASES['default']; print(json.dumps([d['ENGINE'], d['HOST'], d['PORT'], d['NAME']]))"  # noqa: E501
    done = _django(env, "shell", "-c", code)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        "django.db.backends.postgresql",
        "db.internal",
        6543,
        "dashboard",
    ], done.stderr


def test_json_logging_writes_one_object_per_line():
    record = logging.LogRecord("dashboard.ingest", logging.WARNING, __file__, 1, "stored %s", ("x",), None)
    record.result_id = "abc"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "stored x" and line["level"] == "warning" and line["result_id"] == "abc"
