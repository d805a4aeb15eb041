"""Storing results: one insert keyed by ``result_id``, so a duplicate or a replay changes nothing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.db import IntegrityError, connection, transaction

from dashboard.clinic.models import Clinic, Device, Result

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
            row.save(force_insert=True)
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
    ``bulk_create``, which cannot say which rows it skipped and whose array-based (UNNEST) insert costs
    more to quote than everything else ingest does (profiled: tests/benchmarks/bench_ingest.py).
    """
    meta = Result._meta
    fields = list(meta.concrete_fields)
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    stored: set[uuid.UUID] = set()
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        params = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for row in chunk for f in fields]
        sql = (
            f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {', '.join([row_sql] * len(chunk))} "  # noqa: S608 - names from the model, values as parameters
            f"ON CONFLICT ({qn(meta.pk.column)}) DO NOTHING RETURNING {qn(meta.pk.column)}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            stored.update(meta.pk.to_python(value) for (value,) in cursor.fetchall())
    return stored
