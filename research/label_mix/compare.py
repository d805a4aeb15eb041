"""Balanced against natural label mix: each run's averaged pair (`steth ensemble RUN` first), its
leave-one-database-out table, and AUC within each database (SHIP_RULE.md here).

    python -m research.label_mix.compare --pair /work/runs/s17_lodo_base /work/runs/s17_natural \
        [--pair BASE NATURAL ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter.ensemble import nested_cv, oof_pair
from converter.metrics import roc_auc
from converter.tasks import task_of_run

SCOPES = ("physionet2016/all", "physionet2016/not_e", "circor2022/patient", "pascal2011/all")


def cv_of(run: Path) -> dict[str, dict[str, float]]:
    """The average's nested CV means (`steth ensemble`'s report)."""
    means = json.loads((run / "ensemble" / "report.json").read_text())["ensemble"]["cv_nested_pooled"]["average"][
        "means"
    ]
    return {s: {"macc": means[s]["macc"], "auc": means[s]["auc"]} for s in SCOPES}


def headline_cv_of(run: Path, data_dir: Path) -> dict[str, dict[str, float]]:
    """The average's nested CV with the threshold for the issue's own figures (thresholds.OBJECTIVES
    "headline": PhysioNet pooled MAcc and CirCor per patient), which a score carrying prevalence needs:
    MAcc averaged over databases ("databases", the shipped objective) cannot see the prevalence's gain."""
    report = json.loads((run / "report.json").read_text())
    task = task_of_run(report)
    o = oof_pair(run)
    by_key = {r.key: r for r in task.loader(data_dir)}
    recs = [by_key[k] for k in o["records"]]
    means = nested_cv(task, recs, o["y"], o["average"], o["database"], o["fold"], "headline")["means"]
    return {s: {"macc": means[s]["macc"], "auc": means[s]["auc"]} for s in SCOPES}


def lodo_of(run: Path) -> dict[str, dict[str, float]]:
    """The candidate trained without each database, on that database (CirCor: per patient)."""
    out = {}
    for e in json.loads((run / "report.json").read_text())["lodo"]:
        sc = e["scores"]
        m = sc.get("sources", {}).get("circor2022", {}).get("patient") or sc["all"]
        out[e["held_out_db"]] = {"macc": m["macc"], "auc": m["auc"], "n": sc["all"]["n"]}
    return out


def within_db_auc(run: Path) -> dict[str, Any]:
    """The average's out-of-fold AUC inside each database, PhysioNet's pooled AUC, and each database's
    mean score: a learnt prevalence raises the pooled figure and spreads the means, not the within ones."""
    o = oof_pair(run)
    pos = list(json.loads((run / "oof.json").read_text())["labels"]).index("abnormal")
    s, y, db = o["average"][:, pos], (o["y"] == pos).astype(int), o["database"]
    phys = np.array([k.startswith("physionet2016/") for k in o["records"]])
    return {
        "physionet_pooled_auc": roc_auc(y[phys], s[phys]),
        "auc": {str(d): roc_auc(y[db == d], s[db == d]) for d in sorted(set(db)) if len(set(y[db == d])) > 1},
        "mean_score": {str(d): float(s[db == d].mean()) for d in sorted(set(db))},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", type=Path, nargs=2, action="append", required=True, metavar=("BASE", "NATURAL"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--data-dir")
    args = ap.parse_args(argv)
    data_dir = ds.resolve_data_dir(args.data_dir)
    result = []
    for base, natural in args.pair:
        row: dict[str, Any] = {}
        for name, run in (("balanced", base), ("natural", natural)):
            lodo = lodo_of(run)
            row[name] = {
                "run": str(run),
                "cv": cv_of(run),
                "cv_headline": headline_cv_of(run, data_dir),
                "lodo": lodo,
                "within": within_db_auc(run),
                "lodo_mean_macc": float(np.mean([v["macc"] for v in lodo.values()])),
            }
        result.append(row)
        print(f"{base.name} vs {natural.name}")
        for s in SCOPES:
            b, n = row["balanced"]["cv"][s]["macc"], row["natural"]["cv"][s]["macc"]
            print(f"  CV {s:22s} {b:.3f} -> {n:.3f} ({n - b:+.3f})")
        for s in SCOPES:
            b, n = row["balanced"]["cv_headline"][s]["macc"], row["natural"]["cv_headline"][s]["macc"]
            print(f"  CV headline threshold {s:22s} {b:.3f} -> {n:.3f} ({n - b:+.3f})")
        for d in row["balanced"]["lodo"]:
            b, n = row["balanced"]["lodo"][d]["macc"], row["natural"]["lodo"][d]["macc"]
            print(f"  LODO {d:14s} n={row['balanced']['lodo'][d]['n']:5d} {b:.3f} -> {n:.3f} ({n - b:+.3f})")
        print(f"  LODO mean {row['balanced']['lodo_mean_macc']:.3f} -> {row['natural']['lodo_mean_macc']:.3f}")
        wb, wn = row["balanced"]["within"], row["natural"]["within"]
        print(
            f"  PhysioNet pooled AUC {wb['physionet_pooled_auc']:.3f} -> {wn['physionet_pooled_auc']:.3f}; within: "
            + ", ".join(f"{d} {wb['auc'][d]:.3f}->{wn['auc'][d]:.3f}" for d in wb["auc"])
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
