"""How should an exam's screening label combine its sites? Measured on CirCor development patients.

    OMP_NUM_THREADS=1 python -m research.exam_label_rule CIRCOR_DIR [--patients FILE] [--csv CACHE]

The exam rule of device/core/exam.py gives the exam *abnormal* as soon as one usable recording is (``any``).
PhysioNet 2016 has no sites, so that rule was never measured per patient. Here the shipped pipeline
(`steth classify --json`'s path: screening model, quality gate, murmur companion) answers every recording
of the CirCor development patients OUTSIDE the murmur model's test split (converter.circor.split_patients,
fraction 0.2, seed 23: those patients stay unseen), and each patient's usable recordings (quality ok, not
unsure) are combined by several rules. The shipped screening model never trained on CirCor, so every
patient here is unseen by it; the murmur model trained on these patients, so its figures here are
training figures and only shown for the pairing. Reference: the patient's murmur (Present = abnormal,
Absent = normal; Unknown left out) and, separately, CirCor's clinical outcome.
Prints Markdown tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from converter import circor as cc
from converter.metrics import binary_scores

RULES: dict[str, Callable[[list[float]], float]] = {
    # the exam's P(abnormal) from its usable recordings' (shifted, 0.5 = threshold) P(abnormal)
    "any (max)": max,
    "mean": lambda ps: float(np.mean(ps)),
    "median": lambda ps: float(statistics.median(ps)),
    "min": min,
}


def answer(root: Path, patients: Path | None, cache: Path | None) -> list[dict[str, str]]:
    if cache and cache.exists():
        with open(cache, newline="") as f:
            return list(csv.DictReader(f))
    from device.core.errors import AudioError
    from device.core.inference import load_model

    recs = cc.load_circor2022(root, patients)
    dev, _ = cc.split_patients(recs, 0.2, 23)
    clf = load_model()
    rows = []
    for r in dev:
        try:
            res = clf.analyse_file(r.path).to_json(str(r.path))
        except AudioError as exc:
            print(f"skipped {r.record_id}: {exc}", file=sys.stderr)
            continue
        m = res.get("murmur") or {}
        rows.append(
            {
                "record": r.record_id,
                "patient": r.patient,
                "murmur": r.murmur,
                "outcome": r.outcome,
                "label": res["label"],
                "ok": str(bool(res["quality"]["ok"])),
                "p_abnormal": f"{res['probabilities'].get('abnormal', float('nan')):.4f}",
                "p_murmur": "" if m.get("probability") is None else f"{m['probability']:.4f}",
            }
        )
    if cache:
        with open(cache, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return rows


def table(rows: list[dict[str, str]], reference: str) -> list[str]:
    by_patient: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_patient[r["patient"]].append(r)
    out = [
        f"| rule | patients | Se | Sp | MAcc | AUC | (reference: {reference}) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rule in RULES.items():
        y, s = [], []
        for recs in by_patient.values():
            usable = [float(r["p_abnormal"]) for r in recs if r["ok"] == "True" and r["label"] != "unsure"]
            truth = recs[0]["murmur"] if reference == "murmur" else recs[0]["outcome"]
            if not usable or truth in ("Unknown", ""):
                continue
            y.append(1 if truth in ("Present", "Abnormal") else 0)
            s.append(rule(usable))
        sc = binary_scores(np.array(y), np.array(s), 0.5)
        out.append(
            f"| {name} | {len(y)} | {sc['sensitivity']:.3f} | {sc['specificity']:.3f} | **{sc['macc']:.3f}** "
            f"| {sc['auc']:.3f} | |"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("circor", type=Path)
    ap.add_argument("--patients", type=Path)
    ap.add_argument("--csv", type=Path, help="cache of the per-recording answers (read when it exists)")
    args = ap.parse_args()
    rows = answer(args.circor, args.patients, args.csv)
    n_rec = len(rows)
    usable = sum(r["ok"] == "True" and r["label"] != "unsure" for r in rows)
    per_rec = binary_scores(
        np.array([1 if r["murmur"] == "Present" else 0 for r in rows if r["murmur"] != "Unknown"]),
        np.array([float(r["p_abnormal"]) for r in rows if r["murmur"] != "Unknown"]),
        0.5,
    )
    print(f"{n_rec} recordings ({usable} usable) of {len({r['patient'] for r in rows})} development patients")
    print(f"per recording (patient's murmur as reference): MAcc {per_rec['macc']:.3f}, AUC {per_rec['auc']:.3f}\n")
    for reference in ("murmur", "outcome"):
        print("\n".join(table(rows, reference)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
