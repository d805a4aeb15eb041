"""Markdown tables from results.json (printed; pasted into REPORT.md).

Reads ``RESULTS`` if given, else ``<out>/results.json``, where the output folder is ``--out``, else
$SEGMENT_OUT, else ``artifacts/segmentation``. To print the tables of the committed results, run from the
repo root:

    cd /work/main && PYTHONPATH=/work/main:research/ablations/screening/session9/segmentation \
        python research/ablations/screening/session9/segmentation/tables.py \
        research/ablations/screening/session9/segmentation/results.json

(evaluate.py, which writes results.json, runs the same way.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from features import add_out_option, output_dir

S = ("A", "B", "C")
DBS = ["training-a", "training-b", "training-c", "training-d", "training-e", "training-f"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the REPORT.md tables from results.json.")
    parser.add_argument("results", nargs="?", default=None, help="results.json (default: <out>/results.json)")
    add_out_option(parser)
    args = parser.parse_args(argv)
    path = Path(args.results) if args.results else output_dir(args.out) / "results.json"
    r = json.loads(path.read_text())
    sh = [d[-1] for d in DBS]
    print("n features:", r["n_features"])

    print("\n### CV (seed 1), pooled out-of-fold\n")
    print("| set | MAcc all | AUC all | MAcc without e | AUC without e |")
    print("|---|---|---|---|---|")
    for s in S:
        c = r["cv"][s]["1"]
        cells = [f"{c[part][m]:.3f}" for part in ("all", "without_e") for m in ("macc", "auc")]
        print(f"| {s} | " + " | ".join(cells) + " |")

    print("\n### CV spread over split seeds 1, 2, 3 (mean ± sd)\n")
    print("| set | MAcc all | AUC all | MAcc without e | AUC without e |")
    print("|---|---|---|---|---|")
    for s in S:
        cells = []
        for part in ("all", "without_e"):
            for m in ("macc", "auc"):
                v = [r["cv"][s][k][part][m] for k in ("1", "2", "3")]
                cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}")
        print(f"| {s} | " + " | ".join(cells) + " |")

    print("\n### CV per-database AUC (MAcc) (seed 1)\n")
    print("| set | " + " | ".join(sh) + " |")
    print("|---" * 7 + "|")
    for s in S:
        p = r["cv"][s]["1"]["per_db"]
        print(f"| {s} | " + " | ".join(f"{p[d]['auc']:.3f} ({p[d]['macc']:.2f})" for d in DBS) + " |")

    for variant in ("all", "without training-e"):
        trained_on = "the other five" if variant == "all" else "the others except training-e"
        print(f"\n### LODO, trained on {trained_on}: MAcc / AUC\n")
        print("| set | " + " | ".join(sh) + " | mean MAcc | mean AUC |")
        print("|---" * 9 + "|")
        for s in S:
            per = r["lodo"][s]["lodo"][variant]
            cells = [f"{per[d]['macc']:.2f} / {per[d]['auc']:.2f}" for d in DBS]
            means = [f"{np.mean([per[d][m] for d in DBS]):.3f}" for m in ("macc", "auc")]
            print(f"| {s} | " + " | ".join(cells + means) + " |")

    print("\n### pairs (AUC, trained on one db)\n")
    for s in S:
        print(s)
        for src, row in r["lodo"][s]["pairs"].items():
            print("  ", src[-1], " ".join(f"{row[d]:.2f}" for d in DBS))

    print("\n### bootstrap AUC differences (seed-1 CV OOF, 1000 block resamples): diff [2.5%, 97.5%]\n")
    for k, v in r["boot"].items():
        print(k, {p: f"{a:+.3f} [{b:+.3f}, {c:+.3f}]" for p, (a, b, c) in v.items()})

    print("\n### univariate B features: AUC per database (top by mean |AUC-0.5| over a, b, e, f, same sign)\n")
    uni = r["univariate_b"]
    rows = []
    for n, row in uni.items():
        v = np.array([row[d] for d in ("training-a", "training-b", "training-e", "training-f")]) - 0.5
        same = np.all(v > 0) or np.all(v < 0)
        rows.append((np.mean(np.abs(v)) if same else 0, n, row))
    rows.sort(reverse=True)
    print("| feature | " + " | ".join(sh) + " |")
    print("|---" * 7 + "|")
    for _, n, row in rows[:15]:
        print(f"| {n} | " + " | ".join(f"{row[d]:.2f}" for d in DBS) + " |")
    print("seconds", r["seconds"])


if __name__ == "__main__":
    main()
