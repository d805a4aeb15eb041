"""Evaluation: the heart rate (device/core/analysis.py) against annotations and for octave errors.

    .venv/bin/python -m tests.benchmarks.eval_heart_rate [--before OLD_ANALYSIS.py] [--every 1]

On the data sets in $STETH_DATA_DIR (default ../shared/data):
  annotated  PASCAL 2011 set A's recordings with S1 positions (set_a_timing.csv): the true rate is
             60 / the median S1-S1 interval; median absolute error, share within 10 %, the worst
  known      recordings whose rate was read at a multiple of the truth (an "octave error")
  all        every --every'th PhysioNet 2016 and PASCAL recording: how many readings are implausible
             (above 150 or below 45 bpm), and how many changed against --before
  cycles     the rate the device reports now: the median S1-S1 interval of the segmenter's decoded cycles
             (device/core/segment.py), the envelope's rate when too few cycles are decoded; "envelope"
             is the envelope autocorrelation alone (device/core/analysis.heart_rate)
  S1/S2      the segmenter's S1 and S2 detection F1 within +-60 ms against set A's timings
  circor     with --circor: the rate against the annotated cycles of the CirCor development patients
             the segmenter never trained on (its sidecar's unseen_patients), and F1 on them; the rate of the
             whole recording (what the device reports) and of the decoded S1s inside the annotated spans
             (the annotations cover a few seconds of a recording: like with like)
--before takes another version of device/core/analysis.py (e.g. `git show <commit>:device/core/analysis.py >
/tmp/old.py`) and prints its figures beside the current ones. Prints tables; asserts nothing (the
thresholds are asserted by tests/device/test_analysis.py).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.core.audio_io import read_audio
from device.core.features import FeatureParams, preprocess

REPO = Path(__file__).resolve().parents[2]
PARAMS = FeatureParams()
# Recordings read at a multiple of their rate before the cycle check (device/core/analysis.py, _one_cycle):
# path in the data folder -> the rate's plausible range (bpm), from their envelopes and S1/S2 pattern.
KNOWN = {
    "physionet2016/training-d/d0017": (60.0, 110.0),  # 199 bpm was the S1-S2 interval (0.3 s)
    "pascal2011/set_a/normal__201105021654": (47.0, 60.0),  # annotated 52.4 bpm; read 175.5
    "pascal2011/set_b/normal__134_1306428161797_C": (85.0, 115.0),  # S1 S2 evenly spaced, alternating loud/soft
    "physionet2016/training-e/e00406": (45.0, 60.0),  # S1-S2 pairs 1.15 s apart; read 178
    "physionet2016/training-a/a0187": (65.0, 85.0),  # beats 0.8 s apart; read 37 (two cycles)
}

HeartRateFn = Callable[[np.ndarray, int], float | None]


def data_dir() -> Path:
    return Path(os.environ.get("STETH_DATA_DIR", REPO.parent / "shared" / "data"))


def rate_of(module_path: Path | None) -> HeartRateFn:
    """heart_rate(x, rate).bpm of the current device.core.analysis, or of another version of the file."""
    if module_path is None:
        from device.core import analysis
    else:
        spec = importlib.util.spec_from_file_location("analysis_before", module_path)
        assert spec and spec.loader
        analysis = importlib.util.module_from_spec(spec)
        sys.modules["analysis_before"] = analysis  # dataclasses look their module up
        spec.loader.exec_module(analysis)
    return lambda x, rate: analysis.heart_rate(x, rate).bpm


def cycles_rate(x: np.ndarray, rate: int) -> float | None:
    """What the device reports: the decoded cycles' rate, the envelope's when too few were decoded."""
    from device.core import analysis, segment

    bpm = segment.segment(x).heart_rate_bpm
    return bpm if bpm is not None else analysis.heart_rate(x, rate).bpm


def pascal_sounds_f1(root: Path) -> tuple[int, float, float]:
    """Recordings, S1 F1 and S2 F1 within +-60 ms on PASCAL set A's annotated S1/S2 positions, counting
    detections between the first and last annotated sound only (the rest is not annotated)."""
    from converter.segmenter import match
    from device.core import segment

    marks: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"S1": [], "S2": []})
    with open(root / "pascal2011" / "set_a_timing.csv", newline="") as f:
        for row in csv.DictReader(f):
            marks[row["fname"]][row["sound"]].append(int(row["location"]) / 44100)
    tp = {"S1": 0, "S2": 0}
    n = {"S1": 0, "S2": 0}
    for fname, sounds in sorted(marks.items()):
        stem = fname.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        seg = segment.segment(processed(find(root / "pascal2011" / "set_a", stem)))
        lo = min(sounds["S1"] + sounds["S2"]) - 0.1
        hi = max(sounds["S1"] + sounds["S2"]) + 0.1
        for name, found in (("S1", seg.s1), ("S2", seg.s2)):
            det = [t for t in found if lo <= t <= hi]
            tp[name] += match(det, sounds[name])
            n[name] += len(det) + len(sounds[name])
    return len(marks), 2 * tp["S1"] / n["S1"], 2 * tp["S2"] / n["S2"]


def circor_unseen(folder: Path, patients: Path | None) -> dict[str, object]:
    from converter import circor
    from converter import segmenter as tr
    from device.core import segment

    model = segment.load_default()
    unseen = set(model.meta["data"]["split"]["unseen_patients"])
    recs = [r for r in circor.load_circor2022(folder, patients) if r.patient in unseen]
    return tr.score(model, [tr.prepare(r) for r in recs]).as_dict()


def processed(path: Path) -> np.ndarray:
    audio = read_audio(path)
    return preprocess(audio.samples, audio.sample_rate, PARAMS)


def find(root: Path, stem: str) -> Path:
    for suffix in (".flac", ".wav"):
        if (root / f"{stem}{suffix}").exists():
            return root / f"{stem}{suffix}"
    raise FileNotFoundError(root / stem)


@dataclass(frozen=True)
class Annotated:
    name: str
    true_bpm: float
    got: float | None

    @property
    def error(self) -> float:
        return abs(self.got - self.true_bpm) if self.got else float("inf")

    @property
    def relative(self) -> float:
        return self.error / self.true_bpm


def pascal_annotated(root: Path, heart_rate: HeartRateFn) -> list[Annotated]:
    """PASCAL set A's annotated recordings: the rate from the median S1-S1 interval (44.1 kHz positions)."""
    s1 = defaultdict(list)
    with open(root / "pascal2011" / "set_a_timing.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["sound"] == "S1":
                s1[row["fname"]].append(int(row["location"]))
    out = []
    for fname, locations in sorted(s1.items()):
        true_bpm = 60.0 / float(np.median(np.diff(np.sort(locations)) / 44100))
        stem = fname.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        x = processed(find(root / "pascal2011" / "set_a", stem))
        out.append(Annotated(stem, true_bpm, heart_rate(x, PARAMS.sample_rate)))
    return out


def summary(rows: list[Annotated]) -> tuple[float, float, list[Annotated]]:
    """Median absolute error (bpm), share within 10 %, the three worst."""
    errors = np.array([r.error for r in rows])
    within = float(np.mean([r.relative <= 0.1 for r in rows]))
    return float(np.median(errors)), within, sorted(rows, key=lambda r: r.relative)[-3:]


def all_recordings(root: Path, every: int) -> list[Path]:
    paths = sorted((root / "physionet2016").glob("training-*/*")) + sorted((root / "pascal2011").glob("set_*/*"))
    return [p for p in paths if p.suffix.lower() in (".wav", ".flac")][::every]


def main(argv: list[str] | None = None) -> int:
    from tests.benchmarks import support

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, help="another version of device/core/analysis.py to compare with")
    p.add_argument("--every", type=int, default=1, help="take every N-th recording for the data-set counts")
    p.add_argument("--circor", type=Path, help="the full CirCor folder (its development patients only)")
    p.add_argument("--patients", type=Path, help="CirCor patients file (default: the data dir's list)")
    args = p.parse_args(argv)
    root = data_dir()
    versions = {"envelope": rate_of(None), "cycles": cycles_rate}
    if args.before:
        versions = {"before": rate_of(args.before), **versions}

    annotated = {name: pascal_annotated(root, fn) for name, fn in versions.items()}
    rows = []
    for name, result in annotated.items():
        median, within, worst = summary(result)
        worst_text = "; ".join(f"{r.name} {r.got} for {r.true_bpm:.1f}" for r in reversed(worst))
        rows.append((name, len(result), f"{median:.2f}", f"{within:.1%}", worst_text))
    support.table(["version", "recordings", "median abs error bpm", "within 10 %", "worst three"], rows,
                  "PASCAL set A, annotated S1 positions")  # fmt: skip

    count, f1_s1, f1_s2 = pascal_sounds_f1(root)
    support.table(["recordings", "S1 F1", "S2 F1"], [(count, f"{f1_s1:.3f}", f"{f1_s2:.3f}")],
                  "PASCAL set A, segmenter S1/S2 detection within 60 ms")  # fmt: skip
    if args.circor:
        patients = args.patients or root / "circor2022" / "development_patients.txt"
        sc = circor_unseen(args.circor, patients)
        hr = sc["heart_rate"]
        assert isinstance(hr, dict)
        span = hr["annotated_span"]
        support.table(
            ["rate of", "recordings", "S1 F1", "S2 F1", "median abs error bpm", "within 10 %", ">= 100 bpm within 10 %",
             "octave"],
            [(name, h["recordings"], sc["f1_s1"], sc["f1_s2"], h["median_abs_error_bpm"], h["within_10pct"],
              h["within_10pct_over_100bpm"], h["octave_errors"])
             for name, h in (("whole recording", hr), ("annotated spans", span))],
            "CirCor development patients the segmenter never trained on (validation + test)",
        )  # fmt: skip

    rows = []
    for sample in sorted((REPO / "device" / "samples").glob("*.flac")):
        x = processed(sample)
        rows.append((sample.stem, *(fn(x, PARAMS.sample_rate) for fn in versions.values())))
    support.table(["sample", *versions], rows, "The shipped samples (device/samples)")

    rows = []
    for path, (low, high) in KNOWN.items():
        x = processed(find(root, path))
        got = {name: fn(x, PARAMS.sample_rate) for name, fn in versions.items()}
        rows.append((path, f"{low:g}-{high:g}", *(got[n] for n in versions)))
    support.table(["recording", "plausible bpm", *versions], rows, "Known octave errors")

    paths = all_recordings(root, args.every)
    readings: dict[str, list[float | None]] = {name: [] for name in versions}
    for path in paths:
        try:
            x = processed(path)
        except Exception:  # unreadable or too short: not a heart-rate question
            continue
        for name, fn in versions.items():
            readings[name].append(fn(x, PARAMS.sample_rate))
    rows = []
    for name, got in readings.items():
        bpm = np.array([g or 0.0 for g in got])
        rows.append((name, len(bpm), int(np.sum(bpm == 0)), int(np.sum(bpm > 150)), int(np.sum(bpm > 130)),
                     int(np.sum((bpm > 0) & (bpm < 45))), f"{np.median(bpm[bpm > 0]):.1f}"))  # fmt: skip
    support.table(["version", "recordings", "no rate", "> 150 bpm", "> 130 bpm", "< 45 bpm", "median bpm"], rows,
                  f"Every {args.every}. recording of PhysioNet 2016 and PASCAL 2011")  # fmt: skip
    if args.before:
        before, now = readings["before"], readings["now"]
        changed = [(b, n) for b, n in zip(before, now, strict=True) if b != n]
        faster = sum(1 for b, n in changed if b and n and n > b)
        print(f"\nreadings changed: {len(changed)} of {len(now)} ({faster} to a faster rate, "
              f"{len(changed) - faster} to a slower one)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
