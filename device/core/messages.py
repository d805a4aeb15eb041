"""Messages of the MQTT contract built from what the core computed (device/core/contract.py checks them).

The result message is built here, next to the contract, not in the inference path: its schema version
comes from the schema (contract.current_version), and what a result means (how long its windows are,
how far apart) is written into it rather than left for a receiver to guess.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from device import __version__
from device.core import contract

if TYPE_CHECKING:
    from device.core.inference import Analysis


def timestamp(when: datetime) -> str:
    """UTC, milliseconds, 'Z': the contract's date-time form."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result_message(
    analysis: Analysis,
    device_id: str,
    *,
    result_id: str | None = None,
    recorded_at: datetime | None = None,
    patient_ref: str | None = None,
    site: str | None = None,
    audio: dict[str, Any] | None = None,
    software_version: str | None = None,
    exam_id: str | None = None,
) -> dict[str, Any]:
    """A result message of the current schema version (device/core/schemas/result.vN.json)."""
    a = analysis
    return {
        "schema_version": contract.current_version("result"),
        "result_id": result_id or str(uuid.uuid4()),
        "device_id": device_id,
        "recorded_at": timestamp(recorded_at or datetime.now(UTC)),
        "patient_ref": patient_ref,
        "site": site,
        "duration_s": round(max(a.duration_s, 1e-3), 3),
        "sample_rate": a.sample_rate,
        "task": a.task,
        "model": a.model.as_dict(),
        "label": a.label,
        "probabilities": a.probabilities,
        "windows": [{"start_s": s, "probabilities": p} for s, p in a.windows],
        # each window covers [start_s, start_s + window_s): a receiver draws them from these
        **({"window_s": a.window_s} if a.window_s is not None else {}),
        **({"hop_s": a.hop_s} if a.hop_s is not None else {}),
        "heart_rate_bpm": a.heart_rate_bpm,
        "quality": a.quality_dict(),
        "audio": audio,
        "software_version": software_version or __version__,
        # only when set: a result at the model's own threshold is the same message as before
        **({"decision": a.decision} if a.decision else {}),
        **({"cycles": a.cycles} if a.cycles else {}),
        **a.fields,  # companion models' answers (e.g. murmur), each a result field
        # one patient's exam (several sites); absent for a recording made on its own
        **({"exam_id": exam_id} if exam_id else {}),
    }
