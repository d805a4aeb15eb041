"""Times in the clinic's time zone: a nurse's clinic's (Clinic.time_zone), else the server's TIME_ZONE."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from dashboard.clinic import access


def clinic_time_zone(user: Any) -> zoneinfo.ZoneInfo | None:
    clinic = access.user_clinic(user) if getattr(user, "is_authenticated", False) else None
    if clinic is None or not clinic.time_zone:
        return None
    try:
        return zoneinfo.ZoneInfo(clinic.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None  # a mistyped zone in the admin: the server's, rather than an error on every page


class ClinicTimeZoneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = clinic_time_zone(getattr(request, "user", None))
        if zone is not None:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
