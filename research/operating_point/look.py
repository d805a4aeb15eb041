"""Score an ensemble run's float average on its held-out test split at the validated and at the carried-over
threshold (`steth ensemble --transfer-threshold`), per source, with Se/Sp; and each CV fold pair beside it.

    python -m research.operating_point.look RUN_DIR [--json OUT]

RUN_DIR is a `steth train --save-folds` run on which `steth ensemble RUN_DIR --transfer-threshold` wrote
RUN_DIR/ensemble. This READS THE TEST SPLIT'S LABELS: the screening split had been scored 10 times before
session 16, so what it prints is development data and decides nothing (docs/screening_all_sources/ensemble/
SHIP_RULE_OPERATING_POINT.md says what did decide).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter import ensemble, models
from converter.tasks import task_of_run
from converter.train import COMPARATOR, fold_model_path, score
from converter.trainer import record_probabilities


def look(run_dir: Path, data_dir: Path) -> dict[str, Any]:
    ens_dir = run_dir / "ensemble"
    report = json.loads((ens_dir / "report.json").read_text())
    task = task_of_run(report)
    tr = report["threshold_choice"]["transfer"]
    by_key = {r.key: r for r in task.loader(data_dir)}
    fs, kept, recs = ensemble._test_features(task, run_dir, report, by_key)
    k, n = models.keras(), len(task.labels)
    y = np.array([task.label_index(r) for r in recs])
    strata = np.array([r.subset for r in recs])
    avg = k.models.load_model(ens_dir / "model.h5", compile=False)
    final = record_probabilities(avg, fs, kept, n)
    out: dict[str, Any] = {"n": len(recs), "transfer": tr, "final_pair": {}}
    for name, thr in (("validated", tr["validated_threshold"]), ("carried_over", tr["threshold"])):
        out["final_pair"][name] = {"threshold": thr, **score(task, y, final, strata, thr, recs)}
    pairs = []
    for f in range(int(report["config"]["folds"])):
        ms = [fold_model_path(run_dir, a, f) for a in (report["chosen_arch"], COMPARATOR)]
        p = np.mean([record_probabilities(k.models.load_model(m, compile=False), fs, kept, n) for m in ms], axis=0)
        pairs.append(p)
        out[f"fold{f}_pair"] = score(task, y, p, strata, tr["validated_threshold"], recs)
    out["fold_bag"] = score(task, y, np.mean(pairs, axis=0), strata, tr["validated_threshold"], recs)
    return out


def _row(name: str, s: dict[str, Any]) -> str:
    cells = []
    for src, scope in (("physionet2016", "all"), ("physionet2016", "not_e"), ("circor2022", "patient")):
        m = s["sources"][src][scope]
        cells.append(f"{m['macc']:.3f} ({m['sensitivity']:.2f}/{m['specificity']:.2f}) AUC {m['auc']:.3f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data-dir")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    out = look(a.run_dir, ds.resolve_data_dir(a.data_dir))
    print("| model, threshold | PhysioNet all MAcc (Se/Sp) | outside e | CirCor per patient |")
    print("|---|---|---|---|")
    for name, s in out["final_pair"].items():
        print(_row(f"final pair at {s['threshold']:.3f} ({name})", s))
    for key in sorted(k for k in out if k.startswith("fold")):
        print(_row(f"{key} at {out['transfer']['validated_threshold']:.3f}", out[key]))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
