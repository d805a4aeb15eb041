"""Research: percentiles of the gate measures per data set and label (reads gate_stats.py's csv)."""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

import numpy as np

with open(sys.argv[1]) as f:
    rows = list(csv.DictReader(f))
cols = sys.argv[2].split(",")
groups = defaultdict(list)
for r in rows:
    key = (r["dataset"], r["subset"] if r["dataset"] in ("physionet", "pascal") else "", r["label"])
    groups[key].append(r)
for key in sorted(groups):
    g = groups[key]
    parts = []
    for c in cols:
        v = np.array([float(r[c]) if r[c] != "" else np.nan for r in g])
        parts.append(f"{c} " + "/".join(f"{x:.2f}" for x in np.nanpercentile(v, [2, 5, 10, 50])))
    print(f"{'/'.join(key):32s} n={len(g):4d} " + "  ".join(parts))
