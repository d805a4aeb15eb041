"""Grouped 5-fold CV on the development patients: candidate recipes against a plain baseline.

Every fold's threshold is chosen on the other folds' out-of-fold predictions (never its own).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common as c

RECIPES = {
    # plain: LSTM(64), no class weights, CirCor only
    "baseline": dict(arch="lstm", class_weights=False, pascal=False),
    "conv_lstm_cw": dict(arch="conv_lstm", class_weights=True, pascal=False),
    "conv_lstm_cw_pascal": dict(arch="conv_lstm", class_weights=True, pascal=True),
}


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(RECIPES)
    seeds = [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    data = c.load()
    y = c.y_of(data.recs)
    dev, _ = c.test_split(data)
    folds_all = c.patient_folds([data.recs[i] for i in dev], 5, 1)
    py = c.y_of(data.pfs.recordings)
    px, pt = c.windows(data.pfs, np.arange(len(data.pfs.recordings)), py)
    out = {}
    for name in names:
        r = RECIPES[name]
        for seed in seeds:
            t0 = time.time()
            oof = np.full(len(dev), np.nan)
            for k in range(5):
                tr, va = dev[folds_all != k], dev[folds_all == k]
                x, t = c.windows(data.fs, tr, y)
                if r["pascal"]:
                    x, t = np.concatenate([x, px]), np.concatenate([t, pt])
                m = c.train(x, t, arch=r["arch"], seed=seed, epochs=epochs, class_weights=r["class_weights"])
                oof[folds_all == k] = c.record_probs(m, data.fs, va)
                print(name, seed, "fold", k, round(time.time() - t0), flush=True)
            res = {}
            for rule in ("max", "mean"):
                per = []
                for k in range(5):
                    other = folds_all != k
                    t = c.best_t(data, dev[other], oof[other], rule)
                    per.append(c.scores(data, dev[~other], oof[~other], rule, t))
                res[rule] = {m: float(np.mean([p[m] for p in per])) for m in per[0]}
            out[f"{name}/seed{seed}"] = res
            np.save(c.HERE / f"oof_{name}_seed{seed}.npy", oof)
            print(name, seed, json.dumps(res), round(time.time() - t0), flush=True)
    (c.HERE / f"cv_{'_'.join(names)}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
