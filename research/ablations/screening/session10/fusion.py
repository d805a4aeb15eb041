"""Session 10 experiment (not product): fuse the conv-LSTM's out-of-fold scores with per-cycle trees.

For each `steth ablate` result in ABLATION_DIR that carries ``cv_scores`` (every development
recording's out-of-fold conv-LSTM score and its CV fold), fit session 9's gradient-boosted trees on the
A+B features (features.npz from session9/segmentation/features.py) on the *same* folds, and fuse the two
scores with no fitted weight: the mean of their log-odds. A recording the segmentation refused keeps
the conv-LSTM score. Metrics as `steth ablate` computes them: AUC without training-e per fold (mean
over folds), and MAcc at the threshold pooled over the other folds' out-of-fold scores. The held-out
split is never read. Rules: RULES.md (R2), written before the first result.

    cd /work/main && PYTHONPATH=/work/main:research/ablations/screening/session9/segmentation \\
        .venv/bin/python research/ablations/screening/session10/fusion.py \\
        research/ablations/screening/session10/c2-cv-scores --features artifacts/segmentation/features.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from converter import database_transfer as dt
from converter import datasets as ds
from converter import thresholds
from converter.metrics import roc_auc


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def load_features(path: Path) -> tuple[list[ds.Recording], dict[str, int], np.ndarray]:
    """PhysioNet 2016's recordings, the feature row of each development recording that both feature
    sets accepted (by key), and the A+B feature matrix of features.npz."""
    recordings = ds.load_physionet2016(ds.resolve_data_dir(None))
    z = np.load(path)
    ok_all = z["ok_a"] & z["ok_b"]
    feat_row = {recordings[int(i)].key: j for j, i in enumerate(z["dev_index"]) if ok_all[j]}
    return recordings, feat_row, np.hstack([z["xa"], z["xb"]])


def aligned(keys: list[str], feat_row: dict[str, int], x_all: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features in the order of ``keys`` (zeros where the segmentation refused) and the mask of
    the recordings that have them."""
    ok = np.array([k in feat_row for k in keys])
    x = np.zeros((len(keys), x_all.shape[1]))
    x[ok] = x_all[[feat_row[k] for k in np.array(keys)[ok]]]
    return x, ok


def tree_oof(x: np.ndarray, y: np.ndarray, db: np.ndarray, folds: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Out-of-fold tree scores on the given folds (NaN where the segmentation refused the recording)."""
    out = np.full(len(y), np.nan)
    for k in sorted(set(folds.tolist())):
        train = ok & (folds != k)
        test = ok & (folds == k)
        out[test] = dt._fit(x[train], y[train], db[train]).predict_proba(x[test])[:, 1]
    return out


def metrics(y: np.ndarray, s: np.ndarray, db: np.ndarray, folds: np.ndarray) -> dict[str, float]:
    """Mean over folds: AUC without e and all, and MAcc at the threshold pooled over the other folds
    (steth ablate's own threshold check, which also scores a validation threshold: none here, so 0.5)."""
    ne = db != "training-e"
    ks = sorted(set(folds.tolist()))
    pooled = thresholds.transfer_check(y, s, db, folds, [0.5] * len(ks))["at_pooled"]
    return {
        "auc_not_e": float(np.mean([roc_auc(y[(folds == k) & ne], s[(folds == k) & ne]) for k in ks])),
        "auc_all": float(np.mean([roc_auc(y[folds == k], s[folds == k]) for k in ks])),
        "macc_not_e_pooled": pooled["not_e_macc"],
        "macc_all_pooled": pooled["all_macc"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ablation_dir", type=Path)
    p.add_argument("--features", type=Path, default=Path("artifacts/segmentation/features.npz"))
    p.add_argument("--out", type=Path, help="results JSON (default: ABLATION_DIR/../fusion.json)")
    args = p.parse_args(argv)
    _, feat_row, x_all = load_features(args.features)
    results: dict[str, dict] = {}
    tree_cache: dict[tuple, np.ndarray] = {}
    for path in sorted(args.ablation_dir.glob("da*.json")):
        res = json.loads(path.read_text())
        cv = res.get("cv_scores")
        if not cv:
            continue
        recs = cv["records"]
        y = np.array(cv["labels"], dtype=int)
        db = np.array(cv["databases"])
        folds = np.array(cv["folds"])
        nn = np.array(cv["scores"], dtype=float)
        x, ok = aligned(recs, feat_row, x_all)
        key = tuple(folds.tolist())
        if key not in tree_cache:  # the folds are the same for every training seed
            tree_cache[key] = tree_oof(x, y, db, folds, ok)
        tree = tree_cache[key]
        fused = nn.copy()
        fused[ok] = sigmoid((logit(nn[ok]) + logit(tree[ok])) / 2)
        tree_filled = np.where(ok, tree, nn)  # trees alone, conv-LSTM where segmentation refused
        row = {
            "seed": res["seed"],
            "n": len(y),
            "segmented": int(ok.sum()),
            "conv_lstm": metrics(y, nn, db, folds),
            "trees": metrics(y, tree_filled, db, folds),
            "fused": metrics(y, fused, db, folds),
            "ablation_cv_not_e_auc": res.get("cv_not_e_auc"),
            "ablation_cv_not_e_macc_pooled": res.get("cv_not_e_macc_pooled_threshold"),
        }
        results[path.name] = row
        print(
            f"seed {row['seed']}: "
            + "; ".join(
                f"{m} " + ", ".join(f"{k} {v:.3f}" for k, v in row[m].items()) for m in ("conv_lstm", "trees", "fused")
            ),
            flush=True,
        )
    if not results:
        print(f"no result with cv_scores in {args.ablation_dir}")
        return 1
    rows = list(results.values())
    mean = {
        m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]} for m in ("conv_lstm", "trees", "fused")
    }
    gain = {k: mean["fused"][k] - mean["conv_lstm"][k] for k in mean["fused"]}
    every_seed = {k: all(r["fused"][k] > r["conv_lstm"][k] for r in rows) for k in gain}
    summary = {
        "seeds": sorted(r["seed"] for r in rows),
        "mean": mean,
        "fused_minus_conv_lstm": gain,
        "fused_higher_on_every_seed": every_seed,
        "per_result": results,
    }
    out = args.out or args.ablation_dir.parent / "fusion.json"
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({"seeds": summary["seeds"], "mean": mean, "gain": gain, "every_seed": every_seed}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
