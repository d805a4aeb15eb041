"""`steth murmur train` / `steth murmur convert`: the murmur model (present / absent), trained on CirCor
development patients, PASCAL and (recipe option) PhysioNet 2016 normal recordings, scored per recording
and per patient, shipped as a companion model.

1. A test split of CirCor patients (linked patients together, converter.circor.split_patients) is set
   aside first and scored once, at the end, only when asked (``--score-test``; issue 23: unseen until the
   final model). PASCAL recordings only ever train.
2. Grouped k-fold CV on the other patients gives out-of-fold P(present) per recording; from it the
   site-combination rule (max or mean over a patient's sites) and the threshold are chosen, for
   per-patient balanced accuracy. Each fold's figure uses a threshold chosen on the other folds. The
   out-of-fold scores are written per recipe (``oof_RECIPE_seedS.json``); ``--cv-only`` stops here.
3. The final models (one per seed) of the chosen recipe train on all development recordings; the same is
   done for a plain baseline (no class weights, CirCor only) in the same run, and both are scored on the
   test split. The first seed's model of the chosen recipe is the one converted and shipped. Without
   ``--score-test`` only that model trains (the others exist to be scored) and nothing is scored.
4. With PhysioNet 2016 (``--physionet``): its test split is the screening model's (fold 0 of
   ``split_folds`` over all labelled PhysioNet recordings, seed 2323: ``physionet_test_keys``) and never
   trains. Its development recordings get CV folds by block, so every recipe's out-of-fold P(present) on
   PhysioNet normals gives a false-alarm rate (adults, other stethoscopes: a "present" there is most likely
   wrong). The ``physionet`` recipe also trains on those normals as absent; abnormal ones never train (their
   murmur status is unknown: training-e's coronary cases have none). ``choose_recipe`` picks the shipped
   recipe from the CV figures alone; only it and the baseline train final models and meet the test splits.
Labels per recording: present where the patient's murmur is heard, absent for patients without one;
Unknown patients and the other sites of Present patients do not train (the murmur may be faint there).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from converter import featurestore
from converter.featurestore import FeatureSet
from converter.metrics import binary_scores, roc_auc
from converter.train import held_out_status
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
    physionet_normals: bool = False  # PhysioNet 2016 development normals train as absent
    epochs: int = 6
    learning_rate: float = 2e-3
    batch_size: int = 64


RECIPES = {
    "candidate": Recipe(),
    # the candidate plus adult normals from other stethoscopes as absent (issue 23: 0.1.0 called 45% of
    # PhysioNet's normal recordings murmur present)
    "physionet": Recipe(physionet_normals=True),
    # the same network without the murmur-specific choices: no class weights, CirCor only. (An LSTM(64)
    # over all 201 frames took 8.5 min per fold on this shared machine: too slow to run beside it.)
    "baseline": Recipe(class_weights=False, pascal=False),
}


# The rule that picks the shipped recipe, fixed before the first run that compared them: "physionet"
# replaces "candidate" only if its CV per-patient MAcc on CirCor (exam rule) stays within MACC_TOLERANCE
# of the candidate's and its CV false-alarm rate on PhysioNet normals is at least MIN_FALSE_ALARM_CUT lower.
MACC_TOLERANCE = 0.01
MIN_FALSE_ALARM_CUT = 0.10

# The PhysioNet test split shared with the screening model (converter/task_definitions/screening.toml:
# rule "blocks", fraction 0.2 -> 5 folds, seed 2323; converter.tasks.Split.held_out takes fold 0).
PHYSIONET_TEST_FOLDS = 5
PHYSIONET_TEST_SEED = 2323


def physionet_test_keys(recordings: list[ds.Recording]) -> set[str]:
    """Keys of the PhysioNet test split; ``recordings``: all labelled PhysioNet recordings as
    ``load_physionet2016`` returns them (the split depends on the whole list and its order)."""
    folds = ds.split_folds(recordings, PHYSIONET_TEST_FOLDS, PHYSIONET_TEST_SEED)
    return {r.key for r, f in zip(recordings, folds, strict=True) if f == 0}


@dataclass(frozen=True)
class Site:
    patient: str  # CirCor patient id; "" for PASCAL
    site: str
    patient_murmur: str  # Present / Absent / Unknown; "" for PASCAL


murmur_label = cc.murmur_label  # one rule for the murmur model and the tasks that train on CirCor


def load_recordings(
    circor_root: Path, patients: Path | None, pascal_root: Path | None, physionet_root: Path | None = None
) -> tuple[list[ds.Recording], list[Site], set[str]]:
    """(recordings, their site info, groups of the CirCor patients); PASCAL normal -> absent, murmur -> present;
    PhysioNet normal -> absent, abnormal -> "abnormal" (never trains; its reference label is the sublabel)."""
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
    if physionet_root is not None:
        for r in ds.load_physionet2016(physionet_root):
            label = "absent" if r.label == "normal" else "abnormal"
            recs.append(ds.Recording(r.dataset, r.subset, r.record_id, r.path, label, r.label or "", r.group))
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


def training_set(
    recipe: Recipe, y: np.ndarray, circor: np.ndarray, pascal: np.ndarray, physionet: np.ndarray
) -> np.ndarray:
    """The recordings (sorted indices) that ``recipe`` trains on, out of the given CirCor, PASCAL and PhysioNet
    development recordings: those with a target (PhysioNet: its normals; abnormal ones have none)."""
    parts = [circor]
    if recipe.pascal:
        parts.append(pascal)
    if recipe.physionet_normals:
        parts.append(physionet)
    idx = np.sort(np.concatenate(parts)).astype(int)
    return idx[y[idx] >= 0]


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
    physionet: str | None = None  # data folder holding physionet2016/ (or training-a/ ...)
    # recipes that are cross-validated (default: every recipe the data allows); a recipe left out is
    # scored on the test split at threshold 0.5 when it trains a final model (only the baseline may be)
    cv_recipes: tuple[str, ...] | None = None
    # score the final models on the test splits (`steth murmur train --score-test`); off: only the shipped
    # model trains, the test splits stay unseen (issue 23) and split.json still names them for the parity check
    score_test: bool = False
    # stop after cross-validation (`--cv-only`): out-of-fold scores and CV figures, no recipe chosen, no final
    # model (a study of the OOF scores needs nothing else)
    cv_only: bool = False


def _mean(values: list[dict[str, Any]], level: str) -> dict[str, float]:
    keys = ("sensitivity", "specificity", "macc", "auc")
    return {k: float(np.nanmean([v[level][k] for v in values])) for k in keys}


def physionet_scores(recs: list[ds.Recording], idx: np.ndarray, p: np.ndarray, t: float) -> dict[str, Any]:
    """PhysioNet recordings ``idx`` with P(present) ``p``: per database and pooled, the false-alarm rate (share
    of normal recordings at or above threshold ``t``, of those the pipeline assessed) and the AUC of
    P(present) abnormal vs normal (NaN where a database has one class)."""
    ok = ~np.isnan(p)
    subsets = np.array([recs[i].subset for i in idx])
    normal = np.array([recs[i].sublabel == "normal" for i in idx])
    out: dict[str, Any] = {}
    for name in [*sorted(set(subsets)), "all"]:
        m = ok & ((subsets == name) if name != "all" else True)
        n = m & normal
        out[name] = {
            "n_normal": int(n.sum()),
            "n_abnormal": int((m & ~normal).sum()),
            "false_alarm": float(np.mean(p[n] >= t)) if n.any() else float("nan"),
            "auc": roc_auc((~normal[m]).astype(int), p[m]) if len(set(normal[m])) == 2 else float("nan"),
        }
    return out


def cv_figures(
    recs: list[ds.Recording],
    sites: list[Site],
    circor: tuple[np.ndarray, np.ndarray, np.ndarray],
    physionet: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_folds: int,
) -> dict[str, Any]:
    """CV figures from out-of-fold scores, each ``(recording indices, fold per recording, P(present))``: per
    rule, the CirCor scores with each fold's threshold chosen on the other folds; the PhysioNet false-alarm rate
    and AUC per fold at that threshold (exam rule), and per database on the pooled scores; the threshold."""
    dev, folds, oof = circor
    p_dev, p_folds, p_oof = physionet
    cv: dict[str, Any] = {}
    p_cv = []
    for rule in RULES:
        per_fold = []
        for k in range(n_folds):
            t = choose_threshold(sites, dev[folds != k], oof[folds != k], rule)
            per_fold.append(scores(recs, sites, dev[folds == k], oof[folds == k], rule, t))
            if rule == MURMUR_RULE and len(p_dev):
                p_cv.append(physionet_scores(recs, p_dev[p_folds == k], p_oof[p_folds == k], t)["all"])
        cv[rule] = {"recording": _mean(per_fold, "recording"), "patient": _mean(per_fold, "patient")}
    threshold = choose_threshold(sites, dev, oof, MURMUR_RULE)
    out: dict[str, Any] = {"cv": cv, "threshold": threshold}
    if len(p_dev):
        out["cv_physionet"] = {
            "false_alarm": float(np.nanmean([f["false_alarm"] for f in p_cv])),
            "auc": float(np.nanmean([f["auc"] for f in p_cv])),
            "pooled": physionet_scores(recs, p_dev, p_oof, threshold),
        }
    return out


def choose_recipe(results: dict[str, Any], rule: str) -> tuple[str, str]:
    """(recipe to ship, why) by MACC_TOLERANCE and MIN_FALSE_ALARM_CUT on the CV figures alone."""
    cand = results.get("candidate", {})
    alt = results.get("physionet", {})
    if "cv" not in alt or "cv_physionet" not in cand:
        return "candidate", "no PhysioNet CV figures: the candidate stays"
    dm = alt["cv"][rule]["patient"]["macc"] - cand["cv"][rule]["patient"]["macc"]
    cut = cand["cv_physionet"]["false_alarm"] - alt["cv_physionet"]["false_alarm"]
    ok = dm >= -MACC_TOLERANCE and cut >= MIN_FALSE_ALARM_CUT
    why = (
        f"CirCor CV per-patient MAcc {dm:+.3f} (allowed >= {-MACC_TOLERANCE:+.2f}), PhysioNet-normal CV false "
        f"alarms cut by {cut:.3f} (needed >= {MIN_FALSE_ALARM_CUT:.2f})"
    )
    return ("physionet" if ok else "candidate"), why


CV_ONLY_WHY = "cross-validation only (--cv-only): no recipe chosen, no final model trained"


def cv_recipe_names(recipes: dict[str, Recipe], wanted: tuple[str, ...] | None) -> list[str]:
    """The recipes to cross-validate (``wanted``, default all); a name the run cannot train fails loudly."""
    if unknown := sorted(set(wanted or ()) - set(recipes)):
        raise ValueError(f"cv_recipes {unknown}: not among {sorted(recipes)} (physionet needs PhysioNet data)")
    return [k for k in recipes if wanted is None or k in wanted]


def _features(recs: list[ds.Recording], workers: int) -> FeatureSet:
    """One FeatureSet over ``recs``, cached per source so adding PhysioNet leaves the CirCor cache valid."""
    parts = []
    for names in ((cc.CIRCOR, ds.PASCAL), (ds.PHYSIONET,)):
        sub = [r for r in recs if r.dataset in names]
        if sub:
            parts.append((sub, featurestore.build(sub, PARAMS, name="murmur", workers=workers)))
    position = {r.key: i for i, r in enumerate(recs)}
    feats, owners, skipped = [], [], []
    for sub, fs in parts:
        feats.append(fs.features)
        owners.append(np.array([position[sub[o].key] for o in fs.owner], dtype=np.int32))
        skipped += fs.skipped
    return FeatureSet(np.concatenate(feats), np.concatenate(owners), list(recs), skipped)


def split_indices(
    recs: list[ds.Recording], sites: list[Site], test_fraction: float, test_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (CirCor development, CirCor test, PASCAL, PhysioNet development, PhysioNet test)."""
    is_circor = np.array([r.dataset == cc.CIRCOR for r in recs])
    is_physionet = np.array([r.dataset == ds.PHYSIONET for r in recs])
    crecs = [(r, s) for r, s in zip(recs, sites, strict=True) if r.dataset == cc.CIRCOR]
    _, test_c = cc.split_patients(
        [cc.CircorRecording(r.path, s.patient, s.site, r.record_id, s.patient_murmur, (), "", "", r.group, ())
         for r, s in crecs],
        test_fraction, test_seed,
    )  # fmt: skip
    test_groups = {r.group for r in test_c}
    in_test = np.array([r.dataset == cc.CIRCOR and r.group in test_groups for r in recs])
    # PhysioNet in the order load_physionet2016 returns it, as the screening model's split needs
    p_test_keys = physionet_test_keys([r for r in recs if r.dataset == ds.PHYSIONET])
    p_in_test = np.array([r.key in p_test_keys for r in recs])
    return (
        np.flatnonzero(is_circor & ~in_test),
        np.flatnonzero(in_test),
        np.flatnonzero(np.array([r.dataset == ds.PASCAL for r in recs])),
        np.flatnonzero(is_physionet & ~p_in_test),
        np.flatnonzero(p_in_test),
    )


def run(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """The whole run (see the module docstring); writes report.json, split.json, each cross-validated recipe's
    out-of-fold scores (``write_oof``) and, unless ``cv_only``, model.h5 into ``out``."""
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    recs, sites, _ = load_recordings(
        Path(cfg.circor),
        Path(cfg.patients) if cfg.patients else None,
        Path(cfg.pascal) if cfg.pascal else None,
        Path(cfg.physionet) if cfg.physionet else None,
    )
    dev, test, pascal_idx, p_dev, p_test = split_indices(recs, sites, cfg.test_fraction, cfg.test_seed)
    fs = _features(recs, cfg.workers)
    y = targets(recs)
    folds = patient_folds(recs, dev, cfg.folds, 1)
    # PhysioNet blocks into the same number of folds (stratified by database and label)
    p_folds = np.array(ds.split_folds([recs[i] for i in p_dev], cfg.folds, 1)) if len(p_dev) else np.array([])
    recipes = {k: v for k, v in RECIPES.items() if len(p_dev) or not v.physionet_normals}
    cv_names = cv_recipe_names(recipes, cfg.cv_recipes)
    report: dict[str, Any] = {
        "task": NAME,
        "feature_params": PARAMS.to_dict(),
        "config": {
            **asdict(cfg),
            "seeds": list(cfg.seeds),
            "cv_recipes": cv_names,
            "physionet_test": {"folds": PHYSIONET_TEST_FOLDS, "seed": PHYSIONET_TEST_SEED, "fold": 0},
        },
        "recipes": {k: asdict(v) | {"epochs": cfg.epochs} for k, v in recipes.items()},
        "decision_rule": f"physionet replaces candidate if its CV per-patient MAcc (exam rule) >= candidate's - "
        f"{MACC_TOLERANCE} and its CV PhysioNet-normal false-alarm rate <= candidate's - {MIN_FALSE_ALARM_CUT}",
        "counts": {
            "dev_patients": len({sites[i].patient for i in dev}),
            "test_patients": len({sites[i].patient for i in test}),
            "dev_recordings": len(dev),
            "test_recordings": len(test),
            "pascal_recordings": len(pascal_idx),
            "physionet_dev_recordings": len(p_dev),
            "physionet_dev_normals": int(sum(recs[i].label == "absent" for i in p_dev)),
            "physionet_test_recordings": len(p_test),
            "skipped": len(fs.skipped),
        },
    }

    def fit(name: str, idx: np.ndarray, p_idx: np.ndarray, seed: int) -> Any:
        recipe = Recipe(**{**asdict(recipes[name]), "epochs": cfg.epochs})
        x, t = windows(fs, training_set(recipe, y, idx, pascal_idx, p_idx), y)
        return train_model(x, t, recipe, seed)

    results: dict[str, Any] = {name: {} for name in recipes}
    for name in cv_names:
        # cross-validation (first seed): out-of-fold scores choose the rule and the threshold
        oof = np.full(len(dev), np.nan)
        p_oof = np.full(len(p_dev), np.nan)
        for k in range(cfg.folds):
            model = fit(name, dev[folds != k], p_dev[p_folds != k] if len(p_dev) else p_dev, cfg.seeds[0])
            oof[folds == k] = record_scores(model, fs, dev[folds == k])
            if len(p_dev):
                p_oof[p_folds == k] = record_scores(model, fs, p_dev[p_folds == k])
            log.info("%s fold %d done (%.0f s)", name, k, time.monotonic() - t0)
        results[name] = cv_figures(recs, sites, (dev, folds, oof), (p_dev, p_folds, p_oof), cfg.folds)
        write_oof(
            out / oof_file_name(name, cfg.seeds[0]), recs, results[name]["threshold"],
            (dev, folds, oof), (p_dev, p_folds, p_oof),
        )  # fmt: skip
    chosen, why = (None, CV_ONLY_WHY) if cfg.cv_only else choose_recipe(results, MURMUR_RULE)
    log.info("chosen recipe: %s (%s)", chosen, why)
    # final models and the test splits: the chosen recipe and the plain baseline only; without score_test
    # only the shipped model (the chosen recipe's first seed): the others would be trained to be scored
    finals: tuple[str, ...] = () if chosen is None else (chosen, "baseline") if cfg.score_test else (chosen,)
    for name in dict.fromkeys(finals):
        threshold = results[name].get("threshold", 0.5)
        results[name]["threshold"] = threshold
        tests, p_tests = [], []
        for seed in cfg.seeds if cfg.score_test else cfg.seeds[:1]:
            model = fit(name, dev, p_dev, seed)
            if name == chosen and seed == cfg.seeds[0]:
                model.save(out / "model.h5")
            if not cfg.score_test:
                continue
            tests.append(scores(recs, sites, test, record_scores(model, fs, test), MURMUR_RULE, threshold))
            if len(p_test):
                p_tests.append(physionet_scores(recs, p_test, record_scores(model, fs, p_test), threshold))
            log.info("%s seed %d trained on all development data (%.0f s)", name, seed, time.monotonic() - t0)
        if not cfg.score_test:
            log.info("%s trained on all development data; test splits not scored (--score-test)", name)
            continue
        results[name] |= {
            "test_per_seed": tests,
            "test_mean": {"recording": _mean(tests, "recording"), "patient": _mean(tests, "patient")},
        }
        if p_tests:
            results[name]["test_physionet_per_seed"] = p_tests
    report |= {
        "rule": MURMUR_RULE,
        "chosen": chosen,
        "decision": why,
        "threshold": None if chosen is None else results[chosen]["threshold"],
        "test_split": held_out_status(cfg.score_test, not_scored_why(cfg.cv_only)),
        "results": results,
        "seconds": round(time.monotonic() - t0),
    }
    split = {
        "dev": [recs[i].key for i in dev],
        "test": [recs[i].key for i in test],
        "pascal": [recs[i].key for i in pascal_idx],
        "physionet_dev": [recs[i].key for i in p_dev],
        "physionet_test": [recs[i].key for i in p_test],
        "test_patients": sorted({sites[i].patient for i in test}),
    }
    (out / "split.json").write_text(json.dumps(split, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    return report


def not_scored_why(cv_only: bool) -> str:
    if cv_only:
        return "a cross-validation-only run (--cv-only): no final model met the test splits; split.json names them"
    return NOT_SCORED_WHY


def oof_file_name(recipe: str, seed: int) -> str:
    return f"oof_{recipe}_seed{seed}.json"


def write_oof(
    path: Path,
    recs: list[ds.Recording],
    threshold: float,
    circor: tuple[np.ndarray, np.ndarray, np.ndarray],
    physionet: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """A recipe's out-of-fold P(present) per development recording, each ``(recording indices, fold, P)``:
    {"circor": {key: P}, "physionet": {key: P}, "folds": {"circor": {key: fold}, ...}, "threshold": the pooled
    CV threshold under MURMUR_RULE, "unscored": keys the pipeline refused}. Keys are ds.Recording keys, as in
    the screening run's oof.json, so studies can pair the two models' scores; test splits never appear."""
    doc: dict[str, Any] = {"rule": MURMUR_RULE, "threshold": float(threshold), "folds": {}, "unscored": []}
    for source, (idx, folds, p) in (("circor", circor), ("physionet", physionet)):
        ok = np.isfinite(p)
        doc[source] = {recs[i].key: round(float(v), 5) for i, v in zip(idx[ok], p[ok], strict=True)}
        doc["folds"][source] = {recs[i].key: int(f) for i, f in zip(idx, folds, strict=True)}
        doc["unscored"] += [recs[i].key for i in idx[~ok]]
    path.write_text(json.dumps(doc))


NOT_SCORED_WHY = (
    "steth murmur train scores the test splits only with --score-test, so that they stay unseen until the final "
    "model (issue 23); only the shipped model trained, and split.json still names the splits for the parity check"
)


def ship(run_dir: Path, dest: Path, version: str, allow_shortfall: bool = False) -> dict[str, Any]:
    """Convert the run's model to int8, check it against the float model on the test recordings and on
    known non-heart signals, and write murmur.tflite/.json into ``dest`` (ParityError when a check fails)."""
    from converter import models
    from converter.convert import check_and_ship, convert_in_subprocess, model_file_fields, representative_windows

    report = json.loads((run_dir / "report.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    cfg = report["config"]
    chosen = report.get("chosen", "candidate")
    if chosen is None:
        raise ModelError(f"{run_dir} is a cross-validation-only run (--cv-only): it trained no model to convert")
    recipe = Recipe(**{k: v for k, v in report["recipes"][chosen].items() if k in Recipe.__dataclass_fields__})
    recs, _, _ = load_recordings(
        Path(cfg["circor"]),
        Path(cfg["patients"]) if cfg["patients"] else None,
        Path(cfg["pascal"]) if cfg["pascal"] else None,
        Path(cfg["physionet"]) if cfg.get("physionet") else None,
    )
    by_key = {r.key: r for r in recs}
    trained = split["dev"] + (split["pascal"] if recipe.pascal else [])
    if recipe.physionet_normals:
        trained += [k for k in split.get("physionet_dev", []) if k in by_key and by_key[k].label == "absent"]
    train_keys = [k for k in trained if k in by_key]
    # parity on both test splits: CirCor test patients and PhysioNet test normals (abnormal ones have no
    # murmur label to score MAcc with)
    test = [
        by_key[k] for k in split["test"] + split.get("physionet_test", []) if k in by_key and by_key[k].label in LABELS
    ]
    dev_fs = featurestore.build([by_key[k] for k in train_keys], PARAMS, name="murmur-rep", workers=cfg["workers"])
    rep = representative_windows(dev_fs.features)
    keras_model = models.keras().models.load_model(run_dir / "model.h5", compile=False)
    threshold = float(report["threshold"])
    cand = report["results"][chosen]
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
            "architecture": recipe.arch,
            "recipe": chosen,
            **model_file_fields(tflite, tf_version, PARAMS),
            "training_data": "murmur present (at the sites where it is heard) vs absent: CirCor DigiScope 2022 "
            f"development patients ({report['counts']['dev_patients']} patients outside the test split) and PASCAL "
            "2011 murmur vs normal recordings"
            + (
                f"; PhysioNet 2016 normal recordings outside its test split as absent "
                f"({report['counts'].get('physionet_dev_normals', 0)} recordings)"
                if recipe.physionet_normals
                else ""
            ),
            # `steth evaluate` warns when it scores recordings the model was trained on
            "training_recordings": sorted(k.rsplit("/", 1)[-1] for k in train_keys),
            "test_patients": split["test_patients"],
            "metrics": {
                "cv": cand["cv"],
                # None: the run did not score the test split (steth murmur train without --score-test)
                "test_mean_over_seeds": cand.get("test_mean"),
                "baseline_test_mean_over_seeds": report["results"]["baseline"].get("test_mean"),
                "seeds": cfg["seeds"],
                "test_split": f"{report['counts']['test_patients']} CirCor development patients "
                f"(converter.circor.split_patients, fraction {cfg['test_fraction']}, seed {cfg['test_seed']})",
                **(
                    {
                        "cv_physionet": cand["cv_physionet"],
                        "test_physionet_first_seed": cand["test_physionet_per_seed"][0],
                        "physionet_test_split": f"{report['counts']['physionet_test_recordings']} PhysioNet 2016 "
                        f"recordings (fold 0 of converter.datasets.split_folds, {PHYSIONET_TEST_FOLDS} folds, seed "
                        f"{PHYSIONET_TEST_SEED}: the screening model's test split)",
                    }
                    if "test_physionet_per_seed" in cand
                    else {}
                ),
            },
            "intended_use": "murmur screening support beside the screening label; not a diagnosis",
        }
        return check_and_ship(keras_model, tflite, meta, test, threshold, dest, allow_shortfall=allow_shortfall)


def register(sub: Any) -> None:
    p = sub.add_parser("murmur", help="train / convert the murmur model (CirCor + PASCAL + PhysioNet normals)")
    cmds = p.add_subparsers(dest="murmur_command", metavar="STEP")
    cmds.required = True
    t = cmds.add_parser(
        "train", help="CV, final models, baseline and (--score-test) test split scores into a run folder"
    )
    t.add_argument("--circor", required=True, help="CirCor folder (training_data/, training_data.csv)")
    t.add_argument("--patients", help="file of patient ids to use (default: development_patients.txt there)")
    t.add_argument("--pascal", help="PASCAL 2011 folder (normal and murmur recordings train too)")
    t.add_argument(
        "--physionet",
        help="data folder with physionet2016/: false alarms on its normals, and they train as absent "
        "in the physionet recipe (its test split, the screening model's, never trains)",
    )
    t.add_argument("--cv-recipes", help="comma-separated recipes to cross-validate (default: all)")
    t.add_argument("--out", type=Path, default=Path("artifacts") / "train" / NAME)
    t.add_argument("--seeds", default="0,1", help="comma-separated seeds of the final models")
    t.add_argument("--folds", type=int, default=5)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--workers", type=int, default=1, help="feature extraction processes")
    t.add_argument(
        "--score-test",
        action="store_true",
        help="train every seed's final model and the baseline's and score them on the test splits (off by default: "
        "only the shipped model trains and the test splits stay unseen until the final model, issue 23)",
    )
    t.add_argument(
        "--cv-only",
        action="store_true",
        help="stop after cross-validation: CV figures and out-of-fold scores (oof_RECIPE_seedS.json), no final model",
    )
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
        args.folds, epochs=args.epochs, workers=args.workers, physionet=args.physionet,
        cv_recipes=tuple(args.cv_recipes.split(",")) if args.cv_recipes else None, score_test=args.score_test,
        cv_only=args.cv_only,
    )  # fmt: skip
    report = run(cfg, args.out)
    for name, r in report["results"].items():
        if "cv" in r:
            pn = r.get("cv_physionet", {})
            print(
                f"{name}: CV per patient MAcc {r['cv'][report['rule']]['patient']['macc']:.3f}"
                + (f", PhysioNet-normal false alarms {pn['false_alarm']:.3f}, AUC {pn['auc']:.3f}" if pn else "")
            )
    print(f"chosen: {report['chosen']} ({report['decision']})" if report["chosen"] else report["decision"])
    for name, r in report["results"].items():
        if "test_mean" not in r:
            continue
        m = r["test_mean"]
        print(
            f"{name}: test per patient MAcc {m['patient']['macc']:.3f} AUC {m['patient']['auc']:.3f}, "
            f"per recording MAcc {m['recording']['macc']:.3f} AUC {m['recording']['auc']:.3f} "
            f"(mean of {len(cfg.seeds)} seeds)"
        )
        for pt in r.get("test_physionet_per_seed", [])[:1]:
            print(
                f"{name}: PhysioNet test (first seed) "
                + ", ".join(f"{db} false alarms {v['false_alarm']:.3f} AUC {v['auc']:.3f}" for db, v in pt.items())
            )
    if not report["test_split"]["scored"]:
        print(f"test splits: not scored ({report['test_split']['why']})")
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
