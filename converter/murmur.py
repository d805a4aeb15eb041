"""`steth murmur train` / `steth murmur convert`: the murmur model (present / absent), trained on CirCor
development patients and PASCAL, scored per recording and per patient, shipped as a companion model.

1. A test split of CirCor patients (linked patients together, converter.circor.split_patients) is set
   aside first and scored once, at the end. PASCAL recordings only ever train.
2. Grouped k-fold CV on the other patients gives out-of-fold P(present) per recording; from it the
   site-combination rule (max or mean over a patient's sites) and the threshold are chosen, for
   per-patient balanced accuracy. Each fold's figure uses a threshold chosen on the other folds.
3. The final models (one per seed) train on all development recordings; the same is done for a plain
   baseline (LSTM(64), no class weights, CirCor only) in the same run, and both are scored on the test
   split. The first seed's candidate model is the one converted and shipped.
Labels per recording: present where the patient's murmur is heard, absent for patients without one;
Unknown patients and the other sites of Present patients do not train (the murmur may be faint there).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from converter import featurestore
from converter.featurestore import FeatureSet
from converter.metrics import binary_scores, roc_auc
from device.core.errors import ModelError
from device.core.exam import MURMUR_RULE
from device.core.features import FeatureParams

log = logging.getLogger(__name__)

NAME = "murmur"
LABELS = ("absent", "present")
# The screening model's band and normalisation: murmurs reach above 400 Hz, and one mean and variance
# per recording removes the stethoscope's response while keeping loudness within the recording.
PARAMS = FeatureParams(band_high_hz=700.0, fmax=800.0, cmvn="recording")
RULES = ("max", "mean")
THRESHOLD_GRID = np.round(np.linspace(0.05, 0.95, 91), 3)


@dataclass(frozen=True)
class Recipe:
    arch: str = "conv_lstm"
    class_weights: bool = True
    pascal: bool = True
    epochs: int = 6
    learning_rate: float = 2e-3
    batch_size: int = 64


RECIPES = {
    "candidate": Recipe(),
    # the same network without the murmur-specific choices: no class weights, CirCor only. (An LSTM(64)
    # over all 201 frames took 8.5 min per fold on this shared machine: too slow to run beside it.)
    "baseline": Recipe(class_weights=False, pascal=False),
}


@dataclass(frozen=True)
class Site:
    patient: str  # CirCor patient id; "" for PASCAL
    site: str
    patient_murmur: str  # Present / Absent / Unknown; "" for PASCAL


murmur_label = cc.murmur_label  # one rule for the murmur model and the tasks that train on CirCor


def load_recordings(
    circor_root: Path, patients: Path | None, pascal_root: Path | None
) -> tuple[list[ds.Recording], list[Site], set[str]]:
    """(recordings, their site info, groups of the CirCor patients); PASCAL normal -> absent, murmur -> present."""
    crecs = cc.load_circor2022(circor_root, patients)
    recs = [
        ds.Recording(cc.CIRCOR, cc.SUBSET, r.record_id, r.path, murmur_label(r), r.murmur.lower(), r.group)
        for r in crecs
    ]
    sites = [Site(r.patient, r.site, r.murmur) for r in crecs]
    if pascal_root is not None:
        for r in ds.load_pascal2011(pascal_root):
            if r.label in PASCAL_LABELS:
                recs.append(
                    ds.Recording(r.dataset, r.subset, r.record_id, r.path, _pascal(r.label), r.sublabel, r.group)
                )
                sites.append(Site("", "", ""))
    return recs, sites, {r.group for r in crecs}


# PASCAL's classes that say whether a murmur is heard, as this model's labels (extra sounds and artifacts
# say neither)
PASCAL_LABELS = {"normal": "absent", "murmur": "present"}


def _pascal(label: str | None) -> str:
    return PASCAL_LABELS.get(label or "", "absent")


def targets(recs: list[ds.Recording]) -> np.ndarray:
    """1 present, 0 absent, -1 does not train (unknown)."""
    return np.array([1 if r.label == "present" else 0 if r.label == "absent" else -1 for r in recs])


def patient_folds(recs: list[ds.Recording], idx: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold per recording of ``idx``: groups (linked patients) together, strata = the patient's murmur."""
    proxy = [
        ds.Recording(recs[i].dataset, "", recs[i].record_id, recs[i].path, recs[i].sublabel, "", recs[i].group)
        for i in idx
    ]
    return np.array(ds.split_folds(proxy, k, seed))


def train_model(x: np.ndarray, t: np.ndarray, recipe: Recipe, seed: int) -> Any:
    """A Keras model on windows ``x`` with targets ``t`` (0/1): fixed epochs, step decay, no early stopping
    (nothing to tune on a validation part that small patient counts make noisy)."""
    import tensorflow as tf

    from converter import models

    tf.keras.utils.set_random_seed(seed)
    k = models.keras()
    model = models.build(recipe.arch, tuple(x.shape[1:]), len(LABELS))
    model.compile(k.optimizers.Adam(recipe.learning_rate), "sparse_categorical_crossentropy")
    weights = None
    if recipe.class_weights:
        n1 = max(int(t.sum()), 1)
        n0 = max(len(t) - n1, 1)
        weights = {0: len(t) / (2 * n0), 1: len(t) / (2 * n1)}
    drop = max(1, (2 * recipe.epochs) // 3)
    lr = recipe.learning_rate
    schedule = k.callbacks.LearningRateScheduler(lambda epoch, _: lr if epoch < drop else lr / 4)
    model.fit(
        x, t, batch_size=recipe.batch_size, epochs=recipe.epochs, verbose=0, shuffle=True,
        class_weight=weights, callbacks=[schedule],
    )  # fmt: skip
    return model


def windows(fs: FeatureSet, idx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = idx[y[idx] >= 0]
    w = fs.windows_of(keep)
    return fs.features[w], y[fs.owner[w]]


def record_scores(model: Any, fs: FeatureSet, idx: np.ndarray) -> np.ndarray:
    """P(present) per recording of ``idx``: the mean over its windows (NaN when the pipeline refused it)."""
    w = fs.windows_of(idx)
    out = np.full(len(idx), np.nan)
    if len(w) == 0:
        return out
    p = model.predict(fs.features[w], batch_size=512, verbose=0)[:, 1]
    pos = np.searchsorted(idx, fs.owner[w]) if np.all(np.diff(idx) > 0) else None
    if pos is None:
        lookup = {int(r): i for i, r in enumerate(idx)}
        pos = np.array([lookup[int(o)] for o in fs.owner[w]])
    sums = np.bincount(pos, weights=p, minlength=len(idx))
    counts = np.bincount(pos, minlength=len(idx))
    out[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return out


def shift(p: np.ndarray, threshold: float) -> np.ndarray:
    """The device's calibration (device.core.inference._calibrate): 0.5 becomes ``threshold`` in log-odds."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    return np.asarray(1 / (1 + np.exp(-(np.log(p / (1 - p)) - np.log(t / (1 - t))))))


def per_patient(
    sites: list[Site], idx: np.ndarray, p: np.ndarray, rule: str, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(murmur present?, combined shifted P) per Present/Absent CirCor patient, as device.core.exam combines."""
    by: dict[str, list[float]] = {}
    truth: dict[str, int] = {}
    shifted = shift(p, threshold)
    for i, v, s in zip(idx, p, shifted, strict=True):
        site = sites[i]
        if site.patient_murmur not in ("Present", "Absent") or np.isnan(v):
            continue
        by.setdefault(site.patient, []).append(float(s))
        truth[site.patient] = int(site.patient_murmur == "Present")
    keys = sorted(by)
    combine = np.max if rule == "max" else np.mean
    return np.array([truth[k] for k in keys]), np.array([float(combine(by[k])) for k in keys])


def choose_threshold(sites: list[Site], idx: np.ndarray, p: np.ndarray, rule: str) -> float:
    """The recording threshold that maximises per-patient MAcc under ``rule`` (ties: the lowest)."""
    best = (-1.0, 0.5)
    for t in THRESHOLD_GRID:
        y, s = per_patient(sites, idx, p, rule, float(t))
        if len(np.unique(y)) == 2 and (m := binary_scores(y, s, 0.5)["macc"]) > best[0]:
            best = (m, float(t))
    return best[1]


def scores(
    recs: list[ds.Recording], sites: list[Site], idx: np.ndarray, p: np.ndarray, rule: str, t: float
) -> dict[str, Any]:
    """Per recording (present vs absent recordings) and per patient (Present vs Absent) at threshold ``t``."""
    y = targets(recs)[idx]
    ok = (y >= 0) & ~np.isnan(p)
    py, ps = per_patient(sites, idx, p, rule, t)
    rec = binary_scores(y[ok], shift(p[ok], t), 0.5)
    pat = binary_scores(py, ps, 0.5)
    rec["auc"], pat["auc"] = roc_auc(y[ok], p[ok]), roc_auc(py, ps)
    return {"recording": rec, "patient": pat}


@dataclass
class RunConfig:
    circor: str
    patients: str | None
    pascal: str | None
    seeds: tuple[int, ...] = (0, 1)
    folds: int = 5
    test_fraction: float = 0.2
    test_seed: int = 23
    epochs: int = 6
    workers: int = 1


def _mean(values: list[dict[str, Any]], level: str) -> dict[str, float]:
    keys = ("sensitivity", "specificity", "macc", "auc")
    return {k: float(np.nanmean([v[level][k] for v in values])) for k in keys}


def run(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """The whole run (see the module docstring); writes report.json, split.json and model.h5 into ``out``."""
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    recs, sites, _ = load_recordings(
        Path(cfg.circor), Path(cfg.patients) if cfg.patients else None, Path(cfg.pascal) if cfg.pascal else None
    )
    is_circor = np.array([r.dataset == cc.CIRCOR for r in recs])
    crecs = [r for r in recs if r.dataset == cc.CIRCOR]
    _, test_c = cc.split_patients(
        [cc.CircorRecording(r.path, s.patient, s.site, r.record_id, s.patient_murmur, (), "", "", r.group, ())
         for r, s in zip(crecs, sites, strict=False)],
        cfg.test_fraction, cfg.test_seed,
    )  # fmt: skip
    test_groups = {r.group for r in test_c}
    in_test = np.array([r.dataset == cc.CIRCOR and r.group in test_groups for r in recs])
    dev = np.flatnonzero(is_circor & ~in_test)
    test = np.flatnonzero(in_test)
    pascal_idx = np.flatnonzero(~is_circor)
    fs = featurestore.build(recs, PARAMS, name="murmur", workers=cfg.workers)
    y = targets(recs)
    folds = patient_folds(recs, dev, cfg.folds, 1)
    report: dict[str, Any] = {
        "task": NAME,
        "feature_params": PARAMS.to_dict(),
        "config": {**asdict(cfg), "seeds": list(cfg.seeds)},
        "recipes": {k: asdict(v) | {"epochs": cfg.epochs} for k, v in RECIPES.items()},
        "counts": {
            "dev_patients": len({sites[i].patient for i in dev}),
            "test_patients": len({sites[i].patient for i in test}),
            "dev_recordings": len(dev),
            "test_recordings": len(test),
            "pascal_recordings": len(pascal_idx),
            "skipped": len(fs.skipped),
        },
    }
    results: dict[str, Any] = {}
    for name, base in RECIPES.items():
        recipe = Recipe(**{**asdict(base), "epochs": cfg.epochs})
        extra = windows(fs, pascal_idx, y) if recipe.pascal and len(pascal_idx) else None

        def fit(idx: np.ndarray, seed: int, recipe: Recipe = recipe, extra: Any = extra) -> Any:
            x, t = windows(fs, idx, y)
            if extra is not None:
                x, t = np.concatenate([x, extra[0]]), np.concatenate([t, extra[1]])
            return train_model(x, t, recipe, seed)

        # cross-validation (first seed): out-of-fold scores choose the rule and the threshold
        oof = np.full(len(dev), np.nan)
        for k in range(cfg.folds):
            model = fit(dev[folds != k], cfg.seeds[0])
            oof[folds == k] = record_scores(model, fs, dev[folds == k])
            log.info("%s fold %d done (%.0f s)", name, k, time.monotonic() - t0)
        cv: dict[str, Any] = {}
        for rule in RULES:
            per_fold = []
            for k in range(cfg.folds):
                t = choose_threshold(sites, dev[folds != k], oof[folds != k], rule)
                per_fold.append(scores(recs, sites, dev[folds == k], oof[folds == k], rule, t))
            cv[rule] = {"recording": _mean(per_fold, "recording"), "patient": _mean(per_fold, "patient")}
        threshold = choose_threshold(sites, dev, oof, MURMUR_RULE)
        tests = []
        for seed in cfg.seeds:
            model = fit(dev, seed)
            tests.append(scores(recs, sites, test, record_scores(model, fs, test), MURMUR_RULE, threshold))
            if name == "candidate" and seed == cfg.seeds[0]:
                model.save(out / "model.h5")
            log.info("%s seed %d trained on all development patients (%.0f s)", name, seed, time.monotonic() - t0)
        results[name] = {
            "cv": cv,
            "threshold": threshold,
            "test_per_seed": tests,
            "test_mean": {"recording": _mean(tests, "recording"), "patient": _mean(tests, "patient")},
        }
    report["rule"] = MURMUR_RULE
    report["threshold"] = results["candidate"]["threshold"]
    report["results"] = results
    report["seconds"] = round(time.monotonic() - t0)
    split = {
        "dev": [recs[i].key for i in dev],
        "test": [recs[i].key for i in test],
        "pascal": [recs[i].key for i in pascal_idx],
        "test_patients": sorted({sites[i].patient for i in test}),
    }
    (out / "split.json").write_text(json.dumps(split, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    return report


def ship(run_dir: Path, dest: Path, version: str, allow_shortfall: bool = False) -> dict[str, Any]:
    """Convert the run's model to int8, check it against the float model on the test recordings and on
    known non-heart signals, and write murmur.tflite/.json into ``dest`` (ParityError when a check fails)."""
    from converter import models
    from converter.convert import (
        MAX_MACC_DELTA,
        MIN_AGREEMENT,
        REPRESENTATIVE_WINDOWS,
        ParityError,
        check_known_signals,
        convert_in_subprocess,
        parity_check,
    )
    from device.core.inference import Classifier, sha256_file

    report = json.loads((run_dir / "report.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    cfg = report["config"]
    recs, _, _ = load_recordings(
        Path(cfg["circor"]),
        Path(cfg["patients"]) if cfg["patients"] else None,
        Path(cfg["pascal"]) if cfg["pascal"] else None,
    )
    by_key = {r.key: r for r in recs}
    train_keys = [k for k in split["dev"] + split["pascal"] if k in by_key]
    test = [by_key[k] for k in split["test"] if k in by_key and by_key[k].label in LABELS]
    dev_fs = featurestore.build([by_key[k] for k in train_keys], PARAMS, name="murmur-rep", workers=cfg["workers"])
    rng = np.random.default_rng(0)
    rep = dev_fs.features[rng.permutation(len(dev_fs.features))[:REPRESENTATIVE_WINDOWS]]
    keras_model = models.keras().models.load_model(run_dir / "model.h5", compile=False)
    threshold = float(report["threshold"])
    cand = report["results"]["candidate"]
    with tempfile.TemporaryDirectory() as tmp:
        tflite = Path(tmp) / f"{NAME}.tflite"
        tf_version = convert_in_subprocess(run_dir / "model.h5", rep, tflite)
        meta: dict[str, Any] = {
            "name": NAME,
            "version": version,
            "task": NAME,
            "title": "Murmur model",  # the model card's section title (models are described by data)
            "labels": list(LABELS),
            "positive_label": "present",
            "result_field": "murmur",
            "threshold": threshold,
            "threshold_note": f"chosen on out-of-fold scores of the development patients for per-patient MAcc "
            f"under the exam rule ({report['rule']} over sites); never on the test split; reported "
            "probabilities are shifted in log-odds so that 0.5 is this threshold",
            "exam_rule": report["rule"],
            "aggregation": "mean of window probabilities",
            "architecture": RECIPES["candidate"].arch,
            "feature_params": PARAMS.to_dict(),
            "feature_params_fingerprint": PARAMS.fingerprint(),
            "sha256": sha256_file(tflite),
            "size_bytes": tflite.stat().st_size,
            "quantization": "full integer int8 (weights and activations), int8 input and output",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "converter": tf_version,
            "training_data": "murmur present (at the sites where it is heard) vs absent: CirCor DigiScope 2022 "
            f"development patients ({report['counts']['dev_patients']} patients outside the test split) and PASCAL "
            "2011 murmur vs normal recordings",
            # `steth evaluate` warns when it scores recordings the model was trained on
            "training_recordings": sorted(k.rsplit("/", 1)[-1] for k in train_keys),
            "test_patients": split["test_patients"],
            "metrics": {
                "cv": cand["cv"],
                "test_mean_over_seeds": cand["test_mean"],
                "baseline_test_mean_over_seeds": report["results"]["baseline"]["test_mean"],
                "seeds": cfg["seeds"],
                "test_split": f"{report['counts']['test_patients']} CirCor development patients "
                f"(converter.circor.split_patients, fraction {cfg['test_fraction']}, seed {cfg['test_seed']})",
            },
            "intended_use": "murmur screening support beside the screening label; not a diagnosis",
        }
        meta_path = tflite.with_suffix(".json")
        meta_path.write_text(json.dumps(meta, indent=1))
        clf = Classifier(tflite, meta)
        parity = parity_check(keras_model, clf, test, LABELS, "present", threshold)
        known = check_known_signals(clf)
        meta["parity"], meta["known_signals"] = parity, known
        failures = []
        if parity["agreement"] < MIN_AGREEMENT:
            failures.append(f"int8 and float agree on {parity['agreement']:.1%} of test recordings (< 99%)")
        if parity.get("macc_delta", 0.0) > MAX_MACC_DELTA:
            failures.append(f"MAcc differs by {parity['macc_delta']:.3f} (> {MAX_MACC_DELTA})")
        failures += [f"{k}: confident '{v['label']}' ({v['confidence']})" for k, v in known.items() if not v["passed"]]
        meta["checks_passed"] = not failures
        meta["check_failures"] = failures
        meta_path.write_text(json.dumps(meta, indent=1))
        if failures and not allow_shortfall:
            raise ParityError("int8 murmur model refused: " + "; ".join(failures), "nothing was written")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(tflite, dest / f"{NAME}.tflite")
        shutil.copy(meta_path, dest / f"{NAME}.json")
    return meta


def register(sub: Any) -> None:
    p = sub.add_parser("murmur", help="train / convert the murmur model (CirCor + PASCAL)")
    cmds = p.add_subparsers(dest="murmur_command", metavar="STEP")
    cmds.required = True
    t = cmds.add_parser("train", help="CV, final models, baseline and test split scores into a run folder")
    t.add_argument("--circor", required=True, help="CirCor folder (training_data/, training_data.csv)")
    t.add_argument("--patients", help="file of patient ids to use (default: development_patients.txt there)")
    t.add_argument("--pascal", help="PASCAL 2011 folder (normal and murmur recordings train too)")
    t.add_argument("--out", type=Path, default=Path("artifacts") / "train" / NAME)
    t.add_argument("--seeds", default="0,1", help="comma-separated seeds of the final models")
    t.add_argument("--folds", type=int, default=5)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--workers", type=int, default=1, help="feature extraction processes")
    t.set_defaults(func=_train)
    c = cmds.add_parser("convert", help="int8 conversion with parity checks, written beside the shipped models")
    c.add_argument("run_dir", type=Path, nargs="?", default=Path("artifacts") / "train" / NAME)
    c.add_argument("--version", default="0.1.0")
    c.add_argument("--dest", type=Path, default=None, help="where to write (default: the installed device/models)")
    c.add_argument("--allow-parity-shortfall", action="store_true")
    c.set_defaults(func=_convert)


def _train(args: argparse.Namespace) -> int:
    cfg = RunConfig(
        args.circor, args.patients, args.pascal, tuple(int(s) for s in args.seeds.split(",")),
        args.folds, epochs=args.epochs, workers=args.workers,
    )  # fmt: skip
    report = run(cfg, args.out)
    for name, r in report["results"].items():
        m = r["test_mean"]
        print(
            f"{name}: test per patient MAcc {m['patient']['macc']:.3f} AUC {m['patient']['auc']:.3f}, "
            f"per recording MAcc {m['recording']['macc']:.3f} AUC {m['recording']['auc']:.3f} "
            f"(mean of {len(cfg.seeds)} seeds; CV per patient MAcc {r['cv'][report['rule']]['patient']['macc']:.3f})"
        )
    print(f"run folder: {args.out} ({report['seconds']} s)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from device.core.inference import models_dir

    try:
        meta = ship(args.run_dir, args.dest or models_dir(), args.version, args.allow_parity_shortfall)
    except ModelError as exc:
        print(f"steth: error: {exc}")
        return 2
    p = meta["parity"]
    print(f"shipped {NAME} {meta['version']} ({meta['size_bytes']} bytes): agreement {p['agreement']:.1%}")
    return 0 if meta["checks_passed"] else 3
