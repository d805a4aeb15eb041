"""Django settings for the dashboard tests: the real settings, a throwaway folder and database.

STETH_TEST_DB=postgresql runs against the PostgreSQL on 127.0.0.1:5432 (user postgres) in a database
made for this run and dropped after it; otherwise a SQLite file (a file, not memory, so ingest workers
started as separate processes share it with the test).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

VAR = Path(tempfile.mkdtemp(prefix="steth-dashboard-test-"))
(VAR / "static").mkdir()
atexit.register(shutil.rmtree, VAR, ignore_errors=True)

_saved = dict(os.environ)
os.environ.update({"DEBUG": "1", "STETH_VAR_DIR": str(VAR)})
for _name in ("SECRET_KEY", "SECRET_KEY_FILE", "DATABASE_URL", "DATABASE_URL_FILE", "ALLOWED_HOSTS"):
    os.environ.pop(_name, None)
try:
    from dashboard.settings import *  # noqa: F403
finally:
    os.environ.clear()
    os.environ.update(_saved)

TEST_DB = os.environ.get("STETH_TEST_DB", "sqlite")
if TEST_DB == "postgresql":
    _name = f"steth_test_{os.getpid()}"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _name,
            "USER": os.environ.get("STETH_TEST_PGUSER", "postgres"),
            "HOST": os.environ.get("STETH_TEST_PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("STETH_TEST_PGPORT", "5432"),
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": _name},
        }
    }
elif TEST_DB == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR / "test.sqlite3"),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
            "TEST": {"NAME": str(VAR / "test.sqlite3")},
        }
    }
else:
    raise RuntimeError(f"STETH_TEST_DB={TEST_DB!r}: use sqlite or postgresql")

DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins; tests only
STETH_INGEST_AUTO_REGISTER = False
