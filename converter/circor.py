"""Loader for the CirCor DigiScope 2022 data set in its published layout.

``training_data/<patient>_<site>[_<n>].{wav,flac}`` with a ``.tsv`` segmentation beside each recording,
``<patient>.txt`` and ``training_data.csv`` (one row per patient). When the folder holds
``development_patients.txt`` only those patients are loaded unless told otherwise; a list can also be
given explicitly (the full public set does not carry it). Patients linked by ``Additional ID`` share a
``group``, so a split never puts them on both sides.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from converter import datasets as ds
from device.core.errors import DatasetError

CIRCOR = "circor2022"
PATIENTS_FILE = "development_patients.txt"
SUBSET = "training_data"  # every recording's subset (one stethoscope, one database for the sampler)
SITES = ("AV", "PV", "TV", "MV", "Phc")
# .tsv states: 0 is "not annotated" (noise, unclear), the others the heart cycle in order
UNANNOTATED, S1, SYSTOLE, S2, DIASTOLE = 0, 1, 2, 3, 4
_STEM = re.compile(r"^(?P<patient>\d+)_(?P<site>[A-Za-z]+)(?:_(?P<n>\d+))?$")


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    state: int  # UNANNOTATED, S1, SYSTOLE, S2, DIASTOLE


@dataclass(frozen=True)
class CircorRecording:
    """One recording with its patient's labels and its own segmentation."""

    path: Path
    patient: str
    site: str  # AV, PV, TV, MV, Phc
    record_id: str  # file stem, e.g. "50103_AV" or "49748_AV_2"
    murmur: str  # per patient: "Present" | "Absent" | "Unknown"
    murmur_locations: tuple[str, ...]  # sites where the murmur is heard (empty when absent)
    outcome: str  # per patient: "Normal" | "Abnormal"
    age: str  # "Neonate", "Infant", "Child", "Adolescent", "Young Adult" or "" when not given
    group: str  # linked patients (Additional ID) share one group
    spans: tuple[Span, ...]  # the .tsv segmentation, empty when the file has none

    dataset = CIRCOR

    @property
    def key(self) -> str:
        return f"{CIRCOR}/{self.record_id}"

    @property
    def murmur_here(self) -> bool:
        """The murmur is heard at this recording's site."""
        return self.murmur == "Present" and self.site in self.murmur_locations

    def annotated_s(self) -> float:
        """Seconds covered by S1/systole/S2/diastole spans (label 0 excluded)."""
        return sum(s.end_s - s.start_s for s in self.spans if s.state != UNANNOTATED)


def circor_root(root: str | Path) -> Path:
    """The folder holding ``training_data/``: ``root`` itself or ``root/circor2022``."""
    base = Path(root)
    for candidate in (base, base / CIRCOR):
        if (candidate / "training_data").is_dir():
            return candidate
    raise DatasetError(
        f"no CirCor 2022 folder (training_data/) under {root}",
        "point the data folder at circor2022/ or at the directory holding it",
    )


def read_patient_list(path: str | Path) -> set[str]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"patient list {p} does not exist", "give a file with one patient id per line")
    return {line.strip() for line in p.read_text().splitlines() if line.strip()}


def read_segmentation(path: Path) -> tuple[Span, ...]:
    """A ``.tsv`` segmentation: one ``start end state`` line per span (tabs or spaces)."""
    spans: list[Span] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            start, end, state = float(parts[0]), float(parts[1]), int(float(parts[2]))
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"{path}:{lineno}: expected '<start> <end> <state>', got {line!r}") from exc
        if state not in (UNANNOTATED, S1, SYSTOLE, S2, DIASTOLE) or end < start:
            raise DatasetError(f"{path}:{lineno}: span {line!r} has an unknown state or ends before it starts")
        spans.append(Span(start, end, state))
    return tuple(spans)


def _clean(value: str | None) -> str:
    v = (value or "").strip()
    return "" if v.lower() == "nan" else v


def read_patients(root: Path) -> dict[str, dict[str, str]]:
    """``training_data.csv`` rows by patient id."""
    table = root / "training_data.csv"
    if not table.is_file():
        raise DatasetError(f"{table} does not exist", "the CirCor folder must hold training_data.csv")
    with open(table, newline="") as f:
        return {row["Patient ID"].strip(): {k: _clean(v) for k, v in row.items()} for row in csv.DictReader(f)}


def _groups(patients: dict[str, dict[str, str]]) -> dict[str, str]:
    """Patient -> group: connected components of the Additional ID links (a union-find)."""
    parent: dict[str, str] = {p: p for p in patients}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for pid, row in patients.items():
        other = row.get("Additional ID", "")
        if other:
            other = str(int(float(other)))  # the csv writes some ids as floats ("50001.0")
            parent.setdefault(other, other)
            a, b = find(pid), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {p: f"{CIRCOR}:{find(p)}" for p in patients}


def load_circor2022(
    root: str | Path,
    patients: Iterable[str] | str | Path | None = None,
    *,
    restrict: bool = True,
) -> list[CircorRecording]:
    """Every recording of the wanted patients, sorted by record id.

    ``patients``: ids, or a file listing them; by default ``development_patients.txt`` in the folder when
    it is there (``restrict=False`` loads every patient instead).
    """
    base = circor_root(root)
    table = read_patients(base)
    wanted: set[str] | None
    if isinstance(patients, str | Path):
        wanted = read_patient_list(patients)
    elif patients is not None:
        wanted = {str(p) for p in patients}
    elif restrict and (base / PATIENTS_FILE).is_file():
        wanted = read_patient_list(base / PATIENTS_FILE)
    else:
        wanted = None
    groups = _groups(table)
    files: dict[str, Path] = {}
    for p in sorted((base / "training_data").iterdir()):
        if p.suffix.lower() in (".wav", ".flac") and (p.stem not in files or p.suffix.lower() == ".flac"):
            files[p.stem] = p
    out: list[CircorRecording] = []
    for stem, path in sorted(files.items()):
        m = _STEM.match(stem)
        if not m:
            continue
        pid = m["patient"]
        if (wanted is not None and pid not in wanted) or pid not in table:
            continue
        row = table[pid]
        tsv = path.with_suffix(".tsv")
        out.append(
            CircorRecording(
                path=path,
                patient=pid,
                site=m["site"],
                record_id=stem,
                murmur=row.get("Murmur", ""),
                murmur_locations=tuple(s for s in row.get("Murmur locations", "").split("+") if s),
                outcome=row.get("Outcome", ""),
                age=row.get("Age", ""),
                group=groups[pid],
                spans=read_segmentation(tsv) if tsv.is_file() else (),
            )
        )
    if not out:
        raise DatasetError(f"no CirCor recordings of the wanted patients under {base / 'training_data'}")
    return out


def murmur_label(r: CircorRecording) -> str:
    """A recording's murmur label: present where the patient's murmur is heard, absent for patients
    without one, unknown otherwise (Unknown patients, and the other sites of Present patients, where the
    murmur may be faint)."""
    if r.murmur == "Absent":
        return "absent"
    return "present" if r.murmur_here else "unknown"


def load_task_recordings(root: str | Path) -> list[ds.Recording]:
    """CirCor as a training source for tasks (converter/tasks.py LOADERS): one Recording per recording,
    labelled by ``murmur_label``, the patient's murmur as its sublabel, linked patients as its group."""
    return [
        ds.Recording(CIRCOR, SUBSET, r.record_id, r.path, murmur_label(r), r.murmur.lower(), r.group)
        for r in load_circor2022(root)
    ]


def patient_of(record_id: str) -> str:
    """The patient id in a CirCor record id ("50103_AV_2" -> "50103")."""
    return record_id.split("_", 1)[0]


def split_patients(
    recordings: Iterable[CircorRecording], test_fraction: float, seed: int = 0
) -> tuple[list[CircorRecording], list[CircorRecording]]:
    """Split by group (linked patients together), stratified by murmur label; deterministic for a seed."""
    import random

    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be between 0 and 1")
    recs = list(recordings)
    by_label: dict[str, set[str]] = {}
    for r in recs:
        by_label.setdefault(r.murmur, set()).add(r.group)
    rng = random.Random(seed)
    test_groups: set[str] = set()
    for label in sorted(by_label):
        groups = sorted(by_label[label] - test_groups)
        rng.shuffle(groups)
        test_groups.update(groups[: round(len(groups) * test_fraction)])
    return [r for r in recs if r.group not in test_groups], [r for r in recs if r.group in test_groups]
