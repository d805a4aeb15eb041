"""Storing results: one insert keyed by ``result_id``, so a duplicate or a replay changes nothing."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from django.db import IntegrityError, transaction

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
