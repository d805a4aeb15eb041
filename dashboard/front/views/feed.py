"""Overview: devices, counts awaiting review, and the live feed (the page polls ``feed_json``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard.clinic import access
from dashboard.clinic.models import AWAITING_REVIEW_LABELS, Result, Review
from dashboard.front.decorators import allowed

FEED_SIZE = 25


def awaiting_counts(results: QuerySet[Result]) -> dict[str, int]:
    unreviewed = results.exclude(Exists(Review.objects.filter(result=OuterRef("pk"))))
    counts = unreviewed.aggregate(**{label: Count("pk", filter=Q(label=label)) for label in AWAITING_REVIEW_LABELS})
    return {label: int(counts[label]) for label in AWAITING_REVIEW_LABELS}


def feed_item(result: Result) -> dict[str, Any]:
    clinic = result.clinic.slug if result.clinic else "-"
    return {
        "id": str(result.result_id),
        "url": reverse("result", args=[result.result_id]),
        "received_at": result.received_at.isoformat(),
        "recorded_at": result.recorded_at.isoformat(),
        "device": result.device.device_id if result.device else "upload",
        "clinic": result.clinic.name if result.clinic else "",
        "patient_ref": result.patient_ref,
        "patient_url": reverse("patient", args=[clinic, result.patient_ref]) if result.patient_ref else "",
        "label": result.label,
        "confidence": result.confidence,
        "heart_rate_bpm": result.heart_rate_bpm,
        "quality_ok": result.quality_ok,
        "reviewed": bool(getattr(result, "n_reviews", 0)),
    }


def device_item(device: Any) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "state": device.state,
        "last_seen": device.last_seen.isoformat() if device.last_seen else None,
    }


def _feed(user: Any, since: datetime | None) -> list[Result]:
    qs = access.visible_results(user).annotate(n_reviews=Count("reviews"))
    if since is not None:
        # >= and the client de-duplicates by id: two results in the same microsecond are both shown
        return list(qs.filter(received_at__gte=since).order_by("-received_at")[:FEED_SIZE])
    return list(qs.order_by("-received_at")[:FEED_SIZE])


@require_GET
@allowed(lambda u: access.is_clinical(u) or access.can_manage(u))
def overview(request: HttpRequest) -> HttpResponse:
    results = access.visible_results(request.user)
    return render(
        request,
        "front/overview.html",
        {
            "devices": access.visible_devices(request.user),
            "feed": [feed_item(r) for r in _feed(request.user, None)],
            "counts": awaiting_counts(results),
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
            "devices": [device_item(d) for d in access.visible_devices(request.user)],
        }
    )
