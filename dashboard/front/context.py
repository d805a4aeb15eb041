from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from dashboard.clinic import access


def roles(request: HttpRequest) -> dict[str, Any]:
    """What the navigation shows: the user's roles and what they may do."""
    user = request.user
    return {
        "roles": sorted(access.roles(user)),
        "may": {
            "clinical": access.is_clinical(user),
            "review": access.can_review(user),
            "export": access.can_export(user),
            "upload": access.can_upload(user),
            "manage": access.can_manage(user),
        },
    }


def time_zone(request: HttpRequest) -> dict[str, Any]:
    """The zone every time on the page is in (scripts format live updates in it too)."""
    return {"time_zone": timezone.get_current_timezone_name()}
