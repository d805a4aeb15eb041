"""Session 11 experiment (not product): fusion of the conv-LSTM with per-cycle trees, on transfer (LODO,
rule R3) and with a fusion weight fitted inside the training folds (CV, rule R4). Rules: RULES.md,
written before the first result.

For every `steth ablate` result in ABLATION_DIR that carries ``cv_scores`` and ``lodo_scores``:

- R3: for each left-out database D, session 9's trees are fitted on the other five databases'
  segmented development recordings, their threshold chosen on those databases' out-of-fold tree
  scores (3 inner block folds, `best_threshold`), exactly as research.database_transfer does. Each
  model's margin is logit(score) - logit(its threshold); the fused margin is their mean (the
  conv-LSTM's alone where the segmentation refused a recording); abnormal at margin >= 0.
- R4: for each CV fold k, a logistic regression on [logit(conv-LSTM), logit(trees)] is fitted on the
  other folds' out-of-fold scores and applied to fold k; MAcc at the threshold pooled over the other
  folds, as session 10's fusion.py (R2) scores the equal weight.

The held-out split is never read.

    cd /work/main && S=research/ablations/screening && PYTHONPATH=/work/main:$S/session9/segmentation:$S/session10 \\
        .venv/bin/python research/ablations/screening/session11/fusion_lodo.py \\
        research/ablations/screening/session10/c2-cv-scores --features artifacts/segmentation/features.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from evaluate import fit_threshold_score  # session 9's segmentation/evaluate.py, on PYTHONPATH
from fusion import aligned, load_features, logit, metrics, sigmoid, tree_oof  # session 10's fusion.py (R2)

from converter import database_transfer as dt
from converter import datasets as ds
from converter.metrics import binary_scores


def tree_lodo(
    x: np.ndarray, y: np.ndarray, db: np.ndarray, ok: np.ndarray, recs: list[ds.Recording], held: str
) -> tuple[np.ndarray, float]:
    """Trees fitted on every database but ``held``: their scores on ``held`` (NaN where refused) and the
    threshold chosen on the training databases' out-of-fold scores (session 9's fit_threshold_score)."""
    train = np.flatnonzero(ok & (db != held))
    test = np.flatnonzero(ok & (db == held))
    out = np.full(len(y), np.nan)
    out[test], threshold = fit_threshold_score(x, y, db, recs, train, test)
    return out, float(threshold)


def fitted_fusion(nn: np.ndarray, tree: np.ndarray, y: np.ndarray, db: np.ndarray, folds: np.ndarray, ok: np.ndarray):
    """Fold k's fused score from a logistic regression fitted on the other folds (R4), and each fold's
    coefficients (conv-LSTM, trees, intercept)."""
    from sklearn.linear_model import LogisticRegression

    z = np.column_stack([logit(nn), logit(np.where(ok, tree, 0.5))])
    fused = nn.copy()
    coefs = []
    for k in sorted(set(folds.tolist())):
        train = ok & (folds != k)
        test = ok & (folds == k)
        lr = LogisticRegression(C=1.0).fit(z[train], y[train], sample_weight=dt._weights(db[train], y[train]))
        fused[test] = lr.predict_proba(z[test])[:, 1]
        coefs.append([float(lr.coef_[0][0]), float(lr.coef_[0][1]), float(lr.intercept_[0])])
    return fused, coefs


def lodo_rows(
    x: np.ndarray,
    y: np.ndarray,
    db: np.ndarray,
    ok: np.ndarray,
    recs: list[ds.Recording],
    keys: list[str],
    lodo: dict,
    tree_lo: dict[str, tuple[np.ndarray, float]],
) -> dict:
    """R3: per left-out database, the conv-LSTM, the trees and their equal-weight fusion on margins;
    and their means over databases. ``tree_lo`` caches the trees' LODO fits (seed-independent)."""
    out: dict = {"lodo": {}}
    index = {k: i for i, k in enumerate(keys)}
    for held, lo in sorted(lodo.items()):
        if held not in tree_lo:
            tree_lo[held] = tree_lodo(x, y, db, ok, recs, held)
        tscore, tthr = tree_lo[held]
        rows = np.array([index[k] for k in lo["records"]])
        yl = np.array(lo["labels"], dtype=int)
        assert (yl == y[rows]).all()
        m_nn = logit(np.array(lo["scores"], dtype=float)) - logit(np.array([lo["threshold"]]))
        okl = ok[rows]
        m_tree = logit(tscore[rows]) - logit(np.array([tthr]))
        m_fused = m_nn.copy()
        m_fused[okl] = (m_nn[okl] + m_tree[okl]) / 2
        m_trees_filled = np.where(okl, m_tree, m_nn)
        out["lodo"][held] = {
            name: {
                k: float(v)
                for k, v in binary_scores(yl, m, 0.0).items()
                if k in ("macc", "auc", "sensitivity", "specificity")
            }
            for name, m in (("conv_lstm", m_nn), ("trees", m_trees_filled), ("fused", m_fused))
        }
        out["lodo"][held]["n"] = len(yl)
        out["lodo"][held]["segmented"] = int(okl.sum())
    for name in ("conv_lstm", "trees", "fused"):
        maccs = [out["lodo"][d][name]["macc"] for d in out["lodo"]]
        aucs = [out["lodo"][d][name]["auc"] for d in out["lodo"]]
        out[f"lodo_{name}"] = {
            "mean_macc": float(np.mean(maccs)),
            "mean_auc": float(np.nanmean(aucs)),
            "worst_macc": float(np.min(maccs)),
        }
    return out


def summarise(rows: list[dict]) -> dict:
    """Means over seeds, the fused-minus-conv-LSTM gains, and whether fusion was higher on every seed."""
    cv_mean = {m: {k: float(np.mean([r["cv"][m][k] for r in rows])) for k in rows[0]["cv"][m]} for m in rows[0]["cv"]}
    lodo_mean = {
        m: {k: float(np.mean([r[f"lodo_{m}"][k] for r in rows])) for k in rows[0][f"lodo_{m}"]}
        for m in ("conv_lstm", "trees", "fused")
    }
    lodo_db = {
        d: {m: float(np.mean([r["lodo"][d][m]["macc"] for r in rows])) for m in ("conv_lstm", "trees", "fused")}
        for d in rows[0]["lodo"]
    }
    verdict = {
        "seeds": sorted(r["seed"] for r in rows),
        "cv_mean": cv_mean,
        "cv_gain": {
            w: {k: cv_mean[w][k] - cv_mean["conv_lstm"][k] for k in cv_mean[w]} for w in ("fused_equal", "fused_fitted")
        },
        "cv_higher_on_every_seed": {
            w: {k: all(r["cv"][w][k] > r["cv"]["conv_lstm"][k] for r in rows) for k in cv_mean[w]}
            for w in ("fused_equal", "fused_fitted")
        },
        "lodo_mean": lodo_mean,
        "lodo_gain": {k: lodo_mean["fused"][k] - lodo_mean["conv_lstm"][k] for k in lodo_mean["fused"]},
        "lodo_macc_per_database": lodo_db,
    }
    return verdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ablation_dir", type=Path)
    p.add_argument("--features", type=Path, default=Path("artifacts/segmentation/features.npz"))
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("fusion_lodo.json"))
    args = p.parse_args(argv)
    recordings, feat_row, x_all = load_features(args.features)
    by_key = {r.key: r for r in recordings}
    per_seed: dict[str, dict] = {}
    tree_cv: dict[tuple, np.ndarray] = {}
    tree_lo: dict[str, tuple[np.ndarray, float]] = {}
    for path in sorted(args.ablation_dir.glob("da*.json")):
        res = json.loads(path.read_text())
        cv, lodo = res.get("cv_scores"), res.get("lodo_scores")
        if not cv or not lodo:
            continue
        keys = cv["records"]
        y = np.array(cv["labels"], dtype=int)
        db = np.array(cv["databases"])
        folds = np.array(cv["folds"])
        nn = np.array(cv["scores"], dtype=float)
        x, ok = aligned(keys, feat_row, x_all)
        recs = [by_key[k] for k in keys]
        fk = tuple(folds.tolist())
        if fk not in tree_cv:  # trees do not depend on the conv-LSTM's training seed
            tree_cv[fk] = tree_oof(x, y, db, folds, ok)
        tree = tree_cv[fk]
        # R4 (CV): equal weight (R2's) and the weight fitted on the other folds
        equal = nn.copy()
        equal[ok] = sigmoid((logit(nn[ok]) + logit(tree[ok])) / 2)
        fitted, coefs = fitted_fusion(nn, tree, y, db, folds, ok)
        row: dict = {
            "seed": res["seed"],
            "cv": {
                "conv_lstm": metrics(y, nn, db, folds),
                "fused_equal": metrics(y, equal, db, folds),
                "fused_fitted": metrics(y, fitted, db, folds),
            },
            "fitted_coefficients_per_fold": coefs,
        }
        row.update(lodo_rows(x, y, db, ok, recs, keys, lodo, tree_lo))
        per_seed[path.name] = row
        print(
            f"seed {row['seed']}: CV "
            + "; ".join(f"{m} " + ", ".join(f"{k} {v:.3f}" for k, v in row["cv"][m].items()) for m in row["cv"])
            + " | LODO "
            + "; ".join(
                f"{m} " + ", ".join(f"{k} {v:.3f}" for k, v in row[f"lodo_{m}"].items())
                for m in ("conv_lstm", "trees", "fused")
            ),
            flush=True,
        )
    if not per_seed:
        print(f"no result with cv_scores and lodo_scores in {args.ablation_dir}")
        return 1
    rows = list(per_seed.values())
    verdict = summarise(rows)
    args.out.write_text(json.dumps({**verdict, "per_seed": per_seed}, indent=1))
    print(json.dumps(verdict, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
