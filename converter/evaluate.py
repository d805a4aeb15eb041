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


def trained_on(meta: dict[str, Any], recordings: list[ds.Recording]) -> list[ds.Recording]:
    """The recordings among ``recordings`` that the model was trained on (its sidecar lists their ids)."""
    used = set(meta.get("training_recordings") or ())
    return [r for r in recordings if r.record_id in used]


def caveat(meta: dict[str, Any], recordings: list[ds.Recording]) -> str | None:
    """What a reader must know before trusting these scores, or None when nothing."""
    if "training_recordings" not in meta:
        return "CAVEAT: this model's description does not list its training recordings: these may overlap them."
    used = trained_on(meta, recordings)
    if not used:
        return None
    share = len(used) / max(len(recordings), 1)
    return (
        f"CAVEAT: {len(used)} of {len(recordings)} recordings scored here ({share:.0%}) were used to train this "
        "model: scores on them are optimistic and say little about new recordings. Score only recordings it "
        "never saw (the model card names its held-out split)."
    )


def recordings_for(root: Path, task: Task) -> list[ds.Recording]:
    """The labelled recordings under ``root`` the task has a label for, carrying that label (its
    definition maps each data set's labels: e.g. screening takes PASCAL's murmurs as abnormal)."""
    found: list[ds.Recording] = []
    if (root / "training_data.csv").exists() or (root / "circor2022" / "training_data.csv").exists():
        # CirCor: murmur present (at the sites where it is heard) / absent per recording, as the murmur
        # model was trained; Unknown patients and the other sites of Present ones are left out
        from converter.murmur import load_recordings

        recs, _, _ = load_recordings(root, None, None)
        return [r for r in recs if r.label in ("present", "absent")]
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
    recordings = recordings_for(root, task_of_model(clf.meta))
    if clf.positive is not None and not any(r.label in clf.info.labels for r in recordings):
        raise DatasetError(
            f"the recordings under {root} are labelled {sorted({str(r.label) for r in recordings})}, "
            f"not with this model's labels {list(clf.info.labels)}",
            "score each model on data labelled for its task (e.g. --model murmur on a CirCor folder)",
        )
    for r in recordings:
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
        "trained_on": len(trained_on(clf.meta, [r for r, _ in results])),
        "caveat": caveat(clf.meta, [r for r, _ in results]),
        "groups": {},
    }
    groups = [*sorted({r.subset for r, _ in results}), "all"]
    for g in groups:
        sel = [(r, a) for r, a in results if g in ("all", r.subset)]
        if clf.positive is not None:  # a binary model: scored on its positive label
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
        if report["caveat"]:
            print(report["caveat"], file=sys.stderr)
        return 0
    print(
        f"model {clf.info.name} {clf.info.version} ({clf.info.sha256[:12]}) on {len(results)} recordings"
        f"{f', {errors} unreadable' if errors else ''}"
        + (f", at the threshold set locally in {args.threshold_dir}" if clf.local else "")
    )
    if report["caveat"]:
        print(report["caveat"])
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
