"""Attacks on the dashboard, through Django's test client on a real database: every URL without a login,
posts without a CSRF token, hostile uploads, login brute force, and the production cookie settings.

Broker attacks (TLS required, wrong passwords, cross-device publish/subscribe, revoked devices) are
tests/deploy/test_broker_security.py's; RELIABILITY.md lists them with these.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from dashboard.clinic.models import Recording, Result
from tests.drills.conftest import PASSWORD

pytestmark = [pytest.mark.drill, pytest.mark.django_db]

REPO = Path(__file__).resolve().parents[2]
REFUSED: Counter[str] = Counter()
PUBLIC = {"login", "admin:login"}  # the login forms themselves (they show no data)


@pytest.fixture(scope="module", autouse=True)
def _report(record_figures):
    yield
    record_figures("attacks", dict(REFUSED))


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CACHES = {
        **settings.CACHES,
        "login-throttle": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "throttle"),
        },
    }


# -- every URL, without a login ----------------------------------------------------------------------------------

FILL = {"uuid": str(uuid.uuid4()), "int": "1", "slug": "clinic-a", "str": "x", "path": "x"}


def _concrete(route: str) -> str:
    """A URL for a pattern: converters filled with plausible values, regex groups with a word."""
    route = re.sub(r"<(?:(\w+):)?\w+>", lambda m: FILL.get(m.group(1) or "str", "x"), route)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "x", route)  # admin's regex routes
    return route.lstrip("^").rstrip("$").replace("\\", "")


def all_urls(patterns: Any = None, prefix: str = "", ns: str = "") -> list[tuple[str, str]]:
    out = []
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            space = f"{ns}{p.namespace}:" if p.namespace else ns
            out += all_urls(p.url_patterns, prefix + str(p.pattern), space)
        elif isinstance(p, URLPattern):
            out.append((f"{ns}{p.name or ''}", "/" + _concrete(prefix + str(p.pattern))))
    return out


def test_every_url_refuses_a_visitor_without_a_login(client, device_a, make_result):
    make_result(device_a)
    urls = all_urls()
    assert len(urls) > 30, "the URLconf walk found too few URLs"
    for name, url in urls:
        if name in PUBLIC:
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            status = response.status_code
            REFUSED[f"unauthenticated {method.upper()}"] += 1
            hops = 0
            while status in (301, 302) and "login" not in response["Location"] and hops < 3:
                response = client.get(response["Location"])  # e.g. admin logout -> admin index -> login
                status, hops = response.status_code, hops + 1
            if status in (301, 302):
                assert "login" in response["Location"], f"{method} {url} ({name}) redirects to {response['Location']}"
            else:
                # 404: an admin URL for an object that does not exist, reached only after the login check
                assert status in (403, 404, 405), f"{method} {url} ({name}) answered {status} without a login"
                assert b"P-000123" not in response.content and b"clinic-a-pi-01" not in response.content


def test_the_login_page_itself_shows_no_data(client, device_a, make_result):
    make_result(device_a)
    page = client.get(reverse("login")).content
    assert b"clinic-a-pi-01" not in page and b"P-000123" not in page


# -- CSRF ---------------------------------------------------------------------------------------------------------


def test_posts_without_a_csrf_token_are_refused(nurse_a, physician, clinic_a, device_a, make_result, sample_flac):
    result = make_result(device_a)
    targets = [
        (nurse_a, reverse("upload"), {"recording": io.BytesIO(sample_flac), "clinic": clinic_a.pk}),
        (physician, reverse("review", args=[result.result_id]), {"verdict": "agree", "label": "abnormal"}),
        (physician, reverse("logout"), {}),
        (None, reverse("login"), {"username": "nurse-a", "password": PASSWORD}),
    ]
    for user, url, data in targets:
        client = Client(enforce_csrf_checks=True)
        if user is not None:
            client.force_login(user)
        response = client.post(url, data)
        REFUSED["post without a CSRF token"] += 1
        assert response.status_code == 403, f"{url} took a post without a CSRF token ({response.status_code})"
    assert Result.objects.count() == 1 and not result.reviews.exists()


# -- uploads ------------------------------------------------------------------------------------------------------


def _flac() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    sf.write(buf, rng.normal(0, 0.1, 4000 * 12), 4000, format="FLAC")
    return buf.getvalue()


HOSTILE_UPLOADS = {
    "png.wav": b"\x89PNG\r\n\x1a\n" + bytes(2000),
    "zip.flac": b"PK\x03\x04" + bytes(2000),
    "fake-header.wav": b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(64),
    "script.wav": b"<script>alert(1)</script>" * 40,
    "empty.wav": b"",
    "elf.flac": b"\x7fELF" + bytes(4000),
    "fLaC-then-junk.flac": b"fLaC" + bytes(4000),
}


def test_files_that_are_not_audio_are_refused_whatever_their_name(login, nurse_a, clinic_a):
    client = login(nurse_a)
    for name, data in HOSTILE_UPLOADS.items():
        upload = io.BytesIO(data)
        upload.name = name
        response = client.post(reverse("upload"), {"recording": upload, "clinic": clinic_a.pk})
        REFUSED["upload: not audio"] += 1
        assert response.status_code == 400, f"{name}: {response.status_code}"
        page = response.content.decode()
        assert "not a WAV or FLAC recording" in page or "empty" in page.lower(), f"{name}: {page[:2000]}"
    assert Result.objects.count() == 0 and Recording.objects.count() == 0


def test_an_oversized_upload_is_refused_before_it_is_read(login, nurse_a, clinic_a, settings):
    settings.STETH_MAX_UPLOAD_BYTES = 64 * 1024
    client = login(nurse_a)
    upload = io.BytesIO(b"RIFF" + bytes(2 * 1024 * 1024))
    upload.name = "huge.wav"
    response = client.post(reverse("upload"), {"recording": upload, "clinic": clinic_a.pk})
    REFUSED["upload: oversized"] += 1
    assert response.status_code == 413 and "limit" in response.content.decode()
    assert Result.objects.count() == 0


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd.wav", "..\\..\\windows\\system.ini.flac", "/etc/shadow.flac", "a/../../b.flac", "nul\x00.flac"],
)
def test_a_path_like_file_name_never_becomes_a_path(login, nurse_a, clinic_a, settings, tmp_path, name):
    pytest.importorskip("ai_edge_litert")
    if not any((REPO / "device" / "models").glob("*.tflite")):
        pytest.skip("no shipped model in device/models")
    client = login(nurse_a)
    upload = io.BytesIO(_flac())
    upload.name = name
    before = {p for p in tmp_path.rglob("*")}
    response = client.post(reverse("upload"), {"recording": upload, "clinic": clinic_a.pk})
    REFUSED["upload: path-like name"] += 1
    assert response.status_code in (302, 400), response.status_code
    written = {p for p in tmp_path.rglob("*")} - before
    media = Path(settings.MEDIA_ROOT).resolve()
    for path in written:
        assert media in path.resolve().parents or path.resolve() == media or "throttle" in str(path), path
        assert "passwd" not in path.name and "shadow" not in path.name and "system.ini" not in path.name
    for recording in Recording.objects.all():
        assert ".." not in recording.file.name and not recording.file.name.startswith("/")


# -- login brute force --------------------------------------------------------------------------------------------


def test_repeated_wrong_passwords_lock_the_account_out_for_that_address(nurse_a, settings):
    settings.STETH_LOGIN_MAX_FAILURES = 5
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for i in range(5):
        response = attacker.post(reverse("login"), {"username": "nurse-a", "password": f"guess-{i}"})
        assert response.status_code == 200 and "did not match" in response.content.decode()
        REFUSED["login: wrong password"] += 1
    # locked now: even the right password is refused, and says why
    response = attacker.post(reverse("login"), {"username": "nurse-a", "password": PASSWORD})
    REFUSED["login: locked out"] += 1
    assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in attacker.session
    # the nurse at her own workstation is not locked out by a stranger's guessing
    own = Client(REMOTE_ADDR="10.0.0.7")
    response = own.post(reverse("login"), {"username": "nurse-a", "password": PASSWORD})
    assert response.status_code == 302 and "_auth_user_id" in own.session


def test_password_spraying_from_one_address_is_locked_out(nurse_a, settings):
    settings.STETH_LOGIN_MAX_FAILURES = 2  # the address limit is ten times this
    sprayer = Client(REMOTE_ADDR="198.51.100.4")
    for i in range(20):
        sprayer.post(reverse("login"), {"username": f"user-{i}", "password": "Winter2026!"})
        REFUSED["login: sprayed"] += 1
    response = sprayer.post(reverse("login"), {"username": "nurse-a", "password": PASSWORD})
    assert response.status_code == 429 and "_auth_user_id" not in sprayer.session


def test_a_successful_login_clears_the_count(nurse_a, settings):
    settings.STETH_LOGIN_MAX_FAILURES = 3
    client = Client(REMOTE_ADDR="192.0.2.1")
    for _ in range(2):
        client.post(reverse("login"), {"username": "nurse-a", "password": "wrong-one"})
    assert client.post(reverse("login"), {"username": "nurse-a", "password": PASSWORD}).status_code == 302
    client.logout()
    for _ in range(2):
        client.post(reverse("login"), {"username": "nurse-a", "password": "wrong-two"})
    assert client.post(reverse("login"), {"username": "nurse-a", "password": PASSWORD}).status_code == 302


# -- production settings ------------------------------------------------------------------------------------------


def test_production_settings_make_cookies_secure_and_https_only(tmp_path):
    key = tmp_path / "key"
    key.write_text("k" * 60)
    code = (
        "from django.conf import settings as s; import django; django.setup(); "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS > 0, s.DEBUG, s.SESSION_COOKIE_SAMESITE)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "SECRET_KEY_FILE": str(key),
        "ALLOWED_HOSTS": "dashboard.example.org",
        "STETH_VAR_DIR": str(tmp_path / "var"),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "True", "True", "False", "Lax"]
    REFUSED["production settings checked"] += 1
