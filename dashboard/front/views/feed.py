"""Overview: the worklist of exams, exams per day, devices, counts awaiting review, and the live feed
(the page polls ``feed_json``)."""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Case, Count, F, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard.clinic import access
from dashboard.clinic.models import AWAITING_REVIEW_LABELS, LISTING_DEFERRED, Exam, Result
from dashboard.front.charts import DayCounts, exams_per_day
from dashboard.front.decorators import allowed
from dashboard.front.templatetags.steth import FORMAT

FEED_SIZE = 25
# A clinic has a few dozen devices, a physician may see a thousand: the overview lists those needing
# attention first (offline, never reported, longest unseen) and counts the rest by state.
OVERVIEW_DEVICES = 50
WORKLIST_SIZE = 30
CHART_DAYS = 14
CHART_GROUPS = 12  # clinic/device charts at most: the busiest


def awaiting_counts(results: QuerySet[Result]) -> dict[str, int]:
    # Exactly the rows of the partial index result_awaiting_review, counting a column it holds (label,
    # not the key): an index-only count of the backlog, never a visit to the table's rows.
    unreviewed = results.filter(label__in=AWAITING_REVIEW_LABELS, reviewed=False).order_by()
    counts = unreviewed.aggregate(**{label: Count("label", filter=Q(label=label)) for label in AWAITING_REVIEW_LABELS})
    return {label: int(counts[label]) for label in AWAITING_REVIEW_LABELS}


def feed_item(result: Result) -> dict[str, Any]:
    clinic = result.clinic.slug if result.clinic else "-"
    return {
        "id": str(result.result_id),
        "url": reverse("result", args=[result.result_id]),
        "received_at": result.received_at.isoformat(),
        # the page's one format, in the clinic's zone (feed.js formats live rows the same way)
        "received_local": date_format(timezone.localtime(result.received_at), FORMAT),
        "recorded_at": result.recorded_at.isoformat(),
        "device": result.device.device_id if result.device else "upload",
        "clinic": result.clinic.name if result.clinic else "",
        "patient_ref": result.patient_ref,
        "patient_url": reverse("patient", args=[clinic, result.patient_ref]) if result.patient_ref else "",
        "label": result.label,
        "summary": result.summary,
        "confidence": result.confidence,
        "heart_rate_bpm": result.heart_rate_bpm,
        "quality_ok": result.quality_ok,
        "reviewed": result.reviewed,
    }


def worklist_item(exam: Exam) -> dict[str, Any]:
    """What the worklist shows of an exam (overview.html renders the same on the first load)."""
    return {
        "id": exam.pk,
        "url": reverse("exam", args=[exam.pk]),
        "label": exam.label,
        "murmur": exam.murmur,
        "reviewed": exam.reviewed,
        "reason": exam.reason,
        "patient_ref": exam.patient_ref,
        "started_local": date_format(timezone.localtime(exam.started_at), FORMAT) if exam.started_at else "",
        "started_at": exam.started_at.isoformat() if exam.started_at else "",
        "device": exam.device.device_id if exam.device else "upload",
        "clinic": exam.clinic.name if exam.clinic else "",
    }


def device_item(device: Any) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "state": device.state,
        "last_seen": device.last_seen.isoformat() if device.last_seen else None,
    }


def _feed(user: Any, since: datetime | None) -> list[Result]:
    # No join with the reviews (Result.reviewed says it): the newest 25 come straight from the
    # received_at index instead of grouping every result first (seconds with a million results).
    qs = access.visible_results(user).defer(*LISTING_DEFERRED)
    if since is not None:
        # >= and the client de-duplicates by id: two results in the same microsecond are both shown
        qs = qs.filter(received_at__gte=since)
    return list(qs.order_by("-received_at")[:FEED_SIZE])


def overview_devices(user: Any) -> tuple[list[Any], dict[str, int]]:
    """The devices to list (those needing attention first, at most OVERVIEW_DEVICES) and counts by state."""
    visible = access.visible_devices(user)
    attention = Case(When(state="offline", then=Value(0)), When(state="unknown", then=Value(1)), default=Value(2),
                     output_field=IntegerField())  # fmt: skip
    listed = list(visible.order_by(attention, F("last_seen").asc(nulls_first=True), "device_id")[:OVERVIEW_DEVICES])
    by_state = dict(visible.order_by().values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    return listed, {"total": sum(by_state.values()), **by_state}


def worklist(user: Any) -> list[Exam]:
    """Exams to read: not reviewed first; findings (abnormal, murmur) before normal, then unsure; newest first.

    Unsure exams come last among the unreviewed: they have no answer to confirm, the nurse re-records
    them (the device says so at the bedside), and the physician's time goes first to what was found.
    """
    return list(access.visible_exams(user).order_by("reviewed", "priority", "-received_at")[:WORKLIST_SIZE])


def exam_chart_groups(user: Any, today: date) -> list[DayCounts]:
    """Exams per day by answer over the last CHART_DAYS days, per clinic and device (local days)."""
    since = datetime.combine(
        today - timedelta(days=CHART_DAYS - 1), datetime.min.time(), timezone.get_current_timezone()
    )
    rows = (
        access.visible_exams(user)
        .filter(started_at__gte=since)
        .order_by()
        .values("clinic__name", "device__device_id", "label", day=TruncDate("started_at"))
        .annotate(n=Count("pk"))
    )
    groups: dict[tuple[str, str], dict[date, dict[str, int]]] = {}
    for row in rows:
        key = (row["clinic__name"] or "no clinic", row["device__device_id"] or "uploads")
        groups.setdefault(key, {}).setdefault(row["day"], {})[row["label"] or "unsure"] = row["n"]
    busiest = sorted(groups.items(), key=lambda kv: -sum(sum(c.values()) for c in kv[1].values()))[:CHART_GROUPS]
    return [DayCounts(clinic, device, counts) for (clinic, device), counts in sorted(busiest)]


@require_GET
@allowed(lambda u: access.is_clinical(u) or access.can_manage(u))
def overview(request: HttpRequest) -> HttpResponse:
    results = access.visible_results(request.user)
    devices, device_counts = overview_devices(request.user)
    today = timezone.localdate()
    return render(
        request,
        "front/overview.html",
        {
            "devices": devices,
            "device_counts": device_counts,
            "feed": [feed_item(r) for r in _feed(request.user, None)],
            "counts": awaiting_counts(results),
            "worklist": worklist(request.user),
            "exam_charts": exams_per_day(exam_chart_groups(request.user, today), days=CHART_DAYS, today=today),
            # recordings no result exists for (device/edge/refusals.py): a kit that keeps failing shows here
            "refused_recent": access.visible_refusals(request.user)
            .filter(received_at__gte=timezone.now() - dt.timedelta(hours=24))
            .count(),
        },
    )


@never_cache
@require_GET
@allowed(lambda u: access.is_clinical(u) or access.can_manage(u))
def feed_json(request: HttpRequest) -> JsonResponse:
    since = parse_datetime(request.GET.get("since", "") or "") if request.GET.get("since") else None
    results = access.visible_results(request.user)
    return JsonResponse(
        {
            "results": [feed_item(r) for r in _feed(request.user, since)],
            "counts": awaiting_counts(results),
            "devices": [device_item(d) for d in overview_devices(request.user)[0]],
            "worklist": [worklist_item(e) for e in worklist(request.user)],
        }
    )
