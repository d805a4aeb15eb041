"""`steth calibrate DIR`: a decision threshold set on a kit's own labelled recordings.

On a stethoscope the model never heard, its ranking of recordings carries over better than its
threshold: the new device's scores sit elsewhere (docs/experiments.md, "Would a threshold set on the new
stethoscope's own recordings help?"). A field team that has a few dozen recordings from its own kit with
a clinician's label (normal / abnormal) can set the threshold there.

A threshold chosen on 40 recordings is itself noisy: in simulation it lowered MAcc on the databases where
the model's threshold was already right. So the choice is checked before it is kept: repeated stratified
cross-validation over the labelled recordings (the threshold chosen on the other folds, scored on the
fold left out) must beat the model's own threshold on the same recordings by ``MARGIN`` and reach
``FLOOR``. Otherwise nothing is written and the model keeps its threshold. The written file names the
model (sha256) it was set for; the device refuses it for any other model (device/core/local_threshold.py).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from converter.metrics import best_threshold, binary_scores
from device.core.errors import DatasetError

MIN_PER_CLASS = 8  # fewer labelled recordings of a class and the chosen threshold is mostly noise
# MAcc the local threshold must gain in cross-validation to be kept. 0.05 rather than 0.02: on the
# left-out databases (docs/experiments.md) it kept nearly all of the gain (training-f) and lost less where
# the model's threshold was already right (training-a: -0.005 at most, against -0.009).
MARGIN = 0.05
# ... and the MAcc it must reach there: on scores that do not rank the kit's recordings at all, the model's
# threshold scores below 0.5 on a fifth of labelled sets by chance, and a "gain" over it would be noise.
FLOOR = 0.55
FOLDS = 5
REPEATS = 20


@dataclass(frozen=True)
class LocalChoice:
    """What `choose_local` measured on the labelled recordings, and whether the threshold is kept."""

    threshold: float  # chosen on all labelled recordings
    model_threshold: float
    macc_model: float  # the labelled recordings at the model's own threshold
    macc_local_cv: float  # mean over repeats: each recording scored at the threshold set on the other folds
    n_normal: int
    n_abnormal: int
    adopted: bool
    reason: str


def _stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    fold = np.empty(len(y), dtype=int)
    for cls in (False, True):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % folds
    return fold


def choose_local(
    y: np.ndarray,
    scores: np.ndarray,
    model_threshold: float,
    *,
    margin: float = MARGIN,
    folds: int = FOLDS,
    repeats: int = REPEATS,
    seed: int = 0,
) -> LocalChoice:
    """The MAcc-best threshold on ``scores`` (raw model scores, abnormal = 1), kept only if
    cross-validation says it beats ``model_threshold`` by ``margin`` on these recordings."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_abn, n_norm = int(y.sum()), int((~y).sum())
    macc_model = binary_scores(y, scores, model_threshold)["macc"]
    if min(n_abn, n_norm) < MIN_PER_CLASS:
        return LocalChoice(
            model_threshold,
            model_threshold,
            macc_model,
            float("nan"),
            n_norm,
            n_abn,
            False,
            f"too few labelled recordings: {n_norm} normal and {n_abn} abnormal; label at least "
            f"{MIN_PER_CLASS} of each",
        )
    rng = np.random.default_rng(seed)
    k = min(folds, n_abn, n_norm)
    right = np.zeros(len(y))  # per recording: how often the threshold set on the other folds got it right
    for _ in range(repeats):
        fold = _stratified_folds(y, k, rng)
        called = np.empty(len(y), dtype=bool)
        for f in range(k):
            here = fold == f
            called[here] = scores[here] >= best_threshold(y[~here], scores[~here])
        right += called == y
    right /= repeats
    macc_cv = float((right[y].mean() + right[~y].mean()) / 2)
    threshold = best_threshold(y, scores)
    adopted = macc_cv - macc_model >= margin and macc_cv >= FLOOR
    reason = (
        f"in cross-validation the local threshold scores MAcc {macc_cv:.3f} against {macc_model:.3f} at the "
        f"model's own ({'+' if macc_cv >= macc_model else ''}{macc_cv - macc_model:.3f}; kept from +{margin:.2f}"
        f" and at least {FLOOR:.2f})"
    )
    return LocalChoice(threshold, model_threshold, macc_model, macc_cv, n_norm, n_abn, adopted, reason)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate",
        help="set a model's decision threshold on this kit's own labelled recordings (kept only if it helps)",
        description="Scores labelled recordings from this kit and writes a decision threshold for the device, "
        "only where repeated cross-validation on them shows it beating the model's own. Exit status 0: "
        "written; 1: nothing written (not enough evidence of a gain); 2: an error.",
    )
    p.add_argument("data_dir", type=Path, help="labelled recordings: a folder with REFERENCE.csv (PhysioNet layout)")
    p.add_argument("--model", default=None, help="shipped model name or .tflite path (default: screening)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder to write MODEL.threshold.json in; the device reads it when models.threshold_dir names it",
    )
    p.add_argument(
        "--margin", type=float, default=MARGIN, help=f"MAcc the local threshold must gain (default {MARGIN})"
    )
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from converter.evaluate import analyse_folder
    from device.core.inference import load_model
    from device.core.local_threshold import LocalThreshold, path_for

    clf = load_model(args.model)
    if clf.positive is None:
        raise DatasetError(
            f"model {clf.info.name} has no single positive label: only a two-class model has a threshold",
            "calibrate the screening model",
        )
    results, errors = analyse_folder(clf, args.data_dir)
    # poor signal: the device answers 'unsure' for these whatever the threshold
    usable = [(rec, a) for rec, a in results if a.score is not None and a.quality.ok]
    y = [rec.label == clf.positive for rec, _ in usable]
    s = [a.score for _, a in usable]
    choice = choose_local(np.array(y, dtype=bool), np.array(s), clf.threshold, margin=args.margin)
    written = None
    if choice.adopted:
        local = LocalThreshold(
            model_name=clf.info.name,
            model_version=clf.info.version,
            model_sha256=clf.info.sha256,
            threshold=round(choice.threshold, 6),
            model_threshold=clf.threshold,
            labelled={"normal": choice.n_normal, "abnormal": choice.n_abnormal},
            macc_model=round(choice.macc_model, 4),
            macc_local_cv=round(choice.macc_local_cv, 4),
            set_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        written = local.write(args.out)
    earlier = path_for(args.out, clf.info.name)
    stays = earlier if not written and earlier.exists() else None
    if args.json:
        measured = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(choice).items()}
        print(json.dumps({**measured, "errors": errors, "written": str(written) if written else None}))
    else:
        print(
            f"model {clf.info.name} {clf.info.version}: {choice.n_normal} normal and {choice.n_abnormal} abnormal "
            f"labelled recordings with good signal{f', {errors} unreadable' if errors else ''}"
        )
        print(f"  {choice.reason}")
        if written:
            print(f"  threshold {choice.threshold:.4f} (model's own {clf.threshold:.4f}) written to {written}")
            print("  The device uses it once models.threshold_dir names that folder; every result then says so.")
        elif stays:
            print(f"  nothing written; the threshold set earlier in {stays} stays in force: remove it to return")
            print(f"  to the model's own threshold {clf.threshold:.4f}")
        else:
            print(f"  nothing written: the device keeps the model's own threshold {clf.threshold:.4f}")
    return 0 if written else 1
