"""Exams: which exam a result belongs to, and each exam's answer (the rule is on ``Exam``'s docstring).

Ingest calls ``link`` before inserting a batch of results (each row gets its exam, made if new, by a
conflict-ignoring insert keyed on ``Exam.key``: a replayed result finds the same exam, never a second
one; a new exam's summary is computed from the batch's rows) and ``refresh`` after it, in the same
transaction, for the exams that existed already. The exam's answer is ``device.core.exam.combine_exam``
over its results, the same function the device's exam flow uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Max, Min
from django.db.models.fields.json import KeyTransform

from dashboard.clinic.models import Exam, Result, refresh_exam_reviewed
from dashboard.clinic.sql import insert_skipping_conflicts
from device.core import contract, wording
from device.core.exam import NORMAL, combine_exam, usable

SCREENING = "screening"


def key_for(result: Result) -> tuple[str, str]:
    """(key, exam_id) of the exam ``result`` belongs to."""
    exam_id = result.message.get("exam_id") if isinstance(result.message, dict) else None
    if exam_id and result.device is not None:
        return f"{result.device.device_id}/{exam_id}", str(exam_id)
    return f"result/{result.result_id}", ""


def link(rows: Sequence[Result]) -> set[int]:
    """Give every row its exam (``row.exam_id``), making the exams that do not exist yet.

    Returns the exams made now: their summaries are computed here from ``rows`` (all their results are
    in this batch), so ``refresh`` is needed only for the exams that existed already, and for a new one
    whose row turns out not to be inserted (see ``needing_refresh``). One ``INSERT ... ON CONFLICT DO
    NOTHING RETURNING`` says which exams are new, also when another worker makes the same one at the same
    moment (the second insert waits for the first to commit, then skips it and refreshes instead).
    """
    by_key: dict[str, list[Result]] = {}
    for row in rows:
        key = key_for(row)[0]
        row._exam_key = key  # type: ignore[attr-defined]
        by_key.setdefault(key, []).append(row)
    if not by_key:
        return set()
    new = [_new_exam(key, group) for key, group in by_key.items()]
    created = _insert_exams(new)
    pks = dict(Exam.objects.filter(key__in=list(by_key)).values_list("key", "pk"))
    for row in rows:
        row.exam_id = pks[row._exam_key]  # type: ignore[attr-defined]
    return {pks[key] for key in created}


def needing_refresh(rows: Sequence[Result], made: set[int], inserted: set[Any]) -> set[int]:
    """Exams whose summary ``link`` could not know: those that existed, and new ones with a row not inserted."""
    stale = {r.exam_id for r in rows if r.pk in inserted and r.exam_id not in made}
    stale |= {r.exam_id for r in rows if r.pk not in inserted and r.exam_id in made}
    return {e for e in stale if e is not None}


def _row_dict(row: Result) -> dict[str, Any]:
    return {
        "task": row.task,
        "label": row.label,
        "probabilities": row.probabilities or {},
        "quality": row.quality,
        "site": row.location or None,
        "murmur": row.murmur,
    }


def _new_exam(key: str, group: Sequence[Result]) -> Exam:
    first = group[0]
    exam = Exam(
        key=key,
        exam_id=key_for(first)[1],
        device=first.device,
        clinic=first.clinic,
        patient_ref=first.patient_ref,
        started_at=min(r.recorded_at for r in group),
        received_at=max(r.received_at for r in group),
    )
    summarise(exam, [_row_dict(r) for r in group])
    return exam


def _insert_exams(exams: Sequence[Exam]) -> set[str]:
    """Insert the exams whose key is free; the keys inserted."""
    return {str(k) for k in insert_skipping_conflicts(exams, conflict="key", returning="key")}


def summarise(exam: Exam, results: Sequence[Mapping[str, Any]]) -> None:
    """Set the exam's summary columns from its results (as ``combine_exam`` reads them)."""
    exam.n_results = len(results)
    # A kit running a second model (task sound_type) sends a second result per recording: the exam's
    # answer is the screening model's results' when there are any (n_results counts every result).
    results = [r for r in results if r.get("task", SCREENING) == SCREENING] or list(results)
    answer = combine_exam([dict(r) for r in results]) if results else {}
    exam.answer = answer
    exam.label = str(answer.get("label") or "")
    exam.murmur = str((answer.get("murmur") or {}).get("label") or "") if results else ""
    exam.reason = answer_reason(answer, results) if results else ""
    exam.priority = priority(answer) if results else Exam.PRIORITY_UNSURE


def _as_result_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """What ``combine_exam`` reads of a stored result."""
    quality: dict[str, Any] = {"ok": values["quality_ok"], "issues": values["quality_issues"] or []}
    if values.get("quality_reason"):
        quality["reason"] = values["quality_reason"]
    return {
        "task": values["task"],
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
        leaning = wording.model_leaning(_max_probabilities(results)).capitalize()
        parts.append(f"Unsure — {'; '.join(reasons) or 'no usable recording'}. {leaning}")
    elif label:
        probs = answer.get("probabilities") or {}
        p = probs.get(label)
        model = f", model: {float(p):.0%} {label} over the usable sites" if p is not None else ""
        # the exam is the mean over its usable sites (device.core.exam), so a site may disagree with it
        findings = [r for r in results if usable(dict(r)) and r.get("label") not in (None, NORMAL)]
        at = sorted({str(r.get("site") or "site not given") for r in findings}, key=_chest_order)
        if label == NORMAL:
            said = " or ".join(sorted({str(r["label"]) for r in findings}))
            outvoted = f" ({', '.join(at)} alone said {said}, outvoted by the other sites)" if at else ""
            parts.append(f"Normal{model}{outvoted}")
        else:
            parts.append(f"{label.capitalize()} at {', '.join(at) or 'no single site'}{model}")
    if murmur.get("label") == "present":
        heard = ", ".join(murmur.get("sites") or []) or "a site"
        p = murmur.get("probability")
        parts.append(f"murmur heard at {heard}" + (f" (model: {float(p):.0%} present)" if p is not None else ""))
    if label and label != wording.UNSURE:
        unusable = sorted(
            {str(r.get("site") or "site not given") for r in results if not usable(dict(r))}, key=_chest_order
        )
        if unusable:
            parts.append(f"unsure at {', '.join(unusable)} (poor signal: re-record)")
    parts.append(where)
    return "; ".join(parts)[:300]


def _chest_order(site: str) -> tuple[int, str]:
    """Aortic, pulmonic, tricuspid, mitral (the order of an exam), then anything else by name."""
    return (contract.SITES.index(site) if site in contract.SITES else len(contract.SITES), site)


def _max_probabilities(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each label's highest probability over the recordings: an unsure exam's "Model: ..." is the strongest
    lean any recording had."""
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
    if label == NORMAL and (answer.get("murmur") or {}).get("label") != "present":
        return Exam.PRIORITY_NORMAL
    return Exam.PRIORITY_FINDING


RESULT_FIELDS = ("exam_id", "task", "label", "probabilities", "quality_ok", "quality_issues", "location")


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
        summarise(exam, by_exam.get(pk, []))
        if pk in spans:
            exam.started_at = spans[pk]["first"]
            exam.received_at = spans[pk]["last"]
    _write_summaries(list(exams.values()))
    refresh_exam_reviewed(set(ids))


SUMMARY = ("n_results", "answer", "label", "murmur", "reason", "priority", "started_at", "received_at")


def _write_summaries(exams: Sequence[Exam]) -> None:
    """Store the summary columns of these exams in one statement (PostgreSQL) or one prepared one (SQLite).

    Not ``bulk_update``: its CASE WHEN per column and row cost six times everything else ingest does per
    result (profiled: 7.2 of 9.8 s for 640 results in batches of 128).
    """
    if not exams:
        return
    meta, qn = Exam._meta, connection.ops.quote_name
    fields = [f for f in meta.concrete_fields if f.name in SUMMARY]
    if connection.vendor == "postgresql":
        rows = [{"id": e.pk, **{f.column: _json_value(getattr(e, f.attname)) for f in fields}} for e in exams]
        assignments = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in fields)
        types = ", ".join(["id bigint", *(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)])
        sql = (
            f"UPDATE {qn(meta.db_table)} AS e SET {assignments} FROM jsonb_to_recordset(%s::jsonb) "  # noqa: S608 - names from the model
            f"AS v({types}) WHERE e.id = v.id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [json.dumps(rows)])
        return
    assignments = ", ".join(f"{qn(f.column)} = %s" for f in fields)
    params = [[*(f.get_db_prep_save(getattr(e, f.attname), connection) for f in fields), e.pk] for e in exams]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {qn(meta.db_table)} SET {assignments} WHERE id = %s", params)  # noqa: S608


def _json_value(value: Any) -> Any:
    """A summary value as JSON for jsonb_to_recordset (aware datetimes as ISO text: PostgreSQL reads the offset)."""
    return value.isoformat() if isinstance(value, datetime) else value
