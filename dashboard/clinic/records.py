"""Storing results: one insert keyed by ``result_id``, so a duplicate or a replay changes nothing."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.db import IntegrityError, connection, transaction

from dashboard.clinic import exams
from dashboard.clinic.models import Clinic, Device, Result
from dashboard.clinic.sql import json_value

log = logging.getLogger(__name__)

Outcome = Literal["created", "duplicate", "conflict"]


@dataclass(frozen=True)
class Stored:
    result: Result
    outcome: Outcome  # conflict: the id is taken by a result with different content (kept as it was)


def store_result(
    message: dict[str, Any],
    *,
    device: Device | None,
    clinic: Clinic | None,
    source: str = "device",
    uploaded_by: Any = None,
    ingested_by: str = "",
) -> Stored:
    """Insert a validated result message unless its id is already stored.

    The insert either wins or hits the primary key (two workers racing on a re-published result
    included); the loser compares contents and reports a duplicate or a conflict, never overwrites.
    """
    result_id = uuid.UUID(message["result_id"])
    row = Result(
        result_id=result_id,
        source=source,
        device=device,
        clinic=clinic,
        uploaded_by=uploaded_by,
        ingested_by=ingested_by[:64],
        **Result.fields_from_message(message),
    )
    try:
        with transaction.atomic():
            made = exams.link([row])
            row.save(force_insert=True)
            if row.exam_id not in made:  # an exam with earlier results: its answer from all of them
                exams.refresh([row.exam_id])
    except IntegrityError:
        existing = Result.objects.get(pk=result_id)
        same = existing.message == message
        log.info("result %s already stored (%s)", result_id, "duplicate" if same else "conflict")
        return Stored(existing, "duplicate" if same else "conflict")
    return Stored(row, "created")


INSERT_CHUNK = 500  # rows per statement: well inside PostgreSQL's and SQLite's parameter limits


def insert_new(rows: Sequence[Result]) -> set[uuid.UUID]:
    """Insert many results at once, skipping ids already stored; returns the ids this call stored.

    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk (PostgreSQL, SQLite 3.35+): the
    database says exactly which rows were new, also when another worker inserts the same id at the same
    moment (the second insert waits for the first to commit, then skips). Plain SQL rather than
    ``bulk_create``, which cannot say which rows it skipped, and whose array-based (UNNEST) insert costs
    more to quote than everything else ingest does (profiled: tests/benchmarks/bench_ingest.py).
    """
    insert = _insert_json_rows if connection.vendor == "postgresql" else _insert_values
    stored: set[uuid.UUID] = set()
    for start in range(0, len(rows), INSERT_CHUNK):
        stored.update(insert(rows[start : start + INSERT_CHUNK]))
    return stored


def _returning(sql: str, params: list[Any]) -> set[uuid.UUID]:
    pk = Result._meta.pk
    assert pk is not None  # a model always has one; for the type checker
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {pk.to_python(value) for (value,) in cursor.fetchall()}


def _insert_values(rows: Sequence[Result]) -> set[uuid.UUID]:
    """Portable: one VALUES tuple per row, each value prepared by its Django field."""
    meta, qn = Result._meta, connection.ops.quote_name
    fields = list(meta.concrete_fields)
    columns = ", ".join(qn(f.column) for f in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for row in rows for f in fields]
    return _returning(
        f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {', '.join([row_sql] * len(rows))} "  # noqa: S608 - names from the model, values as parameters
        f"ON CONFLICT ({qn(meta.pk.column)}) DO NOTHING RETURNING {qn(meta.pk.column)}",
        params,
    )


def _insert_json_rows(rows: Sequence[Result]) -> set[uuid.UUID]:
    """PostgreSQL: the whole chunk as one JSON parameter, unpacked by jsonb_to_recordset into the columns'
    own types. Three thousand parameters quoted one by one cost more than the rest of ingest together."""
    meta, qn = Result._meta, connection.ops.quote_name
    fields = list(meta.concrete_fields)
    columns = ", ".join(qn(f.column) for f in fields)
    types = ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)
    data = json.dumps([{f.column: json_value(f, f.pre_save(row, add=True)) for f in fields} for row in rows])
    return _returning(
        f"INSERT INTO {qn(meta.db_table)} ({columns}) SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) "  # noqa: S608 - names from the model, values as one parameter
        f"AS r({types}) ON CONFLICT ({qn(meta.pk.column)}) DO NOTHING RETURNING {qn(meta.pk.column)}",
        [data],
    )
