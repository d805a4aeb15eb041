"""S1/S2 detection against the PASCAL 2011 set_a timing annotations (normal recordings, iStethoscope).

Reads ``pascal2011/set_a_timing.csv`` and ``pascal2011/set_a/`` under $STETH_DATA_DIR and prints per-file and
total hit / swapped / miss counts (a detected state's centre within 60 ms of the mark); writes nothing.
Run from the repo root:

    cd /work/main && PYTHONPATH=/work/main:research/ablations/screening/session9/segmentation \\
        python research/ablations/screening/session9/segmentation/pascal_check.py

(evaluate.py runs the same way.)
"""

from __future__ import annotations

import collections
import csv
from pathlib import Path

import numpy as np
import segment as sg
from device.audio_io import read_audio
from device.features import FeatureParams, preprocess

from converter import datasets as ds
from device import analysis

TOL = 0.06  # s between a mark and the centre of a detected S1/S2


def pascal_root() -> Path:
    data = ds.resolve_data_dir(None)
    return data / ds.PASCAL if (data / ds.PASCAL).is_dir() else data


def read_marks(root: Path) -> dict[str, list[tuple[str, int]]]:
    """File stem -> [(sound "S1"/"S2", location in samples)]."""
    ann: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    with (root / "set_a_timing.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            ann[Path(row["fname"]).stem].append((row["sound"], int(row["location"])))
    return ann


def main() -> None:
    root = pascal_root()
    tot: collections.Counter[str] = collections.Counter()
    for stem, marks in read_marks(root).items():
        path = root / "set_a" / f"{stem}.flac"
        if not path.exists():
            print("missing", stem)
            continue
        a = read_audio(str(path))
        x = preprocess(a.samples, a.sample_rate, FeatureParams()).astype(np.float64)
        hr = analysis.heart_rate(x, sg.FS)
        st = sg.segment(x, hr.bpm)["states"]
        segs = sg.segments(st)
        centre = {j: np.array([(a_ + b_) / 2 / sg.ENV_FS for s, a_, b_ in segs if s == j]) for j in (sg.S1, sg.S2)}
        c: collections.Counter[str] = collections.Counter()
        for sound, loc in marks:
            t = loc / a.sample_rate
            want, other = (sg.S1, sg.S2) if sound == "S1" else (sg.S2, sg.S1)
            dw = np.min(np.abs(centre[want] - t)) if len(centre[want]) else 9
            do = np.min(np.abs(centre[other] - t)) if len(centre[other]) else 9
            key = "hit" if dw <= TOL else ("swapped" if do <= TOL else "miss")
            c[sound + "_" + key] += 1
        tot += c
        print(stem, f"bpm={hr.bpm}", dict(c))
    print("TOTAL", dict(tot))
    for s in ("S1", "S2"):
        n = sum(v for k, v in tot.items() if k.startswith(s))
        print(s, {k: f"{v / n:.2f}" for k, v in tot.items() if k.startswith(s)}, "n=", n)


if __name__ == "__main__":
    main()
