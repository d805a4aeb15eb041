"""A result as a FHIR R4 Observation.

The screening finding is the Observation's value; the model that produced it is a contained Device
referenced from ``device`` and named in ``method``; the heart rate is a component coded LOINC 8867-4.
The status is ``preliminary`` until a physician has reviewed the result, then ``final`` with the
physician as performer and their reading as the interpretation.
"""

from __future__ import annotations

from typing import Any

from dashboard.clinic.models import Result

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CODES = "https://stethoscope-edge.org/fhir/CodeSystem"
NOTICE = "Screening support, not a diagnosis: a prompt for a clinician's judgement."
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


def observation(result: Result, *, base_url: str = "") -> dict[str, Any]:
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
        "status": "final" if review else "preliminary",
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
