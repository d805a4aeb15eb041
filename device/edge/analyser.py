"""The models a device runs on every recording, loaded once, and the results they make.

Loading a model imports everything an analysis needs (LiteRT, numpy, scipy): the first analysis after
it takes a few milliseconds more than the next ones, so nothing needs warming up.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device import __version__
from device.core import wording
from device.core.audio_io import Audio, encode_flac
from device.core.messages import result_message
from device.edge.outbox import Entry

if TYPE_CHECKING:
    from device.core.inference import Analysis, Classifier

log = logging.getLogger(__name__)

# Results of replayed recordings get ids derived from what they are (device, file, segment, model), so
# analysing the same recording again can never make a second, different result for it.
RESULT_NAMESPACE = uuid.UUID("5b0d3a0e-3f6c-4a47-9b8e-2a1f1e6c5d10")


class Analyser:
    """The classifiers named in ``models.run``."""

    def __init__(self, names: Sequence[str], threshold_dir: Path | None = None) -> None:
        self.names = tuple(names)
        self.threshold_dir = threshold_dir
        self._classifiers: list[Classifier] | None = None
        self._lock = threading.Lock()

    @property
    def classifiers(self) -> list[Classifier]:
        with self._lock:
            if self._classifiers is None:
                from device.core.inference import load_model

                self._classifiers = [load_model(name, threshold_dir=self.threshold_dir) for name in self.names]
                for clf in self._classifiers:
                    log.info(
                        "model %s %s (%s) loaded; decision threshold %s",
                        clf.info.name,
                        clf.info.version,
                        clf.info.sha256[:12],
                        f"{clf.threshold:.4f}, set on this kit's {sum(clf.local.labelled.values())} labelled "
                        f"recordings on {clf.local.set_at} (the model's own: {clf.model_threshold:.4f})"
                        if clf.local
                        else "the model's own",
                    )
            return self._classifiers

    def models_info(self) -> list[dict[str, str]]:
        """For the status message: name, version and sha256 of each model (empty until loaded)."""
        with self._lock:
            loaded = list(self._classifiers or [])
        return [{"name": c.info.name, "version": c.info.version, "sha256": c.info.sha256} for c in loaded]

    def analyse(self, audio: Audio) -> list[Analysis]:
        """One Analysis per model; AudioError subclasses propagate for unusable input."""
        return [clf.analyse(audio) for clf in self.classifiers]


@dataclass(frozen=True)
class Recording:
    """What a result needs to know about the recording besides the analysis."""

    audio: Audio
    recorded_at: datetime
    patient_ref: str | None = None
    site: str | None = None
    key: str | None = None  # stable identity (replay: file + segment) -> stable result ids
    exam_id: str | None = None  # the exam (one patient, several sites) this recording belongs to


def result_id_for(device_id: str, key: str | None, model: str) -> str:
    if key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(RESULT_NAMESPACE, f"{device_id}|{key}|{model}"))


def make_entries(
    analyses: Sequence[Analysis], recording: Recording, device_id: str, *, send_audio: bool
) -> list[Entry]:
    """Outbox entries for a recording's analyses; the FLAC, when sent, goes with the first result."""
    entries = []
    flac: bytes | None = None
    audio_meta: dict[str, Any] | None = None
    if send_audio:
        flac = encode_flac(recording.audio.samples, recording.audio.sample_rate)
        audio_meta = {"format": "flac", "sha256": hashlib.sha256(flac).hexdigest(), "bytes": len(flac)}
    for i, analysis in enumerate(analyses):
        first = i == 0
        message = result_message(
            analysis,
            device_id,
            result_id=result_id_for(device_id, recording.key, analysis.model.name),
            recorded_at=recording.recorded_at,
            patient_ref=recording.patient_ref,
            site=recording.site,
            audio=audio_meta if first else None,
            software_version=__version__,
            exam_id=recording.exam_id,
        )
        entries.append(Entry(message, flac=flac if first else None))
    return entries


def answer(analysis: Analysis) -> str:
    """The bedside answer: the label with what the model leaned to (an unsure one with its reason in
    words), heart rate, signal quality, and, when the signal was poor, what to change before recording
    again (said once: device/core/wording.py)."""
    quality_dict = analysis.quality_dict()
    hr = f"{analysis.heart_rate_bpm:.0f} bpm" if analysis.heart_rate_bpm else "not found"
    quality = "good" if analysis.quality.ok else "POOR"
    lines = [
        f"Result:          {wording.summary(analysis.label, analysis.probabilities, quality_dict)}",
        f"Heart rate:      {hr}",
        f"Signal quality:  {quality} ({analysis.quality.score:.2f})",
    ]
    if not analysis.quality.ok:
        advice = wording.rerecord_advice(quality_dict)
        lines.append(f"Record again:    {advice or 'keep the patient and the stethoscope still'}")
    for name, value in analysis.fields.items():
        # companion models' answers, in the contract's shape of its one such field (murmur): present or
        # absent with P(present), unknown when the signal is unfit
        lines.append(f"{name.capitalize() + ':':<17}{wording.murmur(value)}")
    if analysis.label == "unsure" and analysis.probabilities:
        # what the model said, for the clinician: the recording, not the heart, made it unsure
        said = ", ".join(f"{k} {v:.0%}" for k, v in analysis.probabilities.items())
        lines.append(f"Model alone:     {said} (not an answer: the recording could not be assessed)")
    lines.append(f"Model:           {analysis.model.name} {analysis.model.version}")
    if analysis.decision:
        d = analysis.decision
        lines.append(
            f"Threshold:       set on this kit's {sum(d['labelled'].values())} labelled recordings ({d['set_at'][:10]})"
        )
    return "\n".join(lines)
