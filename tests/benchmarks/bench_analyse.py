"""Benchmark: the whole per-recording pipeline as the device runs it, per 5 s of audio, on one core.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m tests.benchmarks.bench_analyse [--before TREE] [--repeat N]

`Classifier.analyse` on a decoded recording: resampling, band-pass, segmentation (device/core/segment.py),
the quality gate and heart rate (device/core/analysis.py), the features, and every shipped model (screening
and its murmur companion, int8 LiteRT). The recordings are PhysioNet 2016 ones that take the gate's and the
heart rate's slower paths (irregular rhythms: e01637, d0052; a slow cycle decoded twice: e00152) beside two
regular ones (e00008, a0296). With ``--before TREE`` (a folder holding another version's ``device/``, e.g.
`git archive <commit> device | tar -x -C /tmp/before`) the same is timed there in the same run, one after
the other. The budget (issue 22/23): segmentation + features + inference <= 5 ms per 5 s.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDINGS = ("e00008", "a0296", "e01637", "d0052", "e00152")

_CHILD = """
import glob, json, sys, time
import numpy as np
from device.core.audio_io import read_audio
from device.core.inference import load_model
root, repeat = sys.argv[1], int(sys.argv[2])
clf = load_model()
out = {}
for rid in sys.argv[3:]:
    audio = read_audio(glob.glob(f"{root}/training-*/{rid}.*")[0])
    fives = len(audio.samples) / audio.sample_rate / 5
    clf.analyse(audio)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); clf.analyse(audio); ts.append(time.perf_counter() - t)
    out[rid] = [1000 * min(ts) / fives, 1000 * float(np.median(ts)) / fives, fives * 5]
print(json.dumps(out))
"""


def time_tree(tree: Path, data: Path, repeat: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data), str(repeat), *RECORDINGS],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="a folder holding another version's device/ package")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    data = Path(os.environ.get("STETH_DATA_DIR", REPO.parent / "shared" / "data")) / "physionet2016"
    trees = [("before", args.before)] if args.before else []
    trees.append(("now", REPO))
    results = {name: time_tree(tree, data, args.repeat) for name, tree in trees}
    print(f"load average {os.getloadavg()[0]:.2f}; ms per 5 s of audio, min / median of {args.repeat}")
    print("| recording | seconds | " + " | ".join(name for name, _ in trees) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in trees) + " |")
    for rid in RECORDINGS:
        cells = [f"{results[n][rid][0]:.2f} / {results[n][rid][1]:.2f}" for n, _ in trees]
        print(f"| {rid} | {results['now'][rid][2]:.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
