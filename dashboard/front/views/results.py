"""Results: list and export (filtered), recording detail with review, audio, FHIR, patient timeline."""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any, cast

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.views.decorators.http import require_GET, require_POST

from dashboard.clinic import access
from dashboard.clinic.export import csv_lines
from dashboard.clinic.fhir import observation
from dashboard.clinic.models import LISTING_DEFERRED, Clinic, Result
from dashboard.clinic.recordings import media_path, playback_file
from dashboard.front.charts import Point, heart_rate_chart
from dashboard.front.decorators import allowed
from dashboard.front.forms import ResultFilterForm, ReviewForm
from device.core.errors import ModelError
from device.core.features import FeatureParams
from device.core.inference import available_models, describe_model

PAGE_SIZE = 50
COUNT_CAP = 10_000  # results counted at most: beyond it, the filters narrow better than paging


class CappedPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows: COUNT(*) over a million results takes half a second on every
    page view, counting the first ten thousand a few milliseconds. ``capped`` says the count stopped."""

    @functools.cached_property
    def count(self) -> int:
        return int(cast("QuerySet[Any]", self.object_list)[: COUNT_CAP + 1].count())

    @property
    def capped(self) -> bool:
        return self.count > COUNT_CAP


def _visible(request: HttpRequest, result_id: uuid.UUID) -> Result:
    # 404 rather than 403 for another clinic's result: do not confirm that it exists
    return get_object_or_404(access.visible_results(request.user).prefetch_related("reviews__reviewer"), pk=result_id)


@require_GET
@allowed(access.is_clinical)
def result_list(request: HttpRequest) -> HttpResponse:
    form = ResultFilterForm(request.GET or None)
    qs = access.visible_results(request.user).defer(*LISTING_DEFERRED).prefetch_related("reviews__reviewer")
    if request.GET:
        qs = form.apply(qs)
    page = CappedPaginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "front/results.html", {"form": form, "page": page, "query": query.urlencode()})


@require_GET
@allowed(access.can_export)
def export_csv(request: HttpRequest) -> StreamingHttpResponse:
    form = ResultFilterForm(request.GET or None)
    qs = access.visible_results(request.user).prefetch_related("reviews__reviewer")
    if request.GET:
        qs = form.apply(qs)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(csv_lines(qs.iterator(chunk_size=500)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="steth-results-{stamp}.csv"'
    return response


@functools.cache
def _shipped_windowing(model_name: str) -> tuple[float, float] | None:
    """(window_s, hop_s) from the sidecar of the model of that name this dashboard ships, if it ships one."""
    if model_name not in available_models():  # a name, never a path from a message
        return None
    try:
        params = FeatureParams.from_dict(describe_model(model_name)[1]["feature_params"])
    except (ModelError, KeyError, TypeError, ValueError):
        return None
    return params.window_s, params.hop_s


def windowing(result: Result) -> tuple[float, float]:
    """How long the result's windows are and how far apart: as its message says (schema v2); for a
    version 1 message, which does not say, from the sidecar of the model that produced it."""
    message = result.message if isinstance(result.message, dict) else {}
    window_s, hop_s = message.get("window_s"), message.get("hop_s")
    if isinstance(window_s, int | float) and isinstance(hop_s, int | float):
        return float(window_s), float(hop_s)
    default = FeatureParams()
    return _shipped_windowing(result.model_name) or (default.window_s, default.hop_s)


def _waveform_data(result: Result) -> dict[str, Any]:
    focus = "abnormal" if "abnormal" in result.probabilities else result.label
    window_s, _ = windowing(result)
    return {
        "audioUrl": reverse("result-audio", args=[result.result_id]),
        "duration": result.duration_s,
        "windowSeconds": window_s,
        "focus": focus,
        "windows": [{"start": w["start_s"], "p": float(w["probabilities"].get(focus, 0.0))} for w in result.windows],
    }


@require_GET
@allowed(access.is_clinical)
def detail(request: HttpRequest, result_id: uuid.UUID) -> HttpResponse:
    result = _visible(request, result_id)
    form = ReviewForm(model_label=result.label) if access.can_review(request.user) else None
    return _render_detail(request, result, form)


def _render_detail(
    request: HttpRequest, result: Result, review_form: ReviewForm | None, status: int = 200
) -> HttpResponse:
    recording = result.recording_or_none
    declared = (result.audio_declared or {}).get("sha256")
    context = {
        "result": result,
        "recording": recording,
        "audio_mismatch": bool(recording and declared and recording.sha256 != declared),
        "reviews": list(result.reviews.all()),
        "review_form": review_form,
        "waveform": _waveform_data(result),
        "window_s": windowing(result)[0],
        "windows_json": json.dumps(result.windows),
    }
    return render(request, "front/result.html", context, status=status)


@require_POST
@allowed(access.can_review)
def review(request: HttpRequest, result_id: uuid.UUID) -> HttpResponse:
    result = _visible(request, result_id)
    form = ReviewForm(request.POST, model_label=result.label)
    if not form.is_valid():
        # the page again with the form as typed and the reason beside it (a redirect lost the note); 400
        return _render_detail(request, result, form, status=400)
    data = form.cleaned_data
    result.add_review(request.user, agrees=data["agrees"], label=data["label"], note=data["note"].strip())
    messages.success(request, "Review saved.")
    return redirect("result", result_id=result.result_id)


def _recording(request: HttpRequest, result_id: uuid.UUID) -> Any:
    result = _visible(request, result_id)
    recording = result.recording_or_none
    if recording is None:
        raise Http404("no recording was received for this result")
    return recording


@require_GET
@allowed(access.is_clinical)
def playback_audio(request: HttpRequest, result_id: uuid.UUID) -> FileResponse:
    path = playback_file(_recording(request, result_id))
    response = FileResponse(open(path, "rb"), content_type="audio/wav")  # noqa: SIM115 - FileResponse closes it
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@allowed(access.is_clinical)
def original_audio(request: HttpRequest, result_id: uuid.UUID) -> FileResponse:
    recording = _recording(request, result_id)
    return FileResponse(
        open(media_path(recording.file.name), "rb"),
        as_attachment=True,
        filename=f"{recording.result_id}.{recording.format}",
        content_type=f"audio/{recording.format}",
    )


@require_GET
@allowed(access.is_clinical)
def fhir_json(request: HttpRequest, result_id: uuid.UUID) -> JsonResponse:
    result = _visible(request, result_id)
    exam_review = result.exam.latest_review if result.exam else None  # a reviewed exam reviewed its sites
    response = JsonResponse(observation(result, exam_review=exam_review), json_dumps_params={"indent": 2})
    response["Content-Type"] = "application/fhir+json"
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="observation-{result.result_id}.json"'
    return response


@require_GET
@allowed(access.is_clinical)
def patient(request: HttpRequest, clinic: str, patient_ref: str) -> HttpResponse:
    qs = access.visible_results(request.user).filter(patient_ref=patient_ref)
    clinic_obj = None
    if clinic == "-":
        qs = qs.filter(clinic__isnull=True)
    else:
        clinic_obj = get_object_or_404(Clinic, slug=clinic)
        qs = qs.filter(clinic=clinic_obj)
    results = list(qs.defer(*LISTING_DEFERRED).prefetch_related("reviews__reviewer").order_by("-recorded_at")[:500])
    if not results:
        raise Http404("no results for this patient that you may see")
    points = [
        Point(
            r.recorded_at,
            r.heart_rate_bpm,
            r.label,
            f"{date_format(timezone.localtime(r.recorded_at), 'Y-m-d H:i')}: {r.summary}",
        )
        for r in results
    ]
    return render(
        request,
        "front/patient.html",
        {"patient_ref": patient_ref, "clinic": clinic_obj, "results": results, "chart": heart_rate_chart(points)},
    )
