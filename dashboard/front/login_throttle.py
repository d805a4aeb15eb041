"""Login brute force: after STETH_LOGIN_MAX_FAILURES failed logins for one user name from one address,
that pair is locked out for STETH_LOGIN_LOCKOUT_S (even the right password is refused meanwhile, so
guessing learns nothing), and one address is locked out after ten times as many failures across names
(password spraying).

Counts live in the ``login-throttle`` cache (a file cache under STETH_VAR_DIR, so every gunicorn worker
sees the same counts); they expire on their own. A successful login clears its pair's count.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import caches
from django.http import HttpRequest

log = logging.getLogger(__name__)

CACHE = "login-throttle"
SPRAY_FACTOR = 10


def client_address(request: HttpRequest) -> str:
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):  # STETH_BEHIND_PROXY: the proxy appends the client
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _key(*parts: str) -> str:
    return "login-fail:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


class LoginThrottle:
    def __init__(self, username: str, address: str) -> None:
        self.username = username.strip().lower()
        self.address = address
        self.cache = caches[CACHE]
        self.pair = _key("pair", self.username, address)
        self.spray = _key("address", address)

    @property
    def limit(self) -> int:
        return int(settings.STETH_LOGIN_MAX_FAILURES)

    @property
    def window_s(self) -> int:
        return int(settings.STETH_LOGIN_LOCKOUT_S)

    def locked(self) -> bool:
        return int(self.cache.get(self.pair, 0)) >= self.limit or int(self.cache.get(self.spray, 0)) >= (
            self.limit * SPRAY_FACTOR
        )

    def failed(self) -> None:
        for key in (self.pair, self.spray):
            self.cache.set(key, int(self.cache.get(key, 0)) + 1, timeout=self.window_s)
        if self.locked():
            log.warning("login locked for %r from %s after repeated failures", self.username, self.address)

    def succeeded(self) -> None:
        self.cache.delete(self.pair)


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing (without checking the password) while the pair is locked out."""

    def __init__(self, request: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        self.locked = False

    def clean(self) -> dict[str, Any]:
        username = str(self.data.get("username") or "")
        throttle = LoginThrottle(username, client_address(self.request) if self.request else "unknown")
        if throttle.locked():
            self.locked = True
            minutes = max(1, throttle.window_s // 60)
            raise forms.ValidationError(
                f"Too many failed logins. Try again in {minutes} minutes, or ask an administrator.",
                code="locked",
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            throttle.failed()
            raise
        throttle.succeeded()
        return cleaned
