"""Does a known-source prior, told from the recording's own channel signature, lift PhysioNet screening
without hurting sources it cannot tell? (research/site_prior/SHIP_RULE.md, written before these figures.)

    python -m research.site_prior.evaluate --run /work/runs/s17_seed2 [--data-dir DIR] [--json OUT]

Reads the run's out-of-fold scores of the shipped average (oof.json, oof_comparator.json), computes every
development recording's signature (research.site_prior.prior.signature: mean and std over time of the MFCCs
before cepstral normalisation), and scores, nested by the run's folds, the average with and without the
prior, under the two threshold objectives of converter.thresholds. The test split is not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from converter.ensemble import oof_pair, threshold_of
from converter.tasks import task_of_run
from converter.train import cv_source_means, score
from research.site_prior import fit as sp

SCOPES = (f"{ds.PHYSIONET}/all", f"{ds.PHYSIONET}/not_e", f"{cc.CIRCOR}/patient", f"{cc.CIRCOR}/all")
OBJECTIVES = ("databases", "headline")
LODO_MIN = 50  # held-out sources with fewer development recordings are reported, not judged


def _two_col(s: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - s, s])  # screening labels: ("normal", "abnormal")


def load(run: Path, data_dir: Path) -> dict[str, Any]:
    report = json.loads((run / "report.json").read_text())
    task = task_of_run(report)
    pair = oof_pair(run)
    by_key = {r.key: r for r in task.loader(data_dir)}
    pos = task.labels.index(task.positive or "")
    return {
        "task": task,
        "recs": [by_key[k] for k in pair["records"]],
        "y": pair["y"],
        "abn": (pair["y"] == pos).astype(int),
        "s": pair["average"][:, pos],
        "strata": pair["database"],
        "folds": pair["fold"],
    }


def _fit(sig: np.ndarray, src: np.ndarray, abn: np.ndarray, physionet: np.ndarray, train: np.ndarray) -> sp.SitePrior:
    ok = train & np.isfinite(sig).all(1)
    return sp.fit(sig[ok], src[ok], abn[ok], physionet[ok])


def nested(d: dict[str, Any], sig: np.ndarray, objective: str, prior: bool) -> dict[str, Any]:
    """Fold k at the threshold chosen on the other folds; with ``prior``, the source model and prevalences
    of fold k come from the other folds, and the other folds' own adjusted scores from source models that
    did not see them either (inner folds), so the threshold is chosen on honestly adjusted scores."""
    task, recs, y, s, strata, folds = d["task"], d["recs"], d["y"], d["s"], d["strata"], d["folds"]
    src, abn, phys = strata, d["abn"], np.array([r.dataset == ds.PHYSIONET for r in recs])
    entries, gated = [], []
    for k in sorted(set(folds.tolist())):
        here = folds == k
        adj = s.copy()
        if prior:
            outer = _fit(sig, src, abn, phys, ~here)
            adj[here], g = outer.adjust(s[here], sig[here])
            gated.append(float(np.mean(~g)))
            for j in sorted(set(folds.tolist()) - {k}):
                inner = _fit(sig, src, abn, phys, ~here & (folds != j))
                adj[folds == j], _ = inner.adjust(s[folds == j], sig[folds == j])
        other = [r for r, h in zip(recs, here, strict=True) if not h]
        thr = threshold_of(objective, task, other, y[~here], _two_col(adj[~here]), strata[~here])
        fold_recs = [r for r, h in zip(recs, here, strict=True) if h]
        entries.append(
            {
                "fold": k,
                "threshold": thr,
                "scores": score(task, y[here], _two_col(adj[here]), strata[here], thr, fold_recs),
            }
        )
    means = cv_source_means(entries)
    return {
        "means": {scope: means.get(scope, {}) for scope in SCOPES},
        "thresholds": [e["threshold"] for e in entries],
        "gated_share": float(np.mean(gated)) if gated else None,
    }


def lodo(d: dict[str, Any], sig: np.ndarray, objective: str) -> dict[str, Any]:
    """Each source in turn unknown to the source model (as a stethoscope the kit never heard): its own
    figures with the prior fitted on the rest, against without, each at the threshold its objective chooses
    on the other sources' out-of-fold scores (adjusted the same way)."""
    task, recs, y, s, strata = d["task"], d["recs"], d["y"], d["s"], d["strata"]
    abn, phys = d["abn"], np.array([r.dataset == ds.PHYSIONET for r in recs])
    out = {}
    for held in sorted(set(strata.tolist())):
        here = strata == held
        model = _fit(sig, strata, abn, phys, ~here)
        adj, g = model.adjust(s, sig)
        other = [r for r, h in zip(recs, here, strict=True) if not h]
        held_recs = [r for r, h in zip(recs, here, strict=True) if h]
        row: dict[str, Any] = {"n": int(here.sum()), "gated_share": float(np.mean(~g[here]))}
        # without CirCor the headline objective has no patients to weigh: the databases objective then
        how = objective if any(r.dataset == cc.CIRCOR for r in other) else "databases"
        row["objective"] = how
        for name, scores in (("without", s), ("with", adj)):
            thr = threshold_of(how, task, other, y[~here], _two_col(scores[~here]), strata[~here])
            res = score(task, y[here], _two_col(scores[here]), strata[here], thr, held_recs)
            circor = res.get("sources", {}).get(cc.CIRCOR, {}).get("patient")
            row[name] = {"macc": float((circor or res["all"])["macc"]), "threshold": thr}
        row["change"] = row["with"]["macc"] - row["without"]["macc"]
        row["pred_source"] = dict(
            zip(*np.unique(model.classes[model.proba(sig[here]).argmax(1)], return_counts=True), strict=True)
        )
        row["pred_source"] = {str(k): int(v) for k, v in row["pred_source"].items()}
        out[held] = row
    return out


def source_accuracy(d: dict[str, Any], sig: np.ndarray) -> dict[str, float]:
    """Out-of-fold accuracy of the source model per source (folds as the run's)."""
    strata, folds, abn = d["strata"], d["folds"], d["abn"]
    phys = np.array([r.dataset == ds.PHYSIONET for r in d["recs"]])
    pred = np.empty(len(strata), dtype=object)
    for k in sorted(set(folds.tolist())):
        here = folds == k
        model = _fit(sig, strata, abn, phys, ~here)
        pred[here] = model.classes[model.proba(sig[here]).argmax(1)]
    return {str(db): float(np.mean(pred[strata == db] == db)) for db in sorted(set(strata.tolist()))}


def _cached_signatures(d: dict[str, Any], cache: Path | None) -> np.ndarray:
    keys = [r.key for r in d["recs"]]
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=False)
        have = dict(zip(z["keys"].tolist(), z["sig"], strict=True))
        if all(k in have for k in keys):
            return np.vstack([have[k] for k in keys])
    sig = sp.signatures([r.path for r in d["recs"]], d["task"].params)
    if cache is not None:
        np.savez(cache, keys=np.array(keys), sig=sig)
    return sig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cache", type=Path, help="an .npz of signatures by recording key, written if absent")
    args = ap.parse_args(argv)
    d = load(args.run, ds.resolve_data_dir(args.data_dir))
    sig = _cached_signatures(d, args.cache)
    result: dict[str, Any] = {"run": str(args.run), "n": len(d["recs"]), "source_accuracy": source_accuracy(d, sig)}
    print("source model, out-of-fold accuracy per source:", json.dumps(result["source_accuracy"], indent=1))
    for objective in OBJECTIVES:
        for prior in (False, True):
            name = f"{objective}/{'prior' if prior else 'plain'}"
            result[name] = nested(d, sig, objective, prior)
            m = result[name]["means"]
            print(
                f"{name:22s} "
                + "  ".join(f"{scope} {m[scope].get('macc', float('nan')):.3f}" for scope in SCOPES)
                + f"  gated {result[name]['gated_share']}"
            )
        result[f"{objective}/lodo"] = lodo(d, sig, objective)
        for held, row in result[f"{objective}/lodo"].items():
            print(
                f"  lodo {objective} {held:12s} n={row['n']:4d} without {row['without']['macc']:.3f} "
                f"with {row['with']['macc']:.3f} ({row['change']:+.3f}) gated {row['gated_share']:.2f} "
                f"as {row['pred_source']}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
