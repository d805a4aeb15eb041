"""Refused recordings, reported: what a device could not analyse reaches the dashboard, not only its log.

A recording that gives no result (a zero-byte or truncated file, a clip shorter than one analysis window,
samples that are not numbers) becomes a ``refused`` message (contract: schemas/refused.v1.json) in the
durable outbox, delivered and acknowledged like a result. Silence is not refused: a silent recording is
analysed and gives an *unsure* result whose quality issues say "silent" (re-record), on the device and on
the dashboard alike.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any, Literal

from device import __version__
from device.core.errors import (
    ClippedAudioError,
    ContractError,
    EmptyAudioError,
    InvalidAudioError,
    SilentAudioError,
    StethError,
    TooShortError,
    UnreadableAudioError,
)

Source = Literal["replay", "capture", "record"]

# Refusals of replayed recordings get ids derived from what they are, like their results (analyser.py), so
# a recording refused again after a crash is the same refusal.
REFUSAL_NAMESPACE = uuid.UUID("0c5a8f57-2b7e-4f0a-9a43-6d1e2f3a4b5c")
# the most specific class first (subclasses before their parents)
_REASONS: tuple[tuple[type[StethError], str], ...] = (
    (EmptyAudioError, "empty"),
    (UnreadableAudioError, "unreadable"),
    (TooShortError, "too_short"),
    (InvalidAudioError, "invalid"),
    (SilentAudioError, "silent"),
    (ClippedAudioError, "clipped"),
    (ContractError, "contract"),
)


def reason_code(exc: StethError) -> str:
    """The short code a refusal carries (``unusable`` for any other audio error)."""
    return next((code for cls, code in _REASONS if isinstance(exc, cls)), "unusable")


def refusal_id_for(device_id: str, key: str | None) -> str:
    if key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(REFUSAL_NAMESPACE, f"{device_id}|{key}"))


def refusal_message(
    device_id: str,
    exc: StethError,
    *,
    source: Source,
    recording: str | None,
    key: str | None = None,
    patient_ref: str | None = None,
    site: str | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """The refused message for a recording that raised ``exc`` (its message says what and what to do)."""
    name = Path(recording).name if recording and source != "capture" else recording
    message: dict[str, Any] = {
        "schema_version": 1,
        "refusal_id": refusal_id_for(device_id, key),
        "device_id": device_id,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "source": source,
        "recording": (name or "")[:256] or None,
        "reason": reason_code(exc),
        "message": str(exc)[:1000],
        "software_version": __version__,
    }
    if patient_ref:
        message["patient_ref"] = patient_ref
    if site:
        message["site"] = site
    if duration_s is not None:
        message["duration_s"] = round(max(0.0, duration_s), 3)
    return message
