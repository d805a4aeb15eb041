"""Exams: which exam a result belongs to, and each exam's answer (the rule is on ``Exam``'s docstring).

Ingest calls ``link`` before inserting a batch of results (each row gets its exam, made if new, by a
conflict-ignoring insert keyed on ``Exam.key``: a replayed result finds the same exam, never a second
one) and ``refresh`` after it, in the same transaction. The exam's answer is ``device.core.exam.
combine_exam`` over its results, the same function the device's exam flow uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection
from django.db.models import Max, Min
from django.db.models.fields.json import KeyTransform

from dashboard.clinic.models import Exam, Result, refresh_exam_reviewed
from device.core import contract, wording
from device.core.exam import combine_exam


def key_for(result: Result) -> tuple[str, str]:
    """(key, exam_id) of the exam ``result`` belongs to."""
    exam_id = result.message.get("exam_id") if isinstance(result.message, dict) else None
    if exam_id and result.device is not None:
        return f"{result.device.device_id}/{exam_id}", str(exam_id)
    return f"result/{result.result_id}", ""


def link(rows: Sequence[Result]) -> None:
    """Give every row its exam (``row.exam_id``), making the exams that do not exist yet."""
    keys: dict[str, Result] = {}
    for row in rows:
        key = key_for(row)[0]
        row._exam_key = key  # type: ignore[attr-defined]
        if key not in keys:
            keys[key] = row
    if not keys:
        return
    Exam.objects.bulk_create(
        [
            Exam(
                key=key,
                exam_id=key_for(row)[1],
                device=row.device,
                clinic=row.clinic,
                patient_ref=row.patient_ref,
                started_at=row.recorded_at,
                received_at=row.received_at,
            )
            for key, row in keys.items()
        ],
        ignore_conflicts=True,  # made by an earlier result of the exam, or by another worker just now
    )
    pks = dict(Exam.objects.filter(key__in=list(keys)).values_list("key", "pk"))
    for row in rows:
        row.exam_id = pks[row._exam_key]  # type: ignore[attr-defined]


def _as_result_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """What ``combine_exam`` reads of a stored result."""
    quality: dict[str, Any] = {"ok": values["quality_ok"], "issues": values["quality_issues"] or []}
    if values.get("quality_reason"):
        quality["reason"] = values["quality_reason"]
    return {
        "label": values["label"],
        "probabilities": values["probabilities"] or {},
        "quality": quality,
        "site": values["location"] or None,
        "murmur": values.get("murmur") if isinstance(values.get("murmur"), dict) else None,
    }


def answer_reason(answer: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> str:
    """The exam's answer in words, for the worklist: what was found, where, and why when unsure."""
    label = str(answer.get("label") or "")
    murmur = answer.get("murmur") or {}
    n = len(results)
    sites = sorted({str(r.get("site")) for r in results if r.get("site")}, key=_chest_order)
    where = f"{n} recording{'s' if n != 1 else ''}" + (f" ({', '.join(sites)})" if sites else "")
    parts: list[str] = []
    if label == wording.UNSURE:
        reasons = list(dict.fromkeys(wording.unsure_reason(r.get("quality") or {}) for r in results))
        leaning = wording.model_leaning(_max_probabilities(results))
        parts.append(f"Unsure — {'; '.join(reasons) or 'no usable recording'}. {leaning}")
    elif label:
        found = [r for r in results if r.get("label") == label]
        at = sorted({str(r.get("site") or "site not given") for r in found}, key=_chest_order)
        probs = answer.get("probabilities") or {}
        p = probs.get(label)
        model = f", model: {float(p):.0%} {label}" if p is not None else ""
        if label == "normal":
            parts.append(f"Normal at every usable site{model}")
        else:
            parts.append(f"{label.capitalize()} at {', '.join(at) or 'a site'}{model}")
    if murmur.get("label") == "present":
        heard = ", ".join(murmur.get("sites") or []) or "a site"
        p = murmur.get("probability")
        parts.append(f"murmur heard at {heard}" + (f" (model: {float(p):.0%} present)" if p is not None else ""))
    parts.append(where)
    return "; ".join(parts)[:300]


def _chest_order(site: str) -> tuple[int, str]:
    """Aortic, pulmonic, tricuspid, mitral (the order of an exam), then anything else by name."""
    return (contract.SITES.index(site) if site in contract.SITES else len(contract.SITES), site)


def _max_probabilities(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in results:
        for k, v in (r.get("probabilities") or {}).items():
            out[k] = max(float(v), out.get(k, 0.0))
    return out


def priority(answer: Mapping[str, Any]) -> int:
    label = answer.get("label")
    if label == wording.UNSURE:
        murmur_present = (answer.get("murmur") or {}).get("label") == "present"
        return Exam.PRIORITY_FINDING if murmur_present else Exam.PRIORITY_UNSURE
    if label == "normal" and (answer.get("murmur") or {}).get("label") != "present":
        return Exam.PRIORITY_NORMAL
    return Exam.PRIORITY_FINDING


RESULT_FIELDS = ("exam_id", "label", "probabilities", "quality_ok", "quality_issues", "location")


def results_of(exam_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Each exam's results as ``combine_exam`` reads them (the message's big windows are not loaded)."""
    rows = (
        Result.objects.filter(exam_id__in=list(exam_ids))
        .order_by("recorded_at", "result_id")
        .values(*RESULT_FIELDS, murmur=_json_key("murmur"), quality_reason=_json_key("quality", "reason"))
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for values in rows:
        out.setdefault(values["exam_id"], []).append(_as_result_dict(values))
    return out


def _json_key(*path: str) -> Any:
    expr: Any = "message"
    for part in path:
        expr = KeyTransform(part, expr)
    return expr


def refresh(exam_ids: Iterable[int | None]) -> None:
    """Recompute the summary of these exams from their results (call inside the inserting transaction)."""
    ids = sorted({e for e in exam_ids if e is not None})
    if not ids:
        return
    locked = Exam.objects.filter(pk__in=ids).order_by("pk")
    if connection.features.has_select_for_update:
        # Serialises two workers refreshing one exam, so the second sees the first's results; NO KEY:
        # does not block (or deadlock with) results being inserted that refer to the exam.
        no_key = connection.features.has_select_for_no_key_update
        locked = locked.select_for_update(no_key=no_key)
    exams = {e.pk: e for e in locked}
    by_exam = results_of(ids)
    spans = {
        row["exam"]: row
        for row in Result.objects.filter(exam_id__in=ids)
        .order_by()
        .values("exam")
        .annotate(first=Min("recorded_at"), last=Max("received_at"))
    }
    for pk, exam in exams.items():
        results = by_exam.get(pk, [])
        answer = combine_exam(results) if results else {}
        exam.n_results = len(results)
        exam.answer = answer
        exam.label = str(answer.get("label") or "")
        exam.murmur = str((answer.get("murmur") or {}).get("label") or "") if results else ""
        exam.reason = answer_reason(answer, results) if results else ""
        exam.priority = priority(answer) if results else Exam.PRIORITY_UNSURE
        if pk in spans:
            exam.started_at = spans[pk]["first"]
            exam.received_at = spans[pk]["last"]
    Exam.objects.bulk_update(
        exams.values(), ["n_results", "answer", "label", "murmur", "reason", "priority", "started_at", "received_at"]
    )
    refresh_exam_reviewed(set(ids))
