"""Research: the segmenter's quality measures on every recording we have, to choose the gate's rules.

    PYTHONPATH=. python research/gate_stats.py MODEL.npz OUT.csv [--circor DIR --patients FILE]

One row per recording: data set, folder, label, split (CirCor), duration, level, clipping, spikes, the
segmentation's fit, confident frames, periodicity, S1 count, block-wise fit, heart rates. Not product.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

from converter import circor
from converter import datasets as ds
from converter.segmenter import split
from device.core import analysis
from device.core import segment as sg
from device.core.audio_io import Audio, read_audio
from device.core.features import FeatureParams, preprocess

PARAMS = FeatureParams(band_high_hz=700.0)  # the screening model's band


def block_fit(seg: sg.Segmentation, post: np.ndarray, block_s: float = 1.0) -> np.ndarray:
    f = post[np.arange(len(post)), seg.states.astype(int)]
    k = int(block_s * sg.FRAME_RATE)
    n = len(f) // k
    return f[: n * k].reshape(n, k).mean(axis=1) if n else np.array([f.mean()])


def row(audio: Audio, model: sg.SegmenterModel) -> dict[str, float]:
    x = preprocess(audio.samples, audio.sample_rate, PARAMS)
    raw = audio.samples.astype(np.float64) - audio.samples.mean()
    rms = float(np.sqrt(np.mean(raw * raw)))
    peak = float(np.max(np.abs(audio.samples)))
    clipped = float(np.mean(np.abs(audio.samples) >= 0.99 * peak)) if peak >= 0.5 else 0.0
    post = model.posteriors(sg.frame_features(x))
    seg = sg.segment_posteriors(post, model)
    bf = block_fit(seg, post)
    old = analysis.heart_rate(x, PARAMS.sample_rate)
    return {
        "duration": round(audio.duration_s, 2),
        "level_db": round(20 * np.log10(max(rms, 1e-12)), 1),
        "clipped": round(clipped, 4),
        "spikes": round(analysis.spike_fraction(x, PARAMS.sample_rate), 3),
        "fit": seg.fit,
        "confident": seg.confident_frames,
        "periodicity": seg.periodicity,
        "n_s1": len(seg.s1),
        "n_s2": len(seg.s2),
        "bf_good_55": round(float(np.mean(bf >= 0.55)), 3),
        "bf_good_65": round(float(np.mean(bf >= 0.65)), 3),
        "bf_good_75": round(float(np.mean(bf >= 0.75)), 3),
        "bf_median": round(float(np.median(bf)), 3),
        "hr_seg": seg.heart_rate_bpm or "",
        "hr_old": old.bpm or "",
        "old_periodicity": round(old.periodicity, 3),
    }


def synthetic() -> list[tuple[str, Audio]]:
    rng = np.random.default_rng(0)
    rate, n = 4000, 4000 * 10
    t = np.arange(n) / rate
    out = [
        ("silence", Audio(np.zeros(n, np.float32), rate, "silence")),
        ("white_noise", Audio((0.1 * rng.standard_normal(n)).astype(np.float32), rate, "noise")),
        ("hum_50hz", Audio((0.3 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), rate, "hum")),
        ("tone_200hz", Audio((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, "tone")),
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--circor", default="/work/data/circor_full/src/data/raw_training")
    ap.add_argument("--patients", default="/work/shared/data/circor2022/development_patients.txt")
    ap.add_argument("--only", default="circor,physionet,pascal,synthetic")
    a = ap.parse_args()
    model = sg.SegmenterModel.load(Path(a.model))
    data = Path(os.environ.get("STETH_DATA_DIR", "/work/shared/data"))
    only = set(a.only.split(","))
    items: list[tuple[dict[str, str], Path | Audio]] = []
    if "circor" in only:
        recs = circor.load_circor2022(a.circor, a.patients)
        train, val, test = split(recs, 0.2, 0.15, 0)
        part = {r.record_id: "train" for r in train} | {r.record_id: "val" for r in val}
        part |= {r.record_id: "test" for r in test}
        for r in recs:
            items.append(
                (
                    {
                        "dataset": "circor",
                        "subset": r.site,
                        "label": r.murmur,
                        "split": part[r.record_id],
                        "id": r.record_id,
                    },
                    r.path,
                )
            )
    if "physionet" in only:
        for r in ds.load_physionet2016(data):
            items.append(
                (
                    {
                        "dataset": "physionet",
                        "subset": r.subset,
                        "label": r.label or "",
                        "split": "",
                        "id": r.record_id,
                    },
                    r.path,
                )
            )
    if "pascal" in only:
        for r in ds.load_pascal2011(data):
            items.append(
                (
                    {
                        "dataset": "pascal",
                        "subset": r.subset,
                        "label": r.label or "",
                        "split": r.sublabel,
                        "id": r.record_id,
                    },
                    r.path,
                )
            )
    if "synthetic" in only:
        for name, audio in synthetic():
            items.append(({"dataset": "synthetic", "subset": "", "label": name, "split": "", "id": name}, audio))
    with open(a.out, "w", newline="") as f:
        w: csv.DictWriter[str] | None = None
        for i, (info, src) in enumerate(items):
            audio = src if isinstance(src, Audio) else read_audio(src)
            if audio.duration_s < 2:
                continue
            r = {**info, **row(audio, model)}
            if w is None:
                w = csv.DictWriter(f, fieldnames=list(r))
                w.writeheader()
            w.writerow(r)
            if i % 200 == 0:
                print(i, len(items), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
