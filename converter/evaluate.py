"""`steth evaluate DIR`: the shipped model scored on a labelled folder (PhysioNet or PASCAL layout)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter.metrics import binary_scores, confusion, pascal_scores
from converter.tasks import Task, task_of_model
from device.core.errors import AudioError, DatasetError


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="score a shipped model on a labelled folder (PhysioNet or PASCAL layout)")
    p.add_argument("data_dir", type=Path, help="folder with training-*/REFERENCE.csv, or set_a/ set_b/")
    p.add_argument("--model", default=None, help="shipped model name or .tflite path (default: screening)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument(
        "--threshold-dir",
        type=Path,
        help="score at the threshold `steth calibrate` wrote in this folder (check it on recordings it was not set on)",
    )
    p.set_defaults(func=run)


def recordings_for(root: Path, task: Task) -> list[ds.Recording]:
    """The labelled recordings under ``root`` the task has a label for, carrying that label (its
    definition maps each data set's labels: e.g. screening takes PASCAL's murmurs as abnormal)."""
    found: list[ds.Recording] = []
    if ds.physionet_folders(root):
        found += ds.load_physionet2016(root)
    elif (root / "REFERENCE.csv").exists():  # a single database folder, e.g. training-a/ or device/samples/
        found += (
            ds.load_physionet2016(root.parent, subsets=[root.name])
            if root.name.startswith("training-")
            else _flat_reference(root)
        )
    with contextlib.suppress(DatasetError):
        found += [r for r in ds.load_pascal2011(root) if r.label]
    found = task.relabel(found)
    if not found:
        raise DatasetError(
            f"no labelled recordings of task {task.name}'s labels under {root}",
            "expected training-*/REFERENCE.csv (PhysioNet) or set_a/, set_b/ (PASCAL)",
        )
    return found


def _flat_reference(folder: Path) -> list[ds.Recording]:
    labels, files = ds.read_reference(folder), ds.audio_files(folder)
    return [
        ds.Recording(ds.PHYSIONET, folder.name, s, files[s], labels[s], "", s) for s in sorted(labels) if s in files
    ]


def analyse_folder(clf: Any, root: Path) -> tuple[list[tuple[ds.Recording, Any]], int]:
    """(recording, Analysis) for each labelled recording under ``root``, and how many could not be read
    (each named on stderr; the others go on)."""
    results: list[tuple[ds.Recording, Any]] = []
    errors = 0
    for r in recordings_for(root, task_of_model(clf.meta)):
        try:
            results.append((r, clf.analyse_file(r.path)))
        except AudioError as exc:
            errors += 1
            print(f"steth: {r.path}: {exc}", file=sys.stderr)
    return results, errors


def run(args: argparse.Namespace) -> int:
    from device.core.inference import load_model

    clf = load_model(args.model, threshold_dir=args.threshold_dir)
    results, errors = analyse_folder(clf, args.data_dir)
    report: dict[str, Any] = {
        "model": clf.info.as_dict(),
        "threshold": clf.local.decision() if clf.local else {"source": "model", "threshold": clf.threshold},
        "n": len(results),
        "errors": errors,
        "groups": {},
    }
    groups = [*sorted({r.subset for r, _ in results}), "all"]
    for g in groups:
        sel = [(r, a) for r, a in results if g in ("all", r.subset)]
        if clf.positive is not None:  # a binary model: thresholded scores
            y = np.array([r.label == clf.positive for r, _ in sel])
            s = np.array([a.probabilities[clf.positive] for _, a in sel])
            scores = binary_scores(y, s, 0.5)  # probabilities are calibrated: 0.5 is the model's threshold
            scores["unsure"] = int(sum(a.label == "unsure" for _, a in sel))
        else:
            labels = list(clf.info.labels)
            cm = confusion(
                [r.label or "" for r, _ in sel],
                [labels[int(np.argmax([a.probabilities[k] for k in labels]))] for _, a in sel],
                labels,
            )
            scores = {**pascal_scores(cm, labels), "confusion": cm.tolist()}
        report["groups"][g] = scores
    if args.json:
        print(json.dumps(report, default=float))
        return 0
    print(
        f"model {clf.info.name} {clf.info.version} ({clf.info.sha256[:12]}) on {len(results)} recordings"
        f"{f', {errors} unreadable' if errors else ''}"
        + (f", at the threshold set locally in {args.threshold_dir}" if clf.local else "")
    )
    for g, s in report["groups"].items():
        if clf.positive is not None:
            print(
                f"  {g:<12} n={s['n']:<5} Se {s['sensitivity']:.3f}  Sp {s['specificity']:.3f}  "
                f"MAcc {s['macc']:.3f}  Acc {s['accuracy']:.3f}  AUC {s['auc']:.3f}  unsure {s['unsure']}"
            )
        else:
            print(
                f"  {g:<12} accuracy {s['accuracy']:.3f}  "
                + "  ".join(
                    f"{c}: P {v['precision']:.2f} Y {v['youden']:.2f} F {v['f_score']:.2f}"
                    for c, v in s["per_class"].items()
                )
            )
    print("Unsure recordings count with their underlying probability in these scores.")
    return 0
