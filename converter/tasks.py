"""The two classification tasks: which data, which labels, which features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from converter import datasets as ds
from device.core.features import FeatureParams

# PASCAL's two "extra" classes are one finding for a nurse: an extra heart sound or extrasystole.
SOUND_TYPE_MAP = {
    "normal": "normal",
    "murmur": "murmur",
    "extrahls": "extra",
    "extrastole": "extra",
    "artifact": "artifact",
}


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    positive: str | None  # binary tasks: the label whose probability is thresholded
    params: FeatureParams
    description: str
    loader: Callable[[Path], list[ds.Recording]]
    # `steth train`'s default gradient reversal factor for the database head (0: none); see trainer
    domain_adversarial: float = 0.0

    def label_index(self, rec: ds.Recording) -> int:
        label = rec.label if self.name == "screening" else SOUND_TYPE_MAP.get(rec.label or "", "")
        return self.labels.index(label)


def _screening_recordings(root: Path) -> list[ds.Recording]:
    return ds.load_physionet2016(root)


def _sound_type_recordings(root: Path) -> list[ds.Recording]:
    return [r for r in ds.load_pascal2011(root) if r.label in SOUND_TYPE_MAP]


TASKS = {
    "screening": Task(
        "screening",
        ("normal", "abnormal"),
        "abnormal",
        # 25-700 Hz with mel filters to 800 Hz: murmurs reach above 400 Hz, and the wider band raised
        # in-domain scores without costing transfer (docs/experiments.md, session 9). One mean and
        # variance per coefficient over the whole recording instead of per window: a fixed stethoscope
        # response is still removed, and how loud one window is against the rest of the recording
        # survives. One mean without variance scaling did as well in training but its int8 model
        # drifted from the float one (94.9% agreement): its loudness coefficient spans too wide a range.
        FeatureParams(band_high_hz=700.0, fmax=800.0, cmvn="recording"),
        "normal vs abnormal heart sound recordings, PhysioNet/CinC 2016 training set (2,750 recordings of "
        "6 databases, training-a..f)",
        _screening_recordings,
        # six databases from different stethoscopes and sites: the database head raised the mean
        # leave-one-database-out MAcc and AUC over three seeds (`steth ablate`, MODEL_CARD.md)
        domain_adversarial=0.3,
    ),
    "sound_type": Task(
        "sound_type",
        ("normal", "murmur", "extra", "artifact"),
        None,
        # PASCAL set B recordings are short (many 2-5 s): shorter windows keep most of them.
        FeatureParams(window_s=2.0, hop_s=1.0),
        "normal / murmur / extra sound or extrasystole / artifact, PASCAL Classifying Heart Sounds 2011, "
        "sets A (iStethoscope) and B (DigiScope)",
        _sound_type_recordings,
    ),
}
