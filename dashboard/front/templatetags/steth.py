"""Template filters: one date-time format, in the clinic's time zone (the middleware activates it)."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

# The one format of every date-time on every page; feed.js writes the same (see its formatTime).
FORMAT = "Y-m-d H:i"


@register.filter
def when(value: datetime | None, empty: str = "never") -> SafeString | str:
    """``<time datetime="...">2026-12-05 23:02</time>`` in the active (clinic's) time zone."""
    if value is None:
        return empty
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), date_format(local, FORMAT))
