"""Evaluation: the shipped murmur model out of its domain, on PhysioNet 2016 (adults, other stethoscopes).

    OMP_NUM_THREADS=1 .venv/bin/python -m tests.benchmarks.eval_murmur_ood [--split test|all] [--every N] [--csv FILE]

PhysioNet has no murmur labels: its normal recordings are the false-alarm check (a "present" there
is most likely wrong), its abnormal ones (valve disease, CAD, ...) only say whether P(present) rises
with disease. Each recording goes through the shipped pipeline as `steth classify --json` does
(load_model: screening model + murmur companion; the ``murmur`` field).
Murmur 0.1.0 trained on CirCor and PASCAL only and was scored on all 2,750 recordings (``--split all``);
0.2.0 also trains on PhysioNet's development normals, so only the PhysioNet test split
(converter.murmur.physionet_test_keys, which the murmur model never trains on) is out of its training data:
``--split test``, the default. Measured after training; nothing is chosen on it. Prints Markdown
tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return Path(os.environ.get("STETH_DATA_DIR", REPO.parent / "shared" / "data"))


def rows_table(rows: list[dict[str, str]]) -> list[str]:
    """Per database and label: n, share present (of all, and of the recordings the pipeline assessed),
    share unknown (unfit signal), median P(present); then AUC normal vs abnormal per database."""
    from converter.metrics import roc_auc

    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[(r["database"], r["label"])].append(r)
        groups[("all", r["label"])].append(r)
    dbs = [*sorted({d for d, _ in groups if d != "all"}), "all"]
    out = [
        "| database | reference | n | present | present of assessed | unknown | median P(present) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for db in dbs:
        for label in ("normal", "abnormal"):
            g = groups.get((db, label), [])
            if not g:
                continue
            present = sum(r["murmur"] == "present" for r in g)
            unknown = sum(r["murmur"] == "unknown" for r in g)
            assessed = len(g) - unknown
            probs = [float(r["p_present"]) for r in g if r["p_present"]]
            share = f"{present / assessed:.1%}" if assessed else "-"
            median = f"{np.median(probs):.2f}" if probs else "-"
            out.append(
                f"| {db} | {label} | {len(g)} | {present / len(g):.1%} | {share} | {unknown / len(g):.1%} | {median} |"
            )
    out += ["", "| database | AUC abnormal vs normal, P(present), every recording with a probability | n |"]
    out.append("| --- | --- | --- |")
    for db in dbs:
        scored = [r for label in ("normal", "abnormal") for r in groups.get((db, label), []) if r["p_present"]]
        y = np.array([r["label"] == "abnormal" for r in scored], dtype=int)
        if len(set(y)) < 2:
            continue
        auc = roc_auc(y, np.array([float(r["p_present"]) for r in scored]))
        out.append(f"| {db} | {auc:.3f} | {len(scored)} |")
    # what a clinician sees together: the screening answer beside the murmur answer
    pairs = Counter((r["screening"], r["murmur"]) for r in rows if r["label"] == "normal")
    out += ["", "| normal recordings: screening answer | murmur answer | n |", "| --- | --- | --- |"]
    out += [f"| {s} | {m} | {n} |" for (s, m), n in sorted(pairs.items())]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--split",
        choices=("test", "all"),
        default="test",
        help="the PhysioNet test split the shipped models never trained on (default), or every recording",
    )
    ap.add_argument("--every", type=int, default=1, help="every n-th recording")
    ap.add_argument("--csv", type=Path, help="also write one row per recording here")
    ap.add_argument("--from-csv", type=Path, help="print the tables of an earlier --csv instead of running")
    args = ap.parse_args()
    fields = ["record", "database", "label", "screening", "murmur", "p_present"]
    if args.from_csv:
        with open(args.from_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        from converter import datasets as ds
        from converter.murmur import physionet_test_keys
        from device.core.errors import AudioError
        from device.core.inference import load_model

        clf = load_model()
        rows = []
        recordings = ds.load_physionet2016(data_dir())
        if args.split == "test":
            keys = physionet_test_keys(recordings)
            recordings = [r for r in recordings if r.key in keys]
        for i, r in enumerate(recordings):
            if i % args.every:
                continue
            try:
                result = clf.analyse_file(r.path).to_json(str(r.path))
            except AudioError as exc:
                print(f"skipped {r.record_id}: {exc}", file=sys.stderr)
                continue
            m = result.get("murmur") or {}
            p = m.get("probability")
            rows.append(
                {
                    "record": r.record_id,
                    "database": r.subset,
                    "label": r.label,
                    "screening": result["label"],
                    "murmur": str(m.get("label", "missing")),
                    "p_present": "" if p is None else f"{p:.4f}",
                }
            )
        if args.csv:
            with open(args.csv, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
    print("\n".join(rows_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
