"""CirCor development patients as per-recording murmur labels, through converter.circor's loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter import circor as cc
from converter.datasets import Recording

RAW = Path("/work/data/circor_full/src/data/raw_training")
DEV_LIST = Path("/work/shared/data/circor2022/development_patients.txt")
TEST_SEED = 23
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Meta:
    patient: str
    site: str
    patient_murmur: str  # Present / Absent / Unknown
    group: str
    test: bool  # in the held-out test split of patients


def murmur_label(r: cc.CircorRecording) -> str:
    """'present' where the murmur is heard, 'absent' for patients without one, else 'unknown' (Unknown
    patients, and Present patients' other sites, where the murmur may still be faintly audible)."""
    if r.murmur == "Absent":
        return "absent"
    return "present" if r.murmur_here else "unknown"


def load(root: Path = RAW, dev_list: Path = DEV_LIST) -> tuple[list[Recording], dict[str, Meta]]:
    crecs = cc.load_circor2022(root, dev_list)
    _, test = cc.split_patients(crecs, TEST_FRACTION, TEST_SEED)
    test_groups = {r.group for r in test}
    recs: list[Recording] = []
    meta: dict[str, Meta] = {}
    for r in crecs:
        rec = Recording("circor2022", "training_data", r.record_id, r.path, murmur_label(r), r.murmur.lower(), r.group)
        recs.append(rec)
        meta[rec.key] = Meta(r.patient, r.site, r.murmur, r.group, r.group in test_groups)
    return recs, meta
