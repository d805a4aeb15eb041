"""Two `steth train` runs' averaged pairs, averaged again, against each run alone (SHIP_RULE.md here).

    python -m research.seed_ensemble.evaluate --runs /work/runs/s17_seed2 /work/runs/s17_seed3 [--json OUT]

Every score is out-of-fold for its run; the nesting (fold k at the threshold `steth ensemble` would pool
over the other folds) follows one run's partition at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter.ensemble import nested_cv, oof_pair
from converter.tasks import task_of_run

SCOPES = ("physionet2016/all", "physionet2016/not_e", "circor2022/patient")


def pair(run: Path) -> dict[str, Any]:
    o = oof_pair(run)
    return {"keys": o["records"], "p": o["average"], "y": o["y"], "db": o["database"], "fold": o["fold"]}


def nested(
    task: Any, recs: list[ds.Recording], ref: dict[str, Any], p: np.ndarray, folds: np.ndarray
) -> dict[str, Any]:
    """`steth ensemble`'s nested CV (databases objective) of scores ``p`` on the partition ``folds``."""
    m = nested_cv(task, recs, ref["y"], p, ref["db"], folds)["means"]
    return {s: {"macc": m[s]["macc"], "auc": m[s]["auc"]} for s in SCOPES}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs=2, required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    task = task_of_run(json.loads((args.runs[0] / "report.json").read_text()))
    by_key = {r.key: r for r in task.loader(ds.resolve_data_dir(args.data_dir))}
    a, b = (pair(r) for r in args.runs)
    if a["keys"] != b["keys"]:
        raise SystemExit("the two runs hold different development recordings")
    recs = [by_key[k] for k in a["keys"]]
    both = (a["p"] + b["p"]) / 2
    res = {
        "fold_agreement": float(np.mean(a["fold"] == b["fold"])),
        "run 1 pair, run 1 folds": nested(task, recs, a, a["p"], a["fold"]),
        "run 2 pair, run 2 folds": nested(task, recs, a, b["p"], b["fold"]),
        "run 2 pair, run 1 folds": nested(task, recs, a, b["p"], a["fold"]),
        "both, run 1 folds": nested(task, recs, a, both, a["fold"]),
        "both, run 2 folds": nested(task, recs, a, both, b["fold"]),
    }
    for k, v in res.items():
        print(k, v if isinstance(v, float) else {s: round(x["macc"], 3) for s, x in v.items()})
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
