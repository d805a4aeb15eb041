"""Access checks for views: login first, then a rule from dashboard.clinic.access."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

View = Callable[..., HttpResponseBase]


def allowed(rule: Callable[[Any], bool]) -> Callable[[View], View]:
    """Logged-in users for whom ``rule(user)`` holds; others get 403 (anonymous: the login page)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not rule(request.user):
                raise PermissionDenied("your role does not give access to this page")
            return view(request, *args, **kwargs)

        return login_required(wrapped)

    return decorate
