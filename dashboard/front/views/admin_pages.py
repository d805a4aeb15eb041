"""Admin pages: register and assign devices, read dead letters. Users are managed in Django's admin."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from dashboard.clinic import access
from dashboard.clinic.models import DeadLetter, Device
from dashboard.front.decorators import allowed
from dashboard.front.forms import DeviceForm


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
        {"devices": Device.objects.select_related("clinic"), "form": form},
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
