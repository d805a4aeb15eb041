"""Exams: the exam page (every site side by side), its review, and its FHIR DiagnosticReport."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard.clinic import access
from dashboard.clinic.fhir import exam_bundle
from dashboard.clinic.models import Exam, ExamReview, Result
from dashboard.front.decorators import allowed
from dashboard.front.forms import ReviewForm
from device.core import contract

SITE_ORDER = {site: i for i, site in enumerate(contract.SITES)}
ANSWER = "the exam's answer"


def _visible(request: HttpRequest, pk: int) -> Exam:
    return get_object_or_404(access.visible_exams(request.user).prefetch_related("exam_reviews__reviewer"), pk=pk)


def exam_results(exam: Exam) -> list[Result]:
    """The exam's results, in the order of the sites on the chest (aortic, pulmonic, tricuspid, mitral)."""
    results = list(exam.results.select_related("device", "clinic").prefetch_related("reviews__reviewer"))
    return sorted(results, key=lambda r: (SITE_ORDER.get(r.location, len(SITE_ORDER)), r.recorded_at))


def _site(result: Result) -> dict[str, Any]:
    recording = result.recording_or_none
    return {
        "result": result,
        "recording": recording,
        "data": {
            "id": str(result.result_id),
            "audioUrl": reverse("result-audio", args=[result.result_id]) if recording else None,
            "duration": result.duration_s,
            "cycles": result.cycles,
        },
    }


def _render(request: HttpRequest, exam: Exam, form: ReviewForm | None, status: int = 200) -> HttpResponse:
    results = exam_results(exam)
    sites = [_site(r) for r in results]
    murmur = exam.answer.get("murmur") or {}
    context = {
        "exam": exam,
        "sites": sites,
        "murmur": murmur,
        "reviews": list(exam.exam_reviews.all()),
        "review_form": form,
        "players": [s["data"] for s in sites],
        "clinic_slug": exam.clinic.slug if exam.clinic else "-",
    }
    return render(request, "front/exam.html", context, status=status)


@require_GET
@allowed(access.is_clinical)
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    exam = _visible(request, pk)
    form = ReviewForm(model_label=exam.label, subject=ANSWER) if access.can_review(request.user) else None
    return _render(request, exam, form)


@require_POST
@allowed(access.can_review)
def review(request: HttpRequest, pk: int) -> HttpResponse:
    exam = _visible(request, pk)
    form = ReviewForm(request.POST, model_label=exam.label, subject=ANSWER)
    if not form.is_valid():
        # the page again with the form as typed and the reason beside it (a redirect lost the note); 400
        return _render(request, exam, form, status=400)
    data = form.cleaned_data
    with transaction.atomic():
        reviewer = cast(User, request.user)  # @allowed let only a signed-in user through
        ExamReview.objects.create(
            exam=exam, reviewer=reviewer, agrees=data["agrees"], label=data["label"], note=data["note"].strip()
        )
    messages.success(request, "Review saved.")
    return redirect("exam", pk=exam.pk)


@require_GET
@allowed(access.is_clinical)
def fhir_json(request: HttpRequest, pk: int) -> JsonResponse:
    exam = _visible(request, pk)
    response = JsonResponse(exam_bundle(exam, exam_results(exam)), json_dumps_params={"indent": 2})
    response["Content-Type"] = "application/fhir+json"
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="exam-{exam.pk}.json"'
    return response
