"""A result as a FHIR R4 Observation; an exam as a DiagnosticReport grouping its sites' Observations.

The screening finding is the Observation's value; the model that produced it is a contained Device
referenced from ``device`` and named in ``method``; the heart rate is a component coded LOINC 8867-4,
the murmur (when the result has one) two more. An Observation is ``preliminary`` until a physician has
reviewed the result or its exam, then ``final`` with the physician as performer and their reading as
the interpretation.

An exam exports as a Bundle (type collection): the DiagnosticReport, whose ``result`` refers to one
Observation per recording (site) in the same Bundle by ``urn:uuid``. The report is ``preliminary``
until a physician reviews the exam, then ``final``, or ``amended`` when the review disagrees with the
exam's answer (the conclusion then gives both). Checked against the R4B models of fhir.resources.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from dashboard.clinic.models import Exam, ExamReview, Result
from device.core.wording import NOTICE

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CODES = "https://stethoscope-edge.org/fhir/CodeSystem"
LABEL_DISPLAY = {
    "normal": "Normal heart sounds (screening)",
    "abnormal": "Abnormal heart sounds (screening)",
    "unsure": "Unsure: record again",
    "inconclusive": "Inconclusive",
}


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": round(value, 4), "unit": unit, "system": UCUM, "code": code}


def observation(result: Result, *, base_url: str = "", exam_review: ExamReview | None = None) -> dict[str, Any]:
    review = result.latest_review
    model_text = f"{result.model_name} {result.model_version} (sha256 {result.model_sha256})"
    components: list[dict[str, Any]] = []
    heart_rate = {"code": _concept(LOINC, "8867-4", "Heart rate")}
    if result.heart_rate_bpm is not None:
        heart_rate["valueQuantity"] = _quantity(result.heart_rate_bpm, "beats/minute", "/min")
    else:
        heart_rate["dataAbsentReason"] = _concept(
            "http://terminology.hl7.org/CodeSystem/data-absent-reason", "unknown", "Unknown"
        )
    components.append(heart_rate)
    for label, probability in sorted(result.probabilities.items()):
        components.append(
            {
                "code": _concept(f"{CODES}/probability", label, f"Model probability of '{label}'"),
                "valueQuantity": _quantity(float(probability), "1", "1"),
            }
        )
    if murmur := result.murmur:
        components.append(
            {
                "code": _concept(f"{CODES}/murmur", "murmur", "Heart murmur (screening)"),
                "valueCodeableConcept": _concept(f"{CODES}/murmur-label", murmur["label"], f"Murmur {murmur['label']}"),
            }
        )
        if murmur.get("probability") is not None:
            components.append(
                {
                    "code": _concept(f"{CODES}/probability", "murmur_present", "Model probability of a murmur"),
                    "valueQuantity": _quantity(float(murmur["probability"]), "1", "1"),
                }
            )
    components.append(
        {
            "code": _concept(f"{CODES}/signal", "quality", "Signal quality score (0-1)"),
            "valueQuantity": _quantity(result.quality_score, "1", "1"),
        }
    )
    notes = [{"text": NOTICE}]
    if result.quality_issues:
        notes.append({"text": "Signal quality issues: " + "; ".join(result.quality_issues)})
    if d := result.decision:
        notes.append(
            {
                "text": f"Decided at a threshold set on the device's own {d['labelled']['normal']} normal and "
                f"{d['labelled']['abnormal']} abnormal labelled recordings ({d['threshold']} instead of the "
                f"model's {d['model_threshold']}, set {d['set_at']})"
            }
        )
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(result.result_id),
        "contained": [
            {
                "resourceType": "Device",
                "id": "model",
                "identifier": [{"system": f"{CODES}/model-sha256", "value": result.model_sha256}],
                "deviceName": [{"name": result.model_name, "type": "model-name"}],
                "version": [{"value": result.model_version}],
                "note": [{"text": "Heart-sound screening model (software), stethoscope-edge"}],
            }
        ],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{result.result_id}"}],
        "status": "final" if review or exam_review else "preliminary",
        "category": [
            _concept("http://terminology.hl7.org/CodeSystem/observation-category", "exam", "Exam"),
        ],
        "code": {
            "coding": [{"system": f"{CODES}/observation", "code": f"heart-sound-{result.task}"}],
            "text": f"Heart sound {result.task} by automated analysis of a digital stethoscope recording",
        },
        "effectiveDateTime": result.recorded_at.isoformat(),
        "issued": result.received_at.isoformat(),
        "valueCodeableConcept": _concept(
            f"{CODES}/{result.task}-label", result.label, LABEL_DISPLAY.get(result.label, result.label)
        ),
        "method": {"text": f"Automated heart-sound analysis by {model_text}"},
        "device": {"reference": "#model", "display": model_text},
        "component": components,
        "note": notes,
    }
    if result.patient_ref:
        clinic = result.clinic.slug if result.clinic else "unassigned"
        obs["subject"] = {
            "identifier": {"system": f"{CODES}/patient-ref/{clinic}", "value": result.patient_ref},
            "display": f"Patient {result.patient_ref}",
        }
    if result.location:
        obs["bodySite"] = {"text": f"{result.location} auscultation area"}
    if review:
        obs["performer"] = [{"display": review.reviewer.get_full_name() or review.reviewer.get_username()}]
        obs["interpretation"] = [
            _concept(
                f"{CODES}/review",
                review.label,
                f"Physician review: {review.label} ({'agrees' if review.agrees else 'disagrees'} with the model)",
            )
        ]
        if review.note:
            notes.append({"text": f"Physician's note: {review.note}"})
    if base_url:
        obs["derivedFrom"] = [{"display": f"recording {base_url}"}]
    return obs


def _subject(clinic_slug: str | None, patient_ref: str) -> dict[str, Any]:
    return {
        "identifier": {"system": f"{CODES}/patient-ref/{clinic_slug or 'unassigned'}", "value": patient_ref},
        "display": f"Patient {patient_ref}",
    }


def report_status(review: ExamReview | None) -> str:
    if review is None:
        return "preliminary"
    return "final" if review.agrees else "amended"


def diagnostic_report(exam: Exam, results: Sequence[Result], review: ExamReview | None) -> dict[str, Any]:
    """The exam's DiagnosticReport; ``result`` refers to the Observations by ``urn:uuid:<result_id>``."""
    label = exam.label or "unsure"
    conclusion = [f"Automated screening: {exam.reason or label}."]
    codes = [_concept(f"{CODES}/screening-label", label, LABEL_DISPLAY.get(label, label))]
    if exam.murmur in ("present", "absent"):
        codes.append(_concept(f"{CODES}/murmur-label", exam.murmur, f"Murmur {exam.murmur}"))
    if review is not None:
        verdict = "agrees with" if review.agrees else "disagrees with"
        conclusion.append(f"Physician's review: {review.label} ({verdict} the automated answer).")
        if review.note:
            conclusion.append(f"Note: {review.note}")
        codes.append(_concept(f"{CODES}/review", review.label, f"Physician review: {review.label}"))
    conclusion.append(NOTICE)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": f"exam-{exam.pk}",
        "identifier": [{"system": f"{CODES}/exam", "value": exam.key}],
        "status": report_status(review),
        "code": {
            "coding": [{"system": f"{CODES}/report", "code": "heart-sound-exam"}],
            "text": "Heart-sound screening exam: automated analysis of digital stethoscope recordings at several sites",
        },
        "issued": exam.received_at.isoformat(),
        "result": [
            {"reference": f"urn:uuid:{r.result_id}", "display": f"{r.location or 'site not given'}: {r.label}"}
            for r in results
        ],
        "conclusion": " ".join(conclusion),
        "conclusionCode": codes,
    }
    if exam.started_at:
        report["effectiveDateTime"] = exam.started_at.isoformat()
    if exam.patient_ref:
        report["subject"] = _subject(exam.clinic.slug if exam.clinic else None, exam.patient_ref)
    if review is not None:
        name = review.reviewer.get_full_name() or review.reviewer.get_username()
        report["resultsInterpreter"] = [{"display": name}]
    return report


def exam_bundle(exam: Exam, results: Sequence[Result]) -> dict[str, Any]:
    """A Bundle (collection) of the exam's DiagnosticReport and one Observation per recording."""
    review = exam.latest_review
    report_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"{CODES}/exam/{exam.key}")
    entries = [{"fullUrl": f"urn:uuid:{report_uuid}", "resource": diagnostic_report(exam, results, review)}]
    entries += [{"fullUrl": f"urn:uuid:{r.result_id}", "resource": observation(r, exam_review=review)} for r in results]
    return {
        "resourceType": "Bundle",
        "id": f"exam-{exam.pk}",
        "type": "collection",
        "timestamp": timezone.now().isoformat(),
        "entry": entries,
    }
