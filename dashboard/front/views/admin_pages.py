"""Admin pages: register and assign devices, read dead letters and refused recordings. Users are managed in
Django's admin."""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from dashboard.clinic import access
from dashboard.clinic.models import DeadLetter, Device, RefusedRecording
from dashboard.front.decorators import allowed
from dashboard.front.forms import DeviceForm

REFUSED_DAYS = 7  # the Devices page counts refused recordings over this many days


def devices_with_refusals() -> list[Device]:
    """Every device, each with ``refused_recent``: recordings it refused in the last REFUSED_DAYS days."""
    since = timezone.now() - dt.timedelta(days=REFUSED_DAYS)
    return list(
        Device.objects.select_related("clinic").annotate(
            refused_recent=Count("refusals", filter=Q(refusals__received_at__gte=since))
        )
    )


@allowed(access.can_manage)
def devices(request: HttpRequest) -> HttpResponse:
    form = DeviceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = form.save()
        messages.success(request, f"Device {device.device_id} registered: its messages are now accepted.")
        return redirect("devices")
    return render(
        request,
        "front/devices.html",
        {"devices": devices_with_refusals(), "form": form, "refused_days": REFUSED_DAYS},
        status=400 if form.errors else 200,
    )


@allowed(access.can_manage)
def device_edit(request: HttpRequest, device_id: str) -> HttpResponse:
    device = get_object_or_404(Device, device_id=device_id)
    form = DeviceForm(request.POST or None, instance=device)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Device {device.device_id} saved.")
        return redirect("devices")
    return render(request, "front/device.html", {"device": device, "form": form})


@allowed(access.can_manage)
def dead_letters(request: HttpRequest) -> HttpResponse:
    qs = DeadLetter.objects.defer("payload")
    reason = request.GET.get("reason", "")
    if reason:
        qs = qs.filter(reason=reason)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "front/dead_letters.html", {"page": page, "reasons": DeadLetter.REASONS, "reason": reason})


@allowed(access.can_manage)
def dead_letter(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "front/dead_letter.html", {"letter": get_object_or_404(DeadLetter, pk=pk)})


@allowed(lambda u: access.can_manage(u) or access.is_clinical(u))
def refused(request: HttpRequest) -> HttpResponse:
    """Recordings the devices could not analyse (no result exists for them), newest first, per device."""
    qs = access.visible_refusals(request.user)
    device_id = request.GET.get("device", "")
    reason = request.GET.get("reason", "")
    if device_id:
        qs = qs.filter(device__device_id=device_id)
    if reason:
        qs = qs.filter(reason=reason)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    reasons = sorted(set(RefusedRecording.objects.values_list("reason", flat=True).distinct()))
    return render(
        request, "front/refused.html", {"page": page, "device_id": device_id, "reason": reason, "reasons": reasons}
    )
