"""Compare feature sets A (database_transfer's 34), B (segmentation-based) and C (A+B) with the same
trees, sample weights and splits: grouped 5-fold CV on the development part and leave-one-database-out.

Reads ``<out>/features.npz`` (written by features.py) and writes ``<out>/results.json``. The data folder is
$STETH_DATA_DIR; the output folder is ``--out``, else $SEGMENT_OUT, else ``artifacts/segmentation``
(relative to the current directory). Run from the repo root (about 40 min on one core):

    cd /work/main && PYTHONPATH=/work/main:research/ablations/screening/session9/segmentation \
        python research/ablations/screening/session9/segmentation/evaluate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from features import FEATURES_FILE, add_out_option, output_dir

from converter import database_transfer as dt
from converter import datasets as ds
from converter.metrics import best_threshold, roc_auc

CV_SEEDS = (1, 2, 3)  # seed 1 is the primary split; 2 and 3 only show the spread


def fit_threshold_score(x, y, db, recs, train, test):
    """As database_transfer._train_and_score, but returns the test scores and the threshold."""
    inner = np.array(ds.split_folds([recs[i] for i in train], 3, seed=dt.SEED + 7))
    oof = np.zeros(len(train))
    for k in range(3):
        a, b = train[inner != k], train[inner == k]
        oof[inner == k] = dt._fit(x[a], y[a], db[a]).predict_proba(x[b])[:, 1]
    threshold = best_threshold(y[train], oof, db[train])
    scores = dt._fit(x[train], y[train], db[train]).predict_proba(x[test])[:, 1]
    return scores, threshold


def macc(y, pred):
    y = y.astype(bool)
    return 0.5 * (pred[y].mean() + (~pred[~y]).mean())


def cv(x, y, db, recs, seed):
    folds = np.array(ds.split_folds(recs, 5, seed=seed))
    scores = np.zeros(len(y))
    pred = np.zeros(len(y), dtype=bool)
    idx = np.arange(len(y))
    for k in range(5):
        s, t = fit_threshold_score(x, y, db, recs, idx[folds != k], idx[folds == k])
        scores[folds == k] = s
        pred[folds == k] = s >= t
    return scores, pred


def summarise_cv(y, db, scores, pred):
    ne = db != "training-e"
    out = {
        "all": {"macc": macc(y, pred), "auc": roc_auc(y, scores), "n": len(y)},
        "without_e": {"macc": macc(y[ne], pred[ne]), "auc": roc_auc(y[ne], scores[ne]), "n": int(ne.sum())},
        "per_db": {},
    }
    for g in sorted(set(db)):
        m = db == g
        out["per_db"][g] = {"auc": roc_auc(y[m], scores[m]), "macc": macc(y[m], pred[m])}
    return out


def bootstrap_auc_diff(y, groups, s1, s0, mask, n=1000, seed=0):
    """Paired bootstrap over recording blocks of AUC(s1) - AUC(s0) on ``mask``: mean, 2.5%, 97.5%."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(mask)
    ug, inv = np.unique(groups[idx], return_inverse=True)
    members = [idx[inv == g] for g in range(len(ug))]
    diffs = []
    for _ in range(n):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(ug), len(ug))])
        diffs.append(roc_auc(y[pick], s1[pick]) - roc_auc(y[pick], s0[pick]))
    d = np.array(diffs)
    return (
        float(roc_auc(y[idx], s1[idx]) - roc_auc(y[idx], s0[idx])),
        float(np.percentile(d, 2.5)),
        float(np.percentile(d, 97.5)),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compare feature sets A, B and C: grouped CV and LODO.")
    add_out_option(parser)
    out_dir = output_dir(parser.parse_args(argv).out)
    t0 = time.time()
    recordings = ds.load_physionet2016(ds.resolve_data_dir(None))
    z = np.load(out_dir / FEATURES_FILE)
    dev = z["dev_index"]
    ok = z["ok_a"] & z["ok_b"]
    dev_kept = dev[ok]
    names_a, names_b = list(z["names_a"]), list(z["names_b"])
    xa, xb = z["xa"][ok], z["xb"][ok]
    sets = {"A": (names_a, xa), "B": (names_b, xb), "C": (names_a + names_b, np.hstack([xa, xb]))}
    recs = [recordings[i] for i in dev_kept]
    y = np.array([r.label == "abnormal" for r in recs], dtype=int)
    db = np.array([r.subset for r in recs])
    groups = np.array([r.group for r in recs])
    print(f"dev recordings {len(dev)}, kept {len(dev_kept)} ({len(dev) - len(dev_kept)} refused by the pipeline)")
    res: dict = {"n_features": {k: len(v[0]) for k, v in sets.items()}, "cv": {}, "lodo": {}, "boot": {}}
    oof: dict = {}
    for name, (names, x) in sets.items():
        res["cv"][name] = {}
        for seed in CV_SEEDS:
            scores, pred = cv(x, y, db, recs, seed)
            res["cv"][name][seed] = summarise_cv(y, db, scores, pred)
            if seed == CV_SEEDS[0]:
                oof[name] = scores
        first = res["cv"][name][CV_SEEDS[0]]
        print(
            name,
            "cv",
            json.dumps(first["all"]),
            json.dumps(first["without_e"]),
            f"{time.time() - t0:.0f}s",
            flush=True,
        )
        # LODO exactly as database_transfer.evaluate: rows over all recordings, None outside the kept dev part
        rows: list = [None] * len(recordings)
        for j, i in enumerate(dev_kept):
            rows[i] = dict(zip(names, x[j].tolist(), strict=True))
        ev = dt.evaluate(recordings, rows)
        res["lodo"][name] = {"lodo": ev["lodo"], "pairs": ev["pairs"], "databases": ev["databases"]}
        print(
            name,
            "lodo",
            {d: (round(v["macc"], 3), round(v["auc"], 3)) for d, v in ev["lodo"]["all"].items()},
            f"{time.time() - t0:.0f}s",
            flush=True,
        )
    ne = db != "training-e"
    allm = np.ones(len(y), dtype=bool)
    for other in ("B", "C"):
        res["boot"][f"{other}-A"] = {
            "all": bootstrap_auc_diff(y, groups, oof[other], oof["A"], allm),
            "without_e": bootstrap_auc_diff(y, groups, oof[other], oof["A"], ne),
        }
    print("bootstrap", json.dumps(res["boot"]))
    # univariate AUC of each B feature per database (descriptive)
    uni = {}
    for j, n in enumerate(names_b):
        v = xb[:, j]
        row = {}
        for g in sorted(set(db)):
            m = (db == g) & np.isfinite(v)
            row[g] = roc_auc(y[m], v[m]) if m.sum() > 5 else float("nan")
        uni[n] = row
    res["univariate_b"] = uni
    res["seconds"] = time.time() - t0
    (out_dir / "results.json").write_text(json.dumps(res, indent=1, default=float))
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
