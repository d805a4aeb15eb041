"""A recording uploaded on the dashboard: checked, classified like on a device, stored like any result.

Uses ``device.core.inference`` (the same pipeline and shipped model as the device), loaded once per process.
"""

from __future__ import annotations

import functools
import io
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import soundfile as sf
from django.conf import settings
from django.db import transaction

from dashboard.clinic.models import Clinic, Result
from dashboard.clinic.recordings import save_recording
from dashboard.clinic.records import store_result
from device import __version__
from device.core import contract
from device.core.audio_io import read_audio
from device.core.errors import StethError, UnreadableAudioError
from device.core.messages import result_message

if TYPE_CHECKING:
    from device.core.inference import Classifier

log = logging.getLogger(__name__)

# Uploads have no device; this id (never a registered device's) marks them in the stored message.
UPLOAD_DEVICE_ID = "dashboard-upload"
FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac"}


class UploadError(StethError):
    """An upload that cannot be classified; the message says why and what to do."""


@functools.cache
def classifier(name: str) -> Classifier:
    from device.core.inference import load_model

    return load_model(name)


@dataclass(frozen=True)
class UploadRequest:
    data: bytes
    filename: str
    clinic: Clinic | None
    patient_ref: str
    location: str
    uploaded_by: Any


def _format(data: bytes, filename: str) -> str:
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise UnreadableAudioError(
            f"“{filename}” is not a WAV or FLAC recording", "upload the recording as it came from the stethoscope"
        ) from exc
    fmt = FORMATS.get(str(info.format))
    if fmt is None:
        raise UnreadableAudioError(
            f"“{filename}” is {info.format_info or info.format} audio; only WAV and FLAC are accepted",
            "convert it, e.g. `ffmpeg -i in.mp3 out.wav`",
        )
    return fmt


def classify_upload(req: UploadRequest) -> Result:
    """Check, classify and store an upload; raises AudioError/UploadError/ModelError with a clear message."""
    if len(req.data) > settings.STETH_MAX_UPLOAD_BYTES:
        raise UploadError(
            f"“{req.filename}” is {len(req.data) / 1e6:.1f} MB; "
            f"the limit is {settings.STETH_MAX_UPLOAD_BYTES / 1e6:.0f} MB",
            "upload a shorter recording",
        )
    fmt = _format(req.data, req.filename)
    audio = read_audio(req.data, name=f"“{req.filename}”")
    if audio.duration_s > settings.STETH_MAX_UPLOAD_SECONDS:
        raise UploadError(
            f"“{req.filename}” lasts {audio.duration_s:.0f} s; the limit is {settings.STETH_MAX_UPLOAD_SECONDS} s",
            "upload a shorter recording",
        )
    clf = classifier(settings.STETH_UPLOAD_MODEL)
    analysis = clf.analyse(audio)
    message = result_message(
        analysis,
        UPLOAD_DEVICE_ID,
        result_id=str(uuid.uuid4()),
        patient_ref=req.patient_ref or None,
        site=req.location or None,
        software_version=__version__,
    )
    contract.validate("result", message)
    with transaction.atomic():
        stored = store_result(message, device=None, clinic=req.clinic, source="upload", uploaded_by=req.uploaded_by)
        save_recording(stored.result.result_id, req.data, fmt=fmt)
    log.info("upload %s classified %s by %s", stored.result.result_id, stored.result.label, req.uploaded_by)
    return stored.result
