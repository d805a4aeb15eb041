"""Results as CSV rows (filtered by the caller). Cells that a spreadsheet would run as a formula are
prefixed with a quote, so an exported note can never execute in Excel."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from dashboard.clinic.models import Result

COLUMNS = (
    "result_id",
    "received_at",
    "recorded_at",
    "clinic",
    "device_id",
    "source",
    "patient_ref",
    "location",
    "label",
    "confidence",
    "p_normal",
    "p_abnormal",
    "heart_rate_bpm",
    "quality_score",
    "quality_ok",
    "quality_issues",
    "model_name",
    "model_version",
    "model_sha256",
    "local_threshold",
    "review_label",
    "review_agrees",
    "reviewer",
    "reviewed_at",
    "review_note",
    "exam_id",
    "answer",
)


def _safe(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def row(result: Result) -> list[str]:
    review = result.latest_review
    values: list[Any] = [
        result.result_id,
        result.received_at.isoformat(),
        result.recorded_at.isoformat(),
        result.clinic.slug if result.clinic else "",
        result.device.device_id if result.device else "",
        result.source,
        result.patient_ref,
        result.location,
        result.label,
        result.confidence,
        result.probabilities.get("normal"),
        result.probabilities.get("abnormal"),
        result.heart_rate_bpm,
        result.quality_score,
        result.quality_ok,
        "; ".join(result.quality_issues),
        result.model_name,
        result.model_version,
        result.model_sha256,
        result.decision["threshold"] if result.decision else "",
        review.label if review else "",
        review.agrees if review else "",
        review.reviewer.get_username() if review else "",
        review.created_at.isoformat() if review else "",
        review.note if review else "",
        result.message.get("exam_id", "") if isinstance(result.message, dict) else "",
        result.summary,
    ]
    return [_safe(v) for v in values]


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(results: Iterable[Result]) -> Iterator[str]:
    """Stream the header and one line per result (for a StreamingHttpResponse)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(COLUMNS)
    for result in results:
        yield writer.writerow(row(result))
