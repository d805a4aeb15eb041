"""Benchmark: the whole per-recording pipeline as the device runs it, per 5 s of audio, on one core.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m tests.benchmarks.bench_analyse [--before TREE] [--repeat N]
        [--parts] [--count]

`Classifier.analyse` on a decoded recording: resampling, band-pass, segmentation (device/core/segment.py),
the quality gate and heart rate (device/core/analysis.py), the features, and every shipped model (screening
and its murmur companion, int8 LiteRT). The recordings are PhysioNet 2016 ones that take the gate's and the
heart rate's slower paths (irregular rhythms: e01637, d0052; a slow cycle decoded twice: e00152) beside two
regular ones (e00008, a0296). With ``--before TREE`` (a folder holding another version's ``device/``, e.g.
`git archive <commit> device | tar -x -C /tmp/before`) the same is timed there in the same run, one after
the other. The budget (issue 22/23): segmentation + features + inference <= 5 ms per 5 s.

Each run is timed twice over: wall-clock time (time.perf_counter, the budget's measure) and the CPU time
the process itself used (time.process_time), which leaves out the time another process held the core
while this one waited, so it moves less with the machine's load. ``--parts`` also times analyse's steps
one by one where they run, in its order (CPU time, min of the repeats per step). ``--count`` counts the
instructions one analyse executes under valgrind's callgrind (a figure no other process changes; valgrind
runs numpy's AVX2 code, not the AVX-512 code this CPU would run): the run with 2 more analyses of the
recording minus the run with none, halved.
Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        clf.analyse(audio)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out[rid] = {"seconds": fives * 5, "wall": [1000 * min(wall) / fives, 1000 * float(np.median(wall)) / fives],
                "cpu": [1000 * min(cpu) / fives, 1000 * float(np.median(cpu)) / fives]}
print(json.dumps(out))
"""

# The steps of Classifier.analyse in its order, each timed where it runs (so each finds memory and caches as
# analyse leaves them: timed alone in a loop, a step that frees megabytes finds fresh pages each time), with
# the functions both trees have (the features through signal_features where the tree has it, as its
# analyse computes them).
_PARTS = """
import glob, json, sys, time
import numpy as np
from device.core import analysis, segment
from device.core import features as F
from device.core.audio_io import read_audio
from device.core.inference import load_model
root, repeat = sys.argv[1], int(sys.argv[2])
clf = load_model()
seg_model, murmur = clf.segmenter, clf.companions[0]
p = clf.params
feats_of = getattr(F, "signal_features", None) or (lambda x, p, s: F.window_features(F.analysis_windows(x, p, s), p))
STEPS = ("checks (silence, clipping)", "band-pass (preprocess)", "features (MFCC)", "screening model (int8)",
         "segmentation: band energies", "segmentation: perceptron", "segmentation: cycle length + decoding",
         "gate + heart rate (assess)", "result + murmur model (int8)", "all steps")

def steps(audio):
    c = [time.process_time()]
    F.check_samples(audio); F.check_signal(audio, p); c.append(time.process_time())
    x = F.preprocess(audio.samples, audio.sample_rate, p); c.append(time.process_time())
    feats = feats_of(x, p, audio.source); c.append(time.process_time())
    probs = clf.predict_windows(feats); c.append(time.process_time())
    bands = segment.frame_features(x); c.append(time.process_time())
    post = seg_model.posteriors(bands); c.append(time.process_time())
    seg = segment.segment_posteriors(post, seg_model, lambda: segment.sound_rate(x)); c.append(time.process_time())
    quality, hr = analysis.assess(audio, x, p.sample_rate, seg); c.append(time.process_time())
    result = clf._decide(probs, quality, hr, audio, seg)
    result.fields["murmur"] = murmur.field_answer(audio, quality, feats); c.append(time.process_time())
    return [b - a for a, b in zip(c, c[1:])] + [c[-1] - c[0]]

out = {}
for rid in sys.argv[3:]:
    audio = read_audio(glob.glob(f"{root}/training-*/{rid}.*")[0])
    fives = len(audio.samples) / audio.sample_rate / 5
    steps(audio)
    best = np.min([steps(audio) for _ in range(repeat)], axis=0)
    for name, t in zip(STEPS, best):
        out.setdefault(name, {})[rid] = 1000 * float(t) / fives
print(json.dumps(out))
"""

_COUNT = """
import glob, sys
from device.core.audio_io import read_audio
from device.core.inference import load_model
root, extra, rid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
clf = load_model()
audio = read_audio(glob.glob(f"{root}/training-*/{rid}.*")[0])
clf.analyse(audio)
for _ in range(extra):
    clf.analyse(audio)
"""


def _run(code: str, tree: Path, args: list[str], prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [*(prefix or []), sys.executable, "-c", code, *args],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )


def time_tree(tree: Path, data: Path, repeat: int, code: str = _CHILD) -> dict[str, dict[str, list[float]]]:
    res = _run(code, tree, [str(data), str(repeat), *RECORDINGS])
    parsed: dict[str, dict[str, list[float]]] = json.loads(res.stdout.strip().splitlines()[-1])
    return parsed


def count_instructions(tree: Path, data: Path, rid: str) -> float:
    """Instructions of one analyse of ``rid`` (callgrind): 2 extra analyses minus none, halved."""
    counts = []
    for extra in (0, 2):
        res = _run(
            _COUNT,
            tree,
            [str(data), str(extra), rid],
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"],
        )
        line = next(x for x in res.stderr.splitlines() if "Collected" in x)
        counts.append(int(line.split(":")[-1].strip().replace(",", "")))
    return (counts[1] - counts[0]) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="a folder holding another version's device/ package")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--parts", action="store_true", help="also time analyse's steps one by one (CPU time)")
    ap.add_argument("--count", action="store_true", help="also count instructions under valgrind (~1 min a tree)")
    args = ap.parse_args()
    data = Path(os.environ.get("STETH_DATA_DIR", REPO.parent / "shared" / "data")) / "physionet2016"
    trees = [("before", args.before)] if args.before else []
    trees.append(("now", REPO))
    names = [name for name, _ in trees]
    results = {name: time_tree(tree, data, args.repeat) for name, tree in trees}
    seconds = results["now"]
    for measure, title in (("wall", "wall-clock"), ("cpu", "CPU time of the process")):
        print(f"load average {os.getloadavg()[0]:.2f}; {title}, ms per 5 s of audio, min / median of {args.repeat}")
        print("| recording | seconds | " + " | ".join(names) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in trees) + " |")
        for rid in RECORDINGS:
            cells = [f"{results[n][rid][measure][0]:.2f} / {results[n][rid][measure][1]:.2f}" for n in names]
            print(f"| {rid} | {seconds[rid]['seconds']:.1f} | " + " | ".join(cells) + " |")
        print()
    if args.parts:
        parts = {name: time_tree(tree, data, args.repeat, _PARTS) for name, tree in trees}
        print(f"load average {os.getloadavg()[0]:.2f}; analyse's steps, CPU time, ms per 5 s, min of {args.repeat}")
        print("| step | " + " | ".join(RECORDINGS) + " |")
        print("| --- |" + " --- |" * len(RECORDINGS))
        for step in parts["now"]:
            cells = [" / ".join(f"{parts[n][step][rid]:.2f}" for n in names) for rid in RECORDINGS]
            print(f"| {step} | " + " | ".join(cells) + " |")
        print(f"(cells: {' / '.join(names)})\n")
    if args.count:
        if shutil.which("valgrind") is None:
            print("--count: valgrind is not installed (apt-get install valgrind)")
            return 0
        print("instructions per 5 s of audio, millions (callgrind; one analyse, after a first one)")
        print("| recording | " + " | ".join(names) + " |")
        print("| --- | " + " | ".join("---" for _ in trees) + " |")
        for rid in RECORDINGS:
            fives = seconds[rid]["seconds"] / 5
            cells = [f"{count_instructions(tree, data, rid) / fives / 1e6:.2f}" for _, tree in trees]
            print(f"| {rid} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
