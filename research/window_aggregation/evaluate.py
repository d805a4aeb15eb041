"""How a recording's window probabilities are combined: mean (shipped) against three simple alternatives,
on the out-of-fold window probabilities of a screening run's CV pairs (SHIP_RULE.md here).

    python -m research.window_aggregation.evaluate --run /work/runs/s17_seed2 [--json OUT]

Needs a run trained with `--save-folds` (RUN/folds: each fold's all-sources and without-CirCor model) and
the data folder it was trained on ($STETH_DATA_DIR); the feature cache makes the windows cheap.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from converter import featurestore, models
from converter.ensemble import nested_cv, oof_pair
from converter.tasks import task_of_run
from converter.train import COMPARATOR, fold_model_path
from device.core.features import FeatureParams

EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.asarray(np.log(p / (1 - p)))


def _upper_half(p: np.ndarray) -> float:
    s = np.sort(p)[::-1]
    return float(s[: max(1, len(s) // 2)].mean())


AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda p: float(p.mean()),
    "logit_mean": lambda p: float(1 / (1 + np.exp(-_logit(p).mean()))),
    "upper_half": _upper_half,
    "median": lambda p: float(np.median(p)),
}
SCOPES = ("physionet2016/all", "physionet2016/not_e", "circor2022/patient")


def window_probabilities(run: Path, data_dir: Path) -> dict[str, Any]:
    """Per development recording (in oof.json's order): its windows' P(abnormal) from its own fold's pair."""
    report = json.loads((run / "report.json").read_text())
    task = task_of_run(report)
    # the run's evaluation windows, as converter.train.load_data builds them (from the feature cache)
    recs = task.loader(data_dir)
    params = FeatureParams.from_dict(report["feature_params"])
    eval_set = featurestore.build(recs, params, name=task.name + "-eval")
    oof = oof_pair(run)
    index = {r.key: i for i, r in enumerate(recs)}
    rec_idx = np.array([index[k] for k in oof["records"]])
    folds = oof["fold"]
    pos = task.labels.index(task.positive or "")
    k = models.keras()
    arch = report.get("chosen_arch", "conv_lstm")
    windows: list[np.ndarray] = [np.empty(0)] * len(rec_idx)
    for f in sorted(set(folds.tolist())):
        pair = [k.models.load_model(fold_model_path(run, a, f), compile=False) for a in (arch, COMPARATOR)]
        here = np.flatnonzero(folds == f)
        wins = eval_set.windows_of(rec_idx[here])
        p = np.mean([m.predict(eval_set.features[wins], batch_size=512, verbose=0)[:, pos] for m in pair], 0)
        owners = eval_set.owner[wins]
        for j in here:
            windows[j] = p[owners == rec_idx[j]]
    return {"task": task, "recs": [recs[i] for i in rec_idx], "oof": oof, "windows": windows}


def evaluate(d: dict[str, Any]) -> dict[str, Any]:
    task, recs, oof, windows = d["task"], d["recs"], d["oof"], d["windows"]
    y, strata, folds = oof["y"], oof["database"], oof["fold"]
    has = np.array([len(w) > 0 for w in windows])
    out: dict[str, Any] = {"n": len(recs), "without_windows": int((~has).sum())}
    # the check that these are the run's own out-of-fold scores: mean of windows = oof's average
    avg = oof["average"][:, task.labels.index(task.positive or "")]
    mean_w = np.array([w.mean() if len(w) else 0.5 for w in windows])
    out["max_diff_from_oof"] = float(np.max(np.abs(mean_w - avg)))
    for name, agg in AGGREGATIONS.items():
        s = np.array([agg(w) if len(w) else 0.5 for w in windows])
        probs = np.column_stack([1 - s, s])
        means = nested_cv(task, recs, y, probs, strata, folds)["means"]
        out[name] = {scope: means.get(scope, {}) for scope in SCOPES}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from converter import datasets as ds

    d = window_probabilities(args.run, ds.resolve_data_dir(args.data_dir))
    res = evaluate(d)
    print(
        f"{args.run}: {res['n']} recordings, {res['without_windows']} without windows, "
        f"mean-of-windows vs oof.json max diff {res['max_diff_from_oof']:.2e}"
    )
    for name in AGGREGATIONS:
        print(
            f"  {name:11s} "
            + "  ".join(
                f"{s} {res[name][s].get('macc', float('nan')):.3f} (AUC {res[name][s].get('auc', float('nan')):.3f})"
                for s in SCOPES
            )
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
