"""Research (issue 22, deliverable 3): the cycle-length octave check and the rate from the S1-S1 intervals,
compared on the validation patients (and the training ones: the segmenter was trained on those, so their
posteriors are optimistic). Never the test patients.

PYTHONPATH=. python research/seg_hr_rate.py CACHE_DIR [val|train]

Variants: the cycle length as the autocorrelation gives it, or also tried at half (below 50/70/90 bpm) or at
double, the decoder's likelihood deciding; the rate as the median interval, the mean of the intervals within
a band around it, the median of two-interval spans, the median of the cycles the classifier fits well. The
reference is the annotated cycles' rate; "span" reads only the decoded S1s inside the annotated spans.
The half-length check here is not gated by the envelope's sound count as the shipped one is
(device/core/segment.py, MIN_SOUNDS_HALF): ungated, it made no difference on the validation patients
below 50 bpm, and gating only removes switches.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from converter import circor
from converter import segmenter as tr
from device.core import segment as sg

MODEL = sg.load_default()


def decode_at(post: np.ndarray, cycle: float) -> tuple[np.ndarray, float]:
    log_b = np.log(np.clip(post / MODEL.priors, 1e-8, None))
    d, dmax = MODEL.durations.frames(cycle)
    return sg.decode(log_b, d, dmax)


def median_rate(s1: list[float]) -> float | None:
    if len(s1) < 3:
        return None
    iv = np.diff(np.asarray(s1))
    iv = iv[(iv >= 60 / sg.MAX_BPM) & (iv <= 60 / sg.MIN_BPM)]
    return round(60 / float(np.median(iv)), 1) if len(iv) >= 2 else None


def band_mean(lo: float, hi: float, span: int = 1) -> Callable[[list[float]], float | None]:
    def rate(s1: list[float]) -> float | None:
        s = np.asarray(s1)
        if len(s) < 3:
            return None
        iv = (s[span:] - s[:-span]) / span
        iv = iv[(iv >= 60 / sg.MAX_BPM) & (iv <= 60 / sg.MIN_BPM)]
        if len(iv) < 2:
            return None
        med = np.median(iv)
        return round(60 / float(iv[(iv >= lo * med) & (iv <= hi * med)].mean()), 1)

    return rate


def main() -> int:
    cache, which = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "val"
    assert which in ("val", "train")
    recs = circor.load_circor2022(
        "/work/data/circor_full/src/data/raw_training", "/work/shared/data/circor2022/development_patients.txt"
    )
    train, val, _ = tr.split(recs, 0.2, 0.15, 0)
    rates = {"median": median_rate, "mean 0.8-1.25": band_mean(0.8, 1.25), "mean 0.85-1.18": band_mean(0.85, 1.18),
             "mean 0.9-1.1": band_mean(0.9, 1.1), "pairs median": band_mean(0, np.inf, 2),
             "shipped": sg.heart_rate_from_s1}  # fmt: skip
    res: dict[str, list[tuple[float, float | None]]] = {}
    for r in val if which == "val" else train:
        ref = tr.annotated_bpm(r.spans)
        if ref is None:
            continue
        post = MODEL.posteriors(tr.prepare(r, cache).feats)
        cands = sg.cycle_candidates(post, 1)
        cycle = cands[0][0] if cands else 0.8
        states, score = decode_at(post, cycle)
        choices = {"as is": states}
        for factor in (0.5, 2.0):
            if not 60 / sg.MAX_BPM <= factor * cycle <= 60 / sg.MIN_BPM:
                continue
            alt, alt_score = decode_at(post, factor * cycle)
            for below in (50, 70, 90, 250):
                if factor == 2.0 and below != 250:
                    continue
                use = alt_score > score and 60 / cycle < below
                choices[f"x{factor} below {below}"] = alt if use else states
        for key in ("x0.5 below 50", "x0.5 below 70", "x0.5 below 90", "x0.5 below 250", "x2.0 below 250"):
            choices.setdefault(key, states)
        for cname, st in choices.items():
            s1 = sg._centres(st, 0)
            inside = tr._inside_annotated(s1, r.spans)
            for rname, fn in rates.items():
                if cname != "as is" and rname not in ("median", "shipped"):
                    continue
                res.setdefault(f"{cname:16s} {rname:15s} whole", []).append((ref, fn(s1)))
                res.setdefault(f"{cname:16s} {rname:15s} span", []).append((ref, fn(inside)))
    for k, pairs in res.items():
        ref = np.array([a for a, _ in pairs])
        est = np.array([np.nan if e is None else e for _, e in pairs])
        err = np.abs(est - ref)
        octave = int(np.sum((est > 1.7 * ref) | (est < 0.6 * ref)))
        print(f"{k} n={len(ref)} median {np.nanmedian(err):.2f} within10 {np.mean(err <= 0.1 * ref):.4f} "
              f">=100 {np.mean((err <= 0.1 * ref)[ref >= 100]):.4f} octave {octave}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
