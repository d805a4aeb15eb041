"""Loaders for the public heart-sound data sets, and a leakage-safe split.

Both read the layouts as published (``.wav``) and as stored in the shared folder (``.flac``), matching
recordings by file stem. The data folder comes from an option or ``STETH_DATA_DIR``; nothing is
downloaded.
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from device.core.audio_io import AUDIO_SUFFIXES
from device.core.errors import DatasetError

DATA_ENV = "STETH_DATA_DIR"
PHYSIONET = "physionet2016"
PASCAL = "pascal2011"
PHYSIONET_LABELS = {"1": "abnormal", "-1": "normal"}
# Records of one subject carry consecutive numbers; a block never holds more than this many records, so
# the folds stay fine-grained even in training-e's long runs of normal records.
MAX_BLOCK = 12


@dataclass(frozen=True)
class Recording:
    dataset: str  # "physionet2016" | "pascal2011"
    subset: str  # "training-a".."training-f" | "set_a" | "set_b"
    record_id: str  # file stem
    path: Path
    label: str | None  # None: unlabelled (PASCAL test files)
    sublabel: str = ""  # PASCAL: "noisynormal", "noisymurmur"
    group: str = ""  # recordings sharing a group must stay on the same side of a split

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.subset}/{self.record_id}"


def resolve_data_dir(option: str | Path | None = None) -> Path:
    """The data folder from the option, else $STETH_DATA_DIR; a clear error when neither is usable."""
    raw = option if option is not None else os.environ.get(DATA_ENV)
    if not raw:
        raise DatasetError(
            "no data folder given",
            f"pass it as an argument or set {DATA_ENV} (e.g. {DATA_ENV}=../shared/data)",
        )
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data folder {path} does not exist", f"check the path or {DATA_ENV}")
    return path


def audio_files(folder: Path) -> dict[str, Path]:
    """Stem -> file for every .wav/.flac in ``folder`` (FLAC preferred when both exist)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and (p.stem not in found or p.suffix.lower() == ".flac"):
            found[p.stem] = p
    return found


def _physionet_root(root: Path) -> Path:
    return root / PHYSIONET if (root / PHYSIONET).is_dir() else root


def physionet_folders(root: Path) -> list[Path]:
    base = _physionet_root(root)
    return sorted(p for p in base.glob("training-*") if p.is_dir() and (p / "REFERENCE.csv").exists())


def read_reference(folder: Path) -> dict[str, str]:
    labels: dict[str, str] = {}
    with open(folder / "REFERENCE.csv", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2 or row[1].strip() not in PHYSIONET_LABELS:
                raise DatasetError(
                    f"{folder / 'REFERENCE.csv'}:{lineno}: expected '<record>,1' or '<record>,-1', got {row!r}"
                )
            labels[row[0].strip()] = PHYSIONET_LABELS[row[1].strip()]
    return labels


def _blocks(stems_labels: Sequence[tuple[str, str | None]], prefix: str) -> dict[str, str]:
    """Group consecutive records with the same label into blocks of at most MAX_BLOCK."""
    groups: dict[str, str] = {}
    block, size, prev = 0, 0, object()
    for stem, label in stems_labels:
        if label != prev or size >= MAX_BLOCK:
            block, size, prev = block + 1, 0, label
        groups[stem] = f"{prefix}:{block}"
        size += 1
    return groups


def load_physionet2016(root: str | Path, subsets: Iterable[str] | None = None) -> list[Recording]:
    """Labelled recordings of PhysioNet/CinC 2016 (``training-x/REFERENCE.csv`` + audio)."""
    folders = physionet_folders(Path(root))
    if not folders:
        raise DatasetError(
            f"no PhysioNet 2016 folders (training-*/REFERENCE.csv) under {root}",
            "point the data folder at the directory holding physionet2016/ or training-a/",
        )
    wanted = set(subsets) if subsets else None
    out: list[Recording] = []
    for folder in folders:
        if wanted and folder.name not in wanted:
            continue
        labels, files = read_reference(folder), audio_files(folder)
        stems = sorted(s for s in labels if s in files)
        groups = _blocks([(s, labels[s]) for s in stems], folder.name)
        out += [Recording(PHYSIONET, folder.name, s, files[s], labels[s], "", groups[s]) for s in stems]
    return out


_PASCAL_B_PATIENT = re.compile(r"__?(\d+)_\d{10,}")


def load_pascal2011(root: str | Path, include_unlabelled: bool = False) -> list[Recording]:
    """PASCAL 2011 sets A and B, labels from ``labels_from_filenames.csv`` (or the file names)."""
    base = Path(root) / PASCAL if (Path(root) / PASCAL).is_dir() else Path(root)
    sets = [d for d in ("set_a", "set_b") if (base / d).is_dir()]
    if not sets:
        raise DatasetError(f"no PASCAL 2011 folders (set_a/, set_b/) under {root}")
    table: dict[str, tuple[str, str]] = {}
    mapping = base / "labels_from_filenames.csv"
    if mapping.exists():
        with open(mapping, newline="") as f:
            for row in csv.DictReader(f):
                table[Path(row["file"]).stem] = (row["label"].strip(), row["sublabel"].strip())
    out: list[Recording] = []
    for subset in sets:
        for stem, path in audio_files(base / subset).items():
            label, sublabel = table.get(stem) or _pascal_label_from_name(stem)
            if not label and not include_unlabelled:
                continue
            # set_b names carry a patient number: keep a patient's recordings together.
            m = _PASCAL_B_PATIENT.search(stem)
            group = f"{subset}:p{m[1]}" if subset == "set_b" and m else f"{subset}:{stem}"
            out.append(Recording(PASCAL, subset, stem, path, label or None, sublabel, group))
    return out


def _pascal_label_from_name(stem: str) -> tuple[str, str]:
    """The public WAV release encodes the label in the name: 'murmur__...', 'Btraining_murmur_...'."""
    name = stem.lower().removeprefix("btraining_")
    if "unlabelled" in name:
        return "", ""
    for label in ("normal", "murmur", "extrahls", "extrastole", "artifact"):
        if name.startswith(label):
            sub = name[len(label) :].lstrip("_").split("_", 1)[0]
            return label, sub if sub.startswith("noisy") else ""
    return "", ""


def split_folds(recordings: Sequence[Recording], k: int, seed: int = 0) -> list[int]:
    """Fold index (0..k-1) per recording: blocks never split, strata (dataset, subset, label) balanced.

    Blocks of each stratum are shuffled with ``seed`` and each goes to the fold that holds the fewest
    recordings of that stratum so far, so every fold gets its share of every database and label.
    """
    if k < 2:
        raise ValueError("k must be at least 2")
    by_stratum: dict[tuple[str, str, str | None], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(recordings):
        by_stratum[(r.dataset, r.subset, r.label)][r.group or r.key].append(i)
    folds = [-1] * len(recordings)
    rng = random.Random(seed)
    fold_load = [0] * k  # total records per fold, the tie-breaker across strata
    for stratum in sorted(by_stratum, key=str):
        blocks = list(by_stratum[stratum].values())
        rng.shuffle(blocks)
        counts = [0] * k
        for members in blocks:
            target = min(range(k), key=lambda f: (counts[f], fold_load[f], f))
            counts[target] += len(members)
            fold_load[target] += len(members)
            for i in members:
                folds[i] = target
    # A group that spans strata (a patient whose records carry two labels) must still land in one fold.
    first: dict[str, int] = {}
    for i, r in enumerate(recordings):
        g = r.group or r.key
        folds[i] = first.setdefault(g, folds[i])
    return folds


def train_test_split(
    recordings: Sequence[Recording], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Recording], list[Recording]]:
    """Held-out split by blocks, stratified like ``split_folds``."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be between 0 and 1")
    k = max(2, round(1 / test_fraction))
    folds = split_folds(recordings, k, seed)
    train = [r for r, f in zip(recordings, folds, strict=True) if f != 0]
    test = [r for r, f in zip(recordings, folds, strict=True) if f == 0]
    return train, test
