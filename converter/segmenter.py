"""`steth train-segmenter`: learn the heart-cycle segmenter (device/segment.py) from CirCor's annotations.

Patients are split once, by split group (linked patients together): a test part is set aside and scored
once, at the end; a validation part inside the rest is what choices are made on. Frames in spans
labelled 0 (not annotated) or outside every span are not trained on. The frame classifier is a small
perceptron (scikit-learn) whose weights are saved for numpy; the duration model is fitted to the
annotated cycles of the training patients. Scores: S1 and S2 detection F1 within +-60 ms (the centre of
a decoded sound matched one-to-one with an annotated one's centre, inside the annotated part of the
recording) and the heart rate against the annotated cycles.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor
from converter import datasets as ds
from device.core import segment as sg
from device.core.audio_io import read_audio
from device.core.features import FeatureParams, preprocess

log = logging.getLogger(__name__)
TOLERANCE_S = 0.06
PREP = FeatureParams()  # resampled to 2 kHz and band-passed 25-400 Hz, as the device does


def register(sub: Any) -> None:
    p = sub.add_parser("train-segmenter", help="train the heart-cycle segmenter on CirCor's annotations")
    p.add_argument("--circor", help="CirCor folder (default: circor2022/ in $STETH_DATA_DIR)")
    p.add_argument("--patients", help="patients to use, one id a line (default: development_patients.txt there)")
    p.add_argument("--out", default="artifacts/segmenter/segmenter", help="model path (.npz and .json written)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="patients held out, scored once")
    p.add_argument("--val-fraction", type=float, default=0.15, help="patients of the rest for validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", default="64,32", help="hidden layer sizes")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--frame-step", type=int, default=3, help="train on every n-th annotated frame")
    p.add_argument(
        "--final", action="store_true", help="also score the held-out test patients (once, for the final choice)"
    )
    p.add_argument("--model", help="score these weights (.npz) instead of training new ones")
    p.add_argument("--cache", help="folder to keep each recording's frame features in between runs")
    p.add_argument("--limit", type=int, default=0, help="use only this many recordings (quick runs)")
    p.set_defaults(func=run)


# -- data ----------------------------------------------------------------------------------------------


def frame_labels(spans: Sequence[circor.Span], n_frames: int) -> np.ndarray:
    """State (0..3) per frame from the segmentation; -1 where not annotated."""
    labels = np.full(n_frames, -1, dtype=np.int8)
    centres = (np.arange(n_frames) + 0.5) / sg.FRAME_RATE
    for s in spans:
        if s.state == circor.UNANNOTATED:
            continue
        i0, i1 = np.searchsorted(centres, [s.start_s, s.end_s])
        labels[i0:i1] = s.state - 1
    return labels


@dataclass
class Prepared:
    rec: circor.CircorRecording
    feats: np.ndarray  # (frames, N_FEATURES)
    labels: np.ndarray  # (frames,)
    sounds_per_s: float | None = None  # heart sounds a second in the envelope (sg.sound_rate)


def prepare(rec: circor.CircorRecording, cache: Path | None = None) -> Prepared:
    cached = cache / f"{rec.record_id}.npy" if cache else None
    cached_sounds = cache / f"{rec.record_id}.sounds.npy" if cache else None
    if cached is not None and cached_sounds is not None and cached.exists() and cached_sounds.exists():
        feats, sounds = np.load(cached), float(np.load(cached_sounds)[0])
    else:
        audio = read_audio(rec.path)
        x = preprocess(audio.samples, audio.sample_rate, PREP)
        feats, sounds = sg.frame_features(x), sg.sound_rate(x)
        if cached is not None and cached_sounds is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, feats)
            np.save(cached_sounds, np.array([sounds]))
    return Prepared(rec, feats, frame_labels(rec.spans, len(feats)), sounds)


def training_frames(items: Sequence[Prepared], step: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i, it in enumerate(items):
        idx = np.flatnonzero(it.labels >= 0)
        idx = idx[(i % step) :: step]
        if len(idx):
            xs.append(sg.with_context(it.feats)[idx])
            ys.append(it.labels[idx])
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def annotated_cycles(spans: Sequence[circor.Span]) -> list[list[float]]:
    """[S1, systole, S2, diastole, cycle] durations of every fully annotated cycle (S1 to next S1)."""
    out = []
    for i in range(len(spans) - 4):
        w = spans[i : i + 5]
        if [s.state for s in w] == [1, 2, 3, 4, 1]:
            out.append([s.end_s - s.start_s for s in w[:4]] + [w[4].start_s - w[0].start_s])
    return out


def fit_durations(recs: Sequence[circor.CircorRecording]) -> sg.DurationModel:
    """Each state's duration as a linear function of the cycle length, with its residual spread. The
    systole and diastole spreads grow with the cycle: the decoder's cycle length is an estimate and
    the rate drifts within a recording."""
    rows = np.array([c for r in recs for c in annotated_cycles(r.spans)])
    cyc = rows[:, 4]
    design = np.stack([np.ones_like(cyc), cyc], axis=1)
    a, b, c, e = [], [], [], []
    for j in range(4):
        coef, *_ = np.linalg.lstsq(design, rows[:, j], rcond=None)
        res = rows[:, j] - design @ coef
        a.append(float(coef[0]))
        b.append(float(coef[1]))
        c.append(float(res.std()))
        e.append(0.06 if j in (1, 3) else 0.0)
    return sg.DurationModel(
        (a[0], a[1], a[2], a[3]), (b[0], b[1], b[2], b[3]), (c[0], c[1], c[2], c[3]), (e[0], e[1], e[2], e[3])
    )


def train_model(
    items: Sequence[Prepared], hidden: tuple[int, ...], epochs: int, step: int, seed: int
) -> sg.SegmenterModel:
    from sklearn.neural_network import MLPClassifier

    x, y = training_frames(items, step)
    mean = x.mean(axis=0).astype(np.float32)
    std = (x.std(axis=0) + 1e-3).astype(np.float32)
    clf = MLPClassifier(
        hidden_layer_sizes=hidden,
        alpha=1e-4,
        batch_size=512,
        learning_rate_init=1e-3,
        max_iter=epochs,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=5,
        random_state=seed,
    )
    log.info("training on %d frames x %d inputs", *x.shape)
    clf.fit((x - mean) / std, y)
    layers = tuple(
        (w.astype(np.float32), b.astype(np.float32)) for w, b in zip(clf.coefs_, clf.intercepts_, strict=True)
    )
    priors = np.bincount(y, minlength=4) / len(y)
    durations = fit_durations([it.rec for it in items])
    return sg.SegmenterModel(layers, mean, std, priors.astype(np.float64), durations, {})


# -- scores --------------------------------------------------------------------------------------------


def _inside_annotated(times: Sequence[float], spans: Sequence[circor.Span]) -> list[float]:
    ann = [(s.start_s, s.end_s) for s in spans if s.state != circor.UNANNOTATED]
    return [t for t in times if any(a <= t < b for a, b in ann)]


def match(detected: Sequence[float], reference: Sequence[float], tol: float = TOLERANCE_S) -> int:
    """True positives: one-to-one matches within ``tol``, nearest first."""
    pairs = sorted(
        (abs(d - r), i, k) for i, d in enumerate(detected) for k, r in enumerate(reference) if abs(d - r) <= tol
    )
    used_d: set[int] = set()
    used_r: set[int] = set()
    for _, i, k in pairs:
        if i not in used_d and k not in used_r:
            used_d.add(i)
            used_r.add(k)
    return len(used_d)


def annotated_bpm(spans: Sequence[circor.Span]) -> float | None:
    cycles = annotated_cycles(spans)
    if len(cycles) < 2:
        return None
    return 60.0 / float(np.median([c[4] for c in cycles]))


def _rate_figures(pairs: Sequence[tuple[float, float | None]]) -> dict[str, float]:
    ref = np.array([a for a, _ in pairs])
    est = np.array([e if e is not None else np.nan for _, e in pairs])
    err = np.abs(est - ref)
    ok = np.isfinite(err)
    within = np.where(ok, err <= 0.1 * ref, False)
    return {
        "recordings": len(ref),
        "no_estimate": int((~ok).sum()),
        "median_abs_error_bpm": round(float(np.nanmedian(err)), 2) if ok.any() else float("nan"),
        "within_10pct": round(float(np.mean(within)), 4),
        "within_10pct_over_100bpm": round(float(np.mean(within[ref >= 100])) if (ref >= 100).any() else 1.0, 4),
        "octave_errors": int(np.sum(ok & ((est > 1.7 * ref) | (est < 0.6 * ref)))),
    }


@dataclass
class Scores:
    tp: dict[str, int] = field(default_factory=lambda: {"S1": 0, "S2": 0})
    n_det: dict[str, int] = field(default_factory=lambda: {"S1": 0, "S2": 0})
    n_ref: dict[str, int] = field(default_factory=lambda: {"S1": 0, "S2": 0})
    hr_pairs: list[tuple[float, float | None]] = field(default_factory=list)  # (annotated, estimated)
    hr_pairs_span: list[tuple[float, float | None]] = field(default_factory=list)  # estimated in the annotated span
    per_recording_f1: list[float] = field(default_factory=list)

    def f1(self, which: str | None = None) -> float:
        keys = [which] if which else ["S1", "S2"]
        tp = sum(self.tp[k] for k in keys)
        det = sum(self.n_det[k] for k in keys)
        ref = sum(self.n_ref[k] for k in keys)
        return 2 * tp / (det + ref) if det + ref else 0.0

    def heart_rate(self) -> dict[str, Any]:
        """The rate against the annotated cycles: the device's reading of the whole recording (the
        figures at the top level), and ``annotated_span``, the rate of the decoded S1s inside the
        annotated spans only. The annotations often cover a few seconds of a 20-30 s recording, and an
        infant's rate moves by more than 10 % in that time: the second compares like with like."""
        if not self.hr_pairs:
            return {}
        return {**_rate_figures(self.hr_pairs), "annotated_span": _rate_figures(self.hr_pairs_span)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "f1": round(self.f1(), 4),
            "f1_s1": round(self.f1("S1"), 4),
            "f1_s2": round(self.f1("S2"), 4),
            "sounds": {k: {"tp": self.tp[k], "detected": self.n_det[k], "annotated": self.n_ref[k]} for k in self.tp},
            "recording_f1_p10": round(float(np.percentile(self.per_recording_f1, 10)), 4)
            if self.per_recording_f1
            else None,
            "heart_rate": self.heart_rate(),
        }


def score(model: sg.SegmenterModel, items: Sequence[Prepared]) -> Scores:
    out = Scores()
    for it in items:
        sounds = it.sounds_per_s
        seg = sg.segment_posteriors(
            model.posteriors(it.feats), model, None if sounds is None else functools.partial(float, sounds)
        )
        tp_rec = det_rec = ref_rec = 0
        for name, state, found in (("S1", 1, seg.s1), ("S2", 3, seg.s2)):
            ref = [(s.start_s + s.end_s) / 2 for s in it.rec.spans if s.state == state]
            det = _inside_annotated(found, it.rec.spans)
            tp = match(det, ref)
            out.tp[name] += tp
            out.n_det[name] += len(det)
            out.n_ref[name] += len(ref)
            tp_rec, det_rec, ref_rec = tp_rec + tp, det_rec + len(det), ref_rec + len(ref)
        if det_rec + ref_rec:
            out.per_recording_f1.append(2 * tp_rec / (det_rec + ref_rec))
        bpm = annotated_bpm(it.rec.spans)
        if bpm is not None:
            out.hr_pairs.append((bpm, seg.heart_rate_bpm))
            out.hr_pairs_span.append((bpm, sg.heart_rate_from_s1(_inside_annotated(seg.s1, it.rec.spans))))
    return out


# -- the command ---------------------------------------------------------------------------------------


def split(
    recs: Sequence[circor.CircorRecording], test_fraction: float, val_fraction: float, seed: int
) -> tuple[list[circor.CircorRecording], list[circor.CircorRecording], list[circor.CircorRecording]]:
    rest, test = circor.split_patients(recs, test_fraction, seed)
    train, val = circor.split_patients(rest, val_fraction / (1 - test_fraction), seed + 1)
    return train, val, test


def run(args: argparse.Namespace) -> int:
    folder = args.circor or ds.resolve_data_dir(None)
    recs = circor.load_circor2022(folder, args.patients)
    if args.limit:
        recs = recs[: args.limit]
    train, val, test = split(recs, args.test_fraction, args.val_fraction, args.seed)
    t0 = time.monotonic()
    cache = Path(args.cache) if args.cache else None
    prep = {r.record_id: prepare(r, cache) for r in recs}
    log.info("features of %d recordings in %.0f s", len(prep), time.monotonic() - t0)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    # trained on the training patients only: the validation ones stay unseen for the quality gate's rules
    if args.model:
        model = sg.SegmenterModel.load(Path(args.model))
    else:
        model = train_model([prep[r.record_id] for r in train], hidden, args.epochs, args.frame_step, args.seed)
    val_scores = score(model, [prep[r.record_id] for r in val]).as_dict()
    # the test patients are scored only for the final choice
    test_scores = score(model, [prep[r.record_id] for r in test]).as_dict() if args.final else None
    n_params = sum(w.size + b.size for w, b in model.layers)
    meta = {
        "name": sg.MODEL_NAME,
        "states": list(sg.STATES),
        "data": {
            "dataset": circor.CIRCOR,
            "patients_file": Path(args.patients).name if args.patients else circor.PATIENTS_FILE,
            "recordings": len(recs),
            "split": {
                "by": "patient split group (Additional ID links kept together), stratified by murmur label",
                "seed": args.seed,
                "train_patients": len({r.patient for r in train}),
                "val_patients": len({r.patient for r in val}),
                "test_patients": len({r.patient for r in test}),
                "trained_on": "train",
                # never trained on: tests on the shared slice use these patients only
                "unseen_patients": sorted({r.patient for r in val + test}),
            },
        },
        "classifier": {"hidden": list(hidden), "parameters": int(n_params), "frame_step": args.frame_step},
        "scores": {"tolerance_s": TOLERANCE_S, "validation": val_scores, "test": test_scores},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out, meta)
    print(json.dumps(meta["scores"], indent=2))
    print(f"wrote {out.with_suffix('.npz')} ({out.with_suffix('.npz').stat().st_size} bytes) and its .json")
    return 0
