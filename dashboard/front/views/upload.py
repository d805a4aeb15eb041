"""Upload a recording: it is checked, classified on the server like on a device, then shown as a result."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from dashboard.clinic import access
from dashboard.clinic.uploads import UploadRequest, classify_upload
from dashboard.front.decorators import allowed
from dashboard.front.forms import UploadForm
from device.core.errors import StethError

log = logging.getLogger(__name__)


@allowed(access.can_upload)
def upload(request: HttpRequest) -> HttpResponse:
    limit = settings.STETH_MAX_UPLOAD_BYTES
    clinics = access.upload_clinics(request.user)
    status = 200
    if request.method == "POST":
        # refuse an oversized body before Django spools it to disk
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
            form = UploadForm(clinics=clinics, max_bytes=limit)
            form.cleaned_data = {}  # an unbound form has none, and add_error needs it (else a 500)
            form.add_error(
                None, f"the upload is larger than the {limit / 1e6:.0f} MB limit: upload a shorter recording"
            )
            return render(request, "front/upload.html", {"form": form, "limit": limit}, status=413)
        form = UploadForm(request.POST, request.FILES, clinics=clinics, max_bytes=limit)
        if form.is_valid():
            f = form.cleaned_data["recording"]
            try:
                result = classify_upload(
                    UploadRequest(
                        data=f.read(),
                        filename=f.name,
                        clinic=form.cleaned_data["clinic"],
                        patient_ref=form.cleaned_data["patient_ref"],
                        location=form.cleaned_data["location"],
                        uploaded_by=request.user,
                    )
                )
            except StethError as exc:
                log.info("upload %r refused: %s", f.name, exc)
                form.add_error("recording", str(exc))
            else:
                messages.success(request, f"“{f.name}” classified: {result.label}.")
                return redirect("result", result_id=result.result_id)
        status = 400
    else:
        form = UploadForm(clinics=clinics, max_bytes=limit)
    return render(request, "front/upload.html", {"form": form, "limit": limit}, status=status)
