"""Evaluation: how often the shipped pipeline answers `unsure`, and why, on data the gate was not tuned on.

    .venv/bin/python -m tests.benchmarks.eval_quality [--circor DIR --patients FILE] [--every N]

The gate's rules (device/core/analysis.py) were first chosen on the CirCor validation patients of the
segmenter's split, then changed with PhysioNet's and PASCAL's figures in view; the weak-rhythm exemption and
the heart sound share on PhysioNet's design half, CirCor's validation patients and PASCAL's artifacts
(device/models/MODEL_CARD.md says what was seen when):
  circor      CirCor development recordings, by the segmenter's split (val: tuned on; test: unseen by
              segmenter and gate; train: the segmenter trained on them) and murmur Present vs Absent
  physionet   PhysioNet 2016 per database, abnormal vs normal (and their ratio; target <= 1.5), and by
              half (converter.datasets.split_folds, 2 folds, seed 0: blocks of one subject together):
              the weak-rhythm exemption and the heart sound share were chosen on the design half; the check
              half was scored once for each (and printed for earlier candidates: MODEL_CARD.md counts)
  pascal      PASCAL 2011 per set and label: the artifact recordings should be unsure (target >= 80%)
  known       silence, white noise, 50 Hz hum, a 200 Hz tone, a speech-like signal: all unsure
Prints Markdown tables; asserts nothing (tests/device/test_analysis.py asserts the known signals).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from device.core.audio_io import Audio

REPO = Path(__file__).resolve().parents[2]


def speech_like(rate: int = 8000, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """A synthetic voice: a glottal pulse train (f0 95-150 Hz, gliding) through three formant
    resonators that move per syllable, in syllables of 0.12-0.35 s with short pauses."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.3 * np.arange(n) / rate) + rng.normal(0, 2, n).cumsum() / np.sqrt(n)
    phase = np.cumsum(f0 / rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    out = np.zeros(n)
    i = 0
    while i < n:
        length = int(rng.uniform(0.12, 0.35) * rate)
        seg = pulses[i : i + length].copy()
        for formant, bw in ((rng.uniform(300, 850), 80), (rng.uniform(900, 2200), 120), (2600.0, 200)):
            r = np.exp(-np.pi * bw / rate)
            a = [1, -2 * r * np.cos(2 * np.pi * formant / rate), r * r]
            seg = lfilter([1 - r], a, seg)
        out[i : i + len(seg)] += seg * np.hanning(len(seg))
        i += length + int(rng.uniform(0.03, 0.25) * rate)
    out /= np.max(np.abs(out)) or 1.0
    return (0.3 * out).astype(np.float32)


def known_signals() -> dict[str, Audio]:
    from converter.convert import known_signals as base

    out = dict(base())
    out["speech_like"] = Audio(speech_like(), 8000, "speech_like")
    return out


def data_dir() -> Path:
    return Path(os.environ.get("STETH_DATA_DIR", REPO.parent / "shared" / "data"))


class Tally:
    def __init__(self) -> None:
        self.n: Counter[str] = Counter()
        self.unsure: Counter[str] = Counter()
        self.reasons: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, key: str, label: str, reason: str | None) -> None:
        self.n[key] += 1
        if label == "unsure":
            self.unsure[key] += 1
            self.reasons[key][reason or "artifact label"] += 1

    def rate(self, key: str) -> float:
        return self.unsure[key] / self.n[key] if self.n[key] else float("nan")

    def row(self, key: str) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.reasons[key].most_common())
        return f"| {key} | {self.n[key]} | {self.unsure[key]} | {self.rate(key):.1%} | {reasons} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--circor", default=os.environ.get("STETH_CIRCOR_DIR"), help="full CirCor folder")
    ap.add_argument("--patients", help="CirCor patients file (default: development_patients.txt of the data dir)")
    ap.add_argument("--every", type=int, default=1, help="every n-th PhysioNet recording")
    ap.add_argument("--only", default="known,circor,physionet,pascal")
    args = ap.parse_args()
    from converter import circor
    from converter import datasets as ds
    from converter.segmenter import split
    from device.core.errors import AudioError
    from device.core.inference import load_model

    clf = load_model()
    t = Tally()
    only = set(args.only.split(","))

    def run(src: Path | Audio, *keys: str) -> None:
        try:
            a = clf.analyse(src) if isinstance(src, Audio) else clf.analyse_file(src)
        except AudioError as exc:
            print(f"skipped {keys[0]}: {exc}", file=sys.stderr)
            return
        for key in keys:
            t.add(key, a.label, a.quality.reason)

    if "known" in only:
        for name, audio in known_signals().items():
            run(audio, f"known/{name}")
    if "circor" in only:
        root = args.circor or data_dir() / "circor2022"
        patients = args.patients or data_dir() / "circor2022" / circor.PATIENTS_FILE
        recs = circor.load_circor2022(root, patients)
        train, val, test = split(recs, 0.2, 0.15, 0)
        part = {r.record_id: "train" for r in train} | {r.record_id: "val" for r in val}
        part |= {r.record_id: "test" for r in test}
        for r in recs:
            p = part[r.record_id]
            run(r.path, "circor/all", f"circor/all/{r.murmur}", f"circor/{p}", f"circor/{p}/{r.murmur}")
    if "physionet" in only:
        physionet = ds.load_physionet2016(data_dir())
        halves = ds.split_folds(physionet, 2, seed=0)
        for i, r in enumerate(physionet):
            if i % args.every == 0:
                half = ("design", "check")[halves[i]]
                keys = (f"physionet/{r.subset}/{r.label}", f"physionet/all/{r.label}", f"physionet/{half}/{r.label}")
                run(r.path, *keys)
    if "pascal" in only:
        for r in ds.load_pascal2011(data_dir()):
            run(r.path, f"pascal/{r.subset}/{r.label}")
    print("| recordings | n | unsure | rate | reasons |\n| --- | --- | --- | --- | --- |")
    for key in sorted(t.n):
        print(t.row(key))
    print("\n| ratio abnormal/normal unsure | normal | abnormal | ratio |\n| --- | --- | --- | --- |")
    pairs = [(f"physionet/training-{x}", "normal", "abnormal") for x in "abcdef"] + [
        (f"physionet/{part}", "normal", "abnormal") for part in ("design", "check", "all")
    ]
    pairs += [("circor/all", "Absent", "Present"), ("circor/test", "Absent", "Present")]
    for base, neg, pos in pairs:
        a, b = t.rate(f"{base}/{neg}"), t.rate(f"{base}/{pos}")
        ratio = b / a if a > 0 else float("inf") if b > 0 else float("nan")
        print(f"| {base} | {a:.1%} | {b:.1%} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
