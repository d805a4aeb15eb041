"""Recordings on disk: stored once per result, and a playback copy browsers can play.

Files live under MEDIA_ROOT, which is never served directly: the recording views check access first.
A file's name holds its result id and the start of its checksum, so two writers of the same result
never overwrite each other's file, and a retried write simply replaces an identical one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from django.conf import settings
from django.db import IntegrityError, transaction

from dashboard.clinic.models import Recording
from device.core.audio_io import read_audio
from device.core.errors import StethError
from device.core.features import resample

log = logging.getLogger(__name__)

# Browsers refuse very low sample rates (Chromium plays 3 kHz and up); device captures are 2-4 kHz.
PLAYBACK_MIN_RATE = 8000


class RecordingConflictError(StethError):
    """A different recording is already stored for this result."""


@dataclass(frozen=True)
class SavedRecording:
    recording: Recording
    created: bool


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def media_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / name


def save_recording(result_id: uuid.UUID, data: bytes, *, fmt: str, device_id: str = "") -> SavedRecording:
    """Check ``data`` decodes as audio, write it, and record it; raises AudioError or RecordingConflictError."""
    audio = read_audio(data, name=f"recording of {result_id}")
    digest = hashlib.sha256(data).hexdigest()
    existing = Recording.objects.filter(pk=result_id).first()
    if existing is not None:
        return _same_or_conflict(existing, digest)
    name = f"recordings/{result_id.hex[:2]}/{result_id}-{digest[:16]}.{fmt}"
    _write_atomically(media_path(name), data)
    row = Recording(
        result_id=result_id,
        device_id=device_id,
        file=name,
        format=fmt,
        bytes=len(data),
        sha256=digest,
        sample_rate=audio.sample_rate,
        duration_s=round(audio.duration_s, 3),
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        return _same_or_conflict(Recording.objects.get(pk=result_id), digest)
    return SavedRecording(row, created=True)


def _same_or_conflict(existing: Recording, digest: str) -> SavedRecording:
    if existing.sha256 == digest:
        return SavedRecording(existing, created=False)
    raise RecordingConflictError(
        f"result {existing.result_id} already has a different recording (sha256 {existing.sha256[:12]}...)",
        "a device must never reuse a result id; check its clock and outbox",
    )


def playback_file(recording: Recording) -> Path:
    """A 16-bit WAV at >= 8 kHz, peak-normalised for listening; made once, then reused."""
    out = media_path(f"playback/{recording.result_id}-{recording.sha256[:16]}.wav")
    if out.exists():
        return out
    audio = read_audio(media_path(recording.file.name))
    rate = max(audio.sample_rate, PLAYBACK_MIN_RATE)
    samples = resample(audio.samples, audio.sample_rate, rate)
    samples = samples - float(np.mean(samples))
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 0:
        samples = samples * (0.9 / peak)
    import io

    buf = io.BytesIO()
    sf.write(buf, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    _write_atomically(out, buf.getvalue())
    log.debug("made playback copy %s (%d Hz)", out, rate)
    return out
