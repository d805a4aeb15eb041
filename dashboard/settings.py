"""Django settings, read only from the environment (see dashboard/README.md for every variable).

Development: ``DEBUG=1`` and nothing else. Production: ``SECRET_KEY`` (or ``SECRET_KEY_FILE``),
``ALLOWED_HOSTS`` and ``DATABASE_URL``; the security settings then default to what
``manage.py check --deploy`` asks for.
"""

from __future__ import annotations

import socket
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from dashboard.lib.env import env_bool, env_choice, env_int, env_list, env_path, env_str, env_url
from device.core import contract

BASE_DIR = Path(__file__).resolve().parent.parent
# Databases, media and collected static files live here unless set one by one (in production e.g.
# STETH_VAR_DIR=/var/lib/stethoscope-edge); never relative to the current directory.
VAR_DIR = env_path("STETH_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`"
        )
    SECRET_KEY = "development-only-key-never-used-when-debug-is-off-0123456789abcdef"  # noqa: S105
elif not DEBUG and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(f"SECRET_KEY is {len(SECRET_KEY)} characters long: use at least 50 random ones")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not ALLOWED_HOSTS and not DEBUG:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the dashboard's host names when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "dashboard.clinic",
    "dashboard.ingest",
    "dashboard.front",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "dashboard.lib.security.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "dashboard.front.middleware.ClinicTimeZoneMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.front.context.roles",
                "dashboard.front.context.time_zone",
            ],
        },
    },
]

# -- database: SQLite by default, PostgreSQL in production (DATABASE_URL or DATABASE_URL_FILE)
DATABASE_URL = env_url(
    "DATABASE_URL", f"sqlite:///{VAR_DIR / 'dashboard.sqlite3'}", ("sqlite", "postgres", "postgresql")
)
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0))
_db["CONN_HEALTH_CHECKS"] = True
if _db["ENGINE"].endswith("sqlite3"):
    # Several processes (web, ingest workers) share one file: wait for the lock instead of failing, and
    # take the write lock at BEGIN so two writers never deadlock upgrading a read lock.
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600, minimum=300)  # one clinical shift
# Login brute force (front/login_throttle.py): failures per user name and address before a lockout, and
# its length; counted in a file cache every web worker shares.
STETH_LOGIN_MAX_FAILURES = env_int("STETH_LOGIN_MAX_FAILURES", 5, minimum=1, maximum=100)
STETH_LOGIN_LOCKOUT_S = env_int("STETH_LOGIN_LOCKOUT_S", 900, minimum=10, maximum=86400)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "login-throttle": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "cache" / "login-throttle"),
    },
}

LANGUAGE_CODE = "en"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

# -- static files: collected to STATIC_ROOT and served by WhiteNoise (hashed names in production)
STATIC_URL = "/static/"
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "static")
_manifest = env_bool("STETH_STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if _manifest
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Recordings are never served as public media: only through views that check who may hear them.
MEDIA_ROOT = env_path("STETH_MEDIA_ROOT", VAR_DIR / "media")

# -- security: production defaults are what `check --deploy` asks for; behind a TLS proxy set
# STETH_BEHIND_PROXY=1 so Django trusts its X-Forwarded-Proto header.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
if env_bool("STETH_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# -- MQTT ingest
STETH_MQTT_URL = env_url("STETH_MQTT_URL", "mqtt://127.0.0.1:1883", ("mqtt", "mqtts"))
STETH_MQTT_USERNAME = env_str("STETH_MQTT_USERNAME")
STETH_MQTT_PASSWORD = env_str("STETH_MQTT_PASSWORD")  # or STETH_MQTT_PASSWORD_FILE
STETH_MQTT_CA_FILE = env_str("STETH_MQTT_CA_FILE")  # mqtts: the CA that signed the broker (system CAs if empty)
# Each worker needs its own stable id: the broker keeps that session's messages while it is down.
STETH_MQTT_CLIENT_ID = env_str("STETH_MQTT_CLIENT_ID", f"svc.ingest.{socket.gethostname()}"[:64])
STETH_MQTT_SESSION_EXPIRY_S = env_int("STETH_MQTT_SESSION_EXPIRY_S", 7 * 24 * 3600, minimum=60)
STETH_MQTT_KEEPALIVE_S = env_int("STETH_MQTT_KEEPALIVE_S", 30, minimum=5, maximum=3600)
STETH_INGEST_RECEIVE_MAXIMUM = env_int("STETH_INGEST_RECEIVE_MAXIMUM", 256, minimum=1, maximum=65535)
# Messages already received are stored this many at a time, in one transaction (1: one per message).
STETH_INGEST_BATCH_SIZE = env_int("STETH_INGEST_BATCH_SIZE", 128, minimum=1, maximum=1000)
STETH_INGEST_MAX_BACKOFF_S = env_int("STETH_INGEST_MAX_BACKOFF_S", 30, minimum=1, maximum=600)
# Known devices are registered by an admin (or provisioning); the demo turns this on instead.
STETH_INGEST_AUTO_REGISTER = env_bool("STETH_INGEST_AUTO_REGISTER", False)
STETH_MAX_AUDIO_BYTES = env_int(
    "STETH_MAX_AUDIO_BYTES", contract.MAX_AUDIO_BYTES, minimum=1024, maximum=contract.MAX_AUDIO_BYTES
)

# -- uploads from the dashboard
STETH_MAX_UPLOAD_BYTES = env_int("STETH_MAX_UPLOAD_BYTES", 16 * 1024 * 1024, minimum=1024, maximum=256 * 1024**2)
STETH_MAX_UPLOAD_SECONDS = env_int("STETH_MAX_UPLOAD_SECONDS", 600, minimum=5, maximum=3600)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# The model uploads are classified with (device.core.inference.load_model name).
STETH_UPLOAD_MODEL = env_str("STETH_UPLOAD_MODEL", "screening")

# -- logging: text for a terminal, JSON lines for a log collector
STETH_LOG_FORMAT = env_choice("STETH_LOG_FORMAT", "text", ("text", "json"))
STETH_LOG_LEVEL = env_choice("STETH_LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "dashboard.lib.jsonlog.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": STETH_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "dashboard": {"level": STETH_LOG_LEVEL},
        "django": {"level": "INFO" if STETH_LOG_LEVEL == "DEBUG" else "WARNING"},
    },
}
