"""Does what "abnormal" sounds like in one database carry over to the others?

A check independent of the recurrent models: each recording is summarised by a few dozen features
that a gain or a fixed frequency response does not move (rhythm strength, how deep the quiet between
heart sounds is in four bands, how much of each band's energy follows the heart cycle), and a
gradient-boosted tree model is trained on some databases and scored on others. If such a model, too,
scores near chance (AUC 0.5) or below it on a database it was not trained on, the conv-LSTM's low
leave-one-database-out scores there are not a matter of its architecture: the databases disagree on
what an abnormal recording sounds like (different diseases, or labels that follow the recording
set-up). Development data only (the held-out split of `steth train` is never read).

    python -m research.database_transfer [DATA_DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter.metrics import best_threshold, binary_scores, roc_auc
from converter.trainer import database_shares
from device.core import analysis, dsp
from device.core.audio_io import read_audio
from device.core.errors import AudioError, StethError
from device.core.features import FeatureParams, check_signal, preprocess

RATE = FeatureParams().sample_rate
# Potes et al. (2016)'s four bands: below S1/S2's main energy, S1/S2, murmurs, high murmurs
BANDS = ((25.0, 45.0), (45.0, 80.0), (80.0, 200.0), (200.0, 400.0))
SEED = 0


@functools.cache
def _band_filter(band: tuple[float, float]) -> np.ndarray:
    return dsp.butter(4, band, "bandpass", RATE)


def _band_energy(x: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Energy of one band at the envelope rate (linear)."""
    y = dsp.sosfiltfilt(_band_filter(band), x)
    step = RATE // analysis.ENVELOPE_RATE
    n = len(y) // step
    return np.asarray((y[: n * step] ** 2).reshape(n, step).mean(axis=1))


def _autocorrelation_at(v: np.ndarray, lags: Sequence[int]) -> list[float]:
    ac = dsp.autocorrelation(v - v.mean())
    ac = ac / (ac[0] or 1.0)
    return [float(ac[min(lag, len(ac) - 1)]) for lag in lags]


def recording_features(path: str) -> dict[str, float] | None:
    """Gain- and channel-independent summary of one recording; None if the pipeline refuses it."""
    try:
        audio = read_audio(path)
        check_signal(audio, FeatureParams())  # refuses what the models' feature store refuses
        x = preprocess(audio.samples, audio.sample_rate, FeatureParams()).astype(np.float64)
    except AudioError:
        return None
    hr = analysis.heart_rate(x, RATE)
    cycle = round(60.0 / (hr.bpm or 75.0) * analysis.ENVELOPE_RATE)  # envelope samples per cycle
    env = analysis.envelope(x, RATE)
    half, one, two = _autocorrelation_at(env, (cycle // 2, cycle, 2 * cycle))
    out = {"bpm": hr.bpm or 75.0, "rhythm_found": float(hr.bpm is not None), "periodicity": hr.periodicity}
    out |= {"ac_half_cycle": half, "ac_cycle": one, "ac_two_cycles": two}
    for low, high in BANDS:
        name = f"{low:g}_{high:g}"
        energy = _band_energy(x, (low, high))
        db = 10 * np.log10(energy + 1e-8)
        p5, p25, p50, p75, p95 = np.percentile(db, [5, 25, 50, 75, 95])
        # how deep the quiet is (a murmur fills it), relative to the loud part: no gain in it
        out |= {f"range_{name}": p95 - p5, f"q25_{name}": p25 - p95, f"q50_{name}": p50 - p95, f"q75_{name}": p75 - p95}
        out[f"ac_cycle_{name}"] = _autocorrelation_at(energy, (cycle,))[0]
        cycles = len(energy) // cycle if cycle > 3 else 0
        if cycles >= 3:  # the mean cycle: how much of the band's energy follows the heartbeat
            stack = energy[: cycles * cycle].reshape(cycles, cycle)
            mean_cycle = stack.mean(axis=0)
            out[f"synchronous_{name}"] = float(np.var(mean_cycle) / (np.var(stack) + 1e-12))
            mean_db = 10 * np.log10(mean_cycle + 1e-12)
            out[f"cycle_range_{name}"] = float(mean_db.max() - np.percentile(mean_db, 20))
        else:
            out[f"synchronous_{name}"] = 0.0
            out[f"cycle_range_{name}"] = 0.0
    return {k: float(v) for k, v in out.items()}


def _weights(db: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The conv-LSTM's sampling as sample weights: labels equal within a database, databases by their
    share of the draws (trainer.database_shares)."""
    w = np.zeros(len(y))
    for g, share in database_shares(db).items():
        for label in (0, 1):
            m = (db == g) & (y == label)
            if m.any():
                w[m] = share / m.sum()
    return w / w.mean()


def _model() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0)


def _fit(x: np.ndarray, y: np.ndarray, db: np.ndarray) -> Any:
    return _model().fit(x, y, sample_weight=_weights(db, y))


def _train_and_score(
    x: np.ndarray, y: np.ndarray, db: np.ndarray, groups: list[ds.Recording], train: np.ndarray, test: np.ndarray
) -> dict[str, float]:
    """Fit on ``train``, threshold from its own out-of-fold scores (3 block folds), score ``test``."""
    inner = np.array(ds.split_folds([groups[i] for i in train], 3, seed=SEED + 7))
    oof = np.zeros(len(train))
    for k in range(3):
        a, b = train[inner != k], train[inner == k]
        oof[inner == k] = _fit(x[a], y[a], db[a]).predict_proba(x[b])[:, 1]
    threshold = best_threshold(y[train], oof, db[train])
    scores = _fit(x[train], y[train], db[train]).predict_proba(x[test])[:, 1]
    s = binary_scores(y[test], scores, threshold)
    return {"macc": s["macc"], "auc": s["auc"], "n": s["n"]}


def evaluate(recordings: list[ds.Recording], rows: list[dict[str, float] | None]) -> dict[str, Any]:
    """Leave-one-database-out (with and without training-e in training) and the database-to-database AUCs."""
    kept = [i for i, r in enumerate(rows) if r is not None]
    names = sorted(rows[kept[0]] or {})
    x = np.array([[(rows[i] or {}).get(n, 0.0) for n in names] for i in range(len(recordings))])
    y = np.array([r.label == "abnormal" for r in recordings], dtype=int)
    db = np.array([r.subset for r in recordings])
    # the development part of `steth train --seed 0` (its held-out split is never read here)
    folds = np.array(ds.split_folds(recordings, 5, seed=SEED))
    dev = np.flatnonzero((folds != 0) & np.isin(np.arange(len(recordings)), kept))
    databases = sorted(set(db[dev]))
    lodo: dict[str, dict[str, dict[str, float]]] = {"all": {}, "without training-e": {}}
    for left_out in databases:
        test = dev[db[dev] == left_out]
        lodo["all"][left_out] = _train_and_score(x, y, db, recordings, dev[db[dev] != left_out], test)
        rest = dev[(db[dev] != left_out) & (db[dev] != "training-e")]
        lodo["without training-e"][left_out] = _train_and_score(x, y, db, recordings, rest, test)
    pairs: dict[str, dict[str, float]] = {}
    for source in databases:
        train = dev[db[dev] == source]
        if min(np.sum(y[train] == 0), np.sum(y[train] == 1)) < 20:
            continue  # too few of a label to learn anything from alone (training-c, training-d)
        model = _fit(x[train], y[train], db[train])
        pairs[source] = {}
        for target in databases:
            test = dev[db[dev] == target]
            if target == source:  # within the database: out-of-fold over 3 block folds
                inner = np.array(ds.split_folds([recordings[i] for i in test], 3, seed=SEED + 3))
                s = np.zeros(len(test))
                for k in range(3):
                    a = test[inner != k]
                    s[inner == k] = _fit(x[a], y[a], db[a]).predict_proba(x[test[inner == k]])[:, 1]
            else:
                s = model.predict_proba(x[test])[:, 1]
            pairs[source][target] = roc_auc(y[test], s)
    counts = {g: {"n": int(np.sum(db[dev] == g)), "abnormal": int(np.sum(y[dev][db[dev] == g]))} for g in databases}
    return {"features": names, "databases": counts, "lodo": lodo, "pairs": pairs}


def report(res: dict[str, Any]) -> str:
    dbs = list(res["databases"])
    short = [d.removeprefix("training-") for d in dbs]
    lines = ["Leave-one-database-out, gradient-boosted trees on rhythm and band features (MAcc / AUC):", ""]
    lines.append("| trained on | " + " | ".join(short) + " | mean MAcc | mean AUC |")
    lines.append("|---" * (len(dbs) + 3) + "|")
    for name, per in res["lodo"].items():
        label = "the other five" if name == "all" else "the others except training-e"
        cells = [f"{per[d]['macc']:.2f} / {per[d]['auc']:.2f}" for d in dbs]
        mean_macc = np.mean([per[d]["macc"] for d in dbs])
        mean_auc = np.mean([per[d]["auc"] for d in dbs])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean_macc:.3f} | {mean_auc:.3f} |")
    lines += ["", "AUC on each database of a model trained on one (diagonal: within it, out-of-fold):", ""]
    lines.append("| trained on \\ scored on | " + " | ".join(short) + " |")
    lines.append("|---" * (len(dbs) + 1) + "|")
    for source, row in res["pairs"].items():
        lines.append(f"| {source.removeprefix('training-')} | " + " | ".join(f"{row[d]:.2f}" for d in dbs) + " |")
    counts = ", ".join(
        f"{d.removeprefix('training-')} {c['n']} ({c['abnormal']} abnormal)" for d, c in res["databases"].items()
    )
    lines += ["", f"Development recordings: {counts}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.database_transfer", description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", help=f"data folder (default: ${ds.DATA_ENV})")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        recordings = ds.load_physionet2016(ds.resolve_data_dir(args.data_dir))
    except StethError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(recording_features, [str(r.path) for r in recordings], chunksize=16))
    res = evaluate(recordings, rows)
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
