"""Why an int8 screening model disagrees with its float model, measured on DEVELOPMENT recordings only.

    python -m research.int8_agreement RUN_DIR MODEL.tflite [--meta SIDECAR.json] [--data-dir DIR]

RUN_DIR is a `steth train` (or `steth ensemble`) run: its model.h5 is the float model, its report's
threshold the decision threshold t, its split.json's "dev" the recordings scored. MODEL.tflite is a
conversion of that model (`steth convert --allow-parity-shortfall --dest DIR` writes one with its
sidecar; `--meta` gives a sidecar when the file has none beside it: its hash is taken from the file).

Prints, label-free (no recording's label is read, so the test split's parity check stays unseen):
- the mean and mean absolute difference of the window probabilities, int8 minus float: a systematic
  shift shows as a mean close to the mean absolute difference;
- decision agreement at t over all development recordings and on half B of them, and at an int8
  threshold chosen on half A (the threshold at which the int8 model's decisions best match the float
  model's at t): how much a threshold calibrated for the int8 model would recover;
- for a conv_lstm member, the float LSTM's forget gates and cell state over the development windows:
  how large the cell state grows, which sets the int8 step of the unrolled recurrence.

Session 14 (docs/screening_all_sources/ensemble/README.md) used it on the averaged screening model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter import featurestore
from converter.tasks import task_of_run
from device.core.features import FeatureParams
from device.core.inference import Classifier


def recording_means(p: np.ndarray, owner: np.ndarray) -> np.ndarray:
    own = np.unique(owner)
    return np.array([p[owner == o].mean() for o in own])


def agreement(f: np.ndarray, q: np.ndarray, t: float, tq: float | None = None) -> float:
    return float(np.mean((q >= (t if tq is None else tq)) == (f >= t)))


def int8_threshold(f: np.ndarray, q: np.ndarray, t: float) -> float:
    """The threshold at which the int8 decisions best match the float ones at ``t``."""
    candidates = np.unique(np.round(q, 4))
    return float(candidates[int(np.argmax([agreement(f, q, t, c) for c in candidates]))])


def lstm_state(model: Any, windows: np.ndarray) -> dict[str, float]:
    """The float LSTM's forget gates and cell state (Keras gate order i, f, c, o) over ``windows``."""
    from converter import models

    k = models.keras()
    front = k.Model(model.input, model.get_layer("pool").output)
    x = front.predict(windows, verbose=0)
    w, u_mat, b = model.get_layer("rnn").get_weights()
    u = u_mat.shape[0]
    clip = models.cell_clip_of(model) or np.inf  # a clipped cell (TrainSettings.cell_clip) as it runs
    h, c = np.zeros((len(x), u)), np.zeros((len(x), u))
    forget, cells = [], []
    for step in range(x.shape[1]):
        z = x[:, step] @ w + h @ u_mat + b
        i, f = 1 / (1 + np.exp(-z[:, :u])), 1 / (1 + np.exp(-z[:, u : 2 * u]))
        g, o = np.tanh(z[:, 2 * u : 3 * u]), 1 / (1 + np.exp(-z[:, 3 * u :]))
        c = np.clip(f * c + i * g, -clip, clip)
        h = o * np.tanh(c)
        forget.append(f)
        cells.append(np.abs(c))
    fg, cs = np.concatenate(forget), np.concatenate(cells)
    return {
        "steps": int(x.shape[1]),
        "forget_above_255_256": float(np.mean(fg > 255 / 256)),
        "forget_median": float(np.median(fg)),
        "cell_abs_p99": float(np.quantile(cs, 0.99)),
        "cell_abs_max": float(cs.max()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("tflite", type=Path)
    ap.add_argument("--meta", type=Path, help="sidecar to use (default: beside the .tflite)")
    ap.add_argument("--data-dir", help=f"data folder (default: ${ds.DATA_ENV})")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from converter import models

    report = json.loads((args.run / "report.json").read_text())
    split = json.loads((args.run / "split.json").read_text())
    task = task_of_run(report)
    by_key = {r.key: r for r in task.loader(ds.resolve_data_dir(args.data_dir))}
    dev = [by_key[k] for k in split["dev"] if k in by_key]
    meta = json.loads((args.meta or args.tflite.with_suffix(".json")).read_text())
    blob = args.tflite.read_bytes()
    meta |= {"sha256": hashlib.sha256(blob).hexdigest(), "size_bytes": len(blob)}
    fs = featurestore.build(dev, FeatureParams.from_dict(report["feature_params"]), name=f"{task.name}-dev-rep")
    model = models.keras().models.load_model(args.run / "model.h5", compile=False)
    pos = task.labels.index(task.positive or "")
    pf = model.predict(fs.features, batch_size=512, verbose=0)[:, pos]
    pq = Classifier(args.tflite, meta).predict_windows(fs.features)[:, pos]
    f, q, t = recording_means(pf, fs.owner), recording_means(pq, fs.owner), float(report["threshold"])
    half_a = np.arange(len(f)) % 2 == 0
    tq = int8_threshold(f[half_a], q[half_a], t)
    print(
        f"windows {len(pf)}: int8 - float mean {np.mean(pq - pf):+.4f}, mean |difference| {np.mean(abs(pq - pf)):.4f}"
    )
    print(
        f"development recordings {len(f)}: agreement at t={t:.3f} {agreement(f, q, t):.4f}; half B at t "
        f"{agreement(f[~half_a], q[~half_a], t):.4f}, at the int8 threshold {tq:.4f} chosen on half A "
        f"{agreement(f[~half_a], q[~half_a], t, tq):.4f}"
    )
    sample = fs.features[np.random.default_rng(0).permutation(len(fs.features))[:600]]
    ensemble = models.parse_ensemble(model.name)
    members = [model.get_layer(f"member{i}") for i in range(ensemble[1])] if ensemble else [model]
    for i, m in enumerate(members):
        if any(layer.name == "pool" for layer in m.layers):
            print(f"member {i}: float LSTM {json.dumps(lstm_state(m, sample))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
