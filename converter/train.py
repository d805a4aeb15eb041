"""`steth train`: compare model families honestly, estimate generalisation, train the shipped model.

1. A held-out test split (blocks of consecutive records, stratified by database and label) is set
   aside first and touched once, at the very end, and only when asked (``--score-test``).
2. Grouped, stratified k-fold cross-validation on the rest compares the architectures; inside each
   training fold a validation part picks the best epoch and the decision threshold.
3. Leave-one-database-out: the chosen architecture trained on five databases, tested on the sixth
   (a stethoscope and site it has never heard).
4. The final model is trained on all development data, scored on the out-of-domain checks its task
   names (screening: PASCAL set B) and, with ``--score-test`` only, once on the held-out split: a routine
   run leaves it unseen (issue 23), so that the split is still a test when the final model is.
Everything lands in the run folder: report.json, folds.csv, boxplot.png, the Keras model and its meta.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from converter import featurestore, thresholds
from converter.metrics import best_threshold, binary_scores, confusion, pascal_scores
from converter.overrides import parse_overrides, with_overrides
from converter.run_config import RunConfig
from converter.tasks import DEFAULT_TASK, TASKS, Check, Task, get_task
from converter.trainer import TrainSettings, fit, record_probabilities

log = logging.getLogger(__name__)
DEFAULT_RUNS = Path("artifacts") / "train"


@dataclass
class Data:
    task: Task
    recordings: list[ds.Recording]
    y: np.ndarray
    strata: np.ndarray  # database (subset) of each recording
    train_sets: list[featurestore.FeatureSet]
    eval_set: featurestore.FeatureSet


def load_data(task: Task, root: Path, cfg: RunConfig) -> Data:
    recs = task.loader(root)
    if cfg.limit_per_stratum:
        rng = np.random.default_rng(cfg.settings.seed)
        by: dict[tuple[str, str | None], list[ds.Recording]] = {}
        for r in recs:
            by.setdefault((r.subset, r.label), []).append(r)
        recs = [
            r
            for key in sorted(by, key=str)
            for r in rng.permutation(np.array(by[key], dtype=object))[: cfg.limit_per_stratum].tolist()
        ]
        recs.sort(key=lambda r: r.key)
    y = np.array([task.label_index(r) for r in recs])
    strata = np.array([r.subset for r in recs])
    name = f"{task.name}{'-limit' + str(cfg.limit_per_stratum) if cfg.limit_per_stratum else ''}"
    use_cache = cfg.limit_per_stratum is None
    params = cfg.params(task)
    clean = featurestore.build(recs, params, train_hop_s=cfg.train_hop_s, name=name, use_cache=use_cache)
    sets = [clean] + [
        featurestore.build(
            recs,
            params,
            train_hop_s=cfg.train_hop_s,
            name=name,
            use_cache=use_cache,
            augment_seed=cfg.settings.seed + i + 1,
        )
        for i in range(cfg.augment_copies)
    ]
    eval_set = featurestore.build(recs, params, name=name + "-eval", use_cache=use_cache)
    for key, reason in clean.skipped:
        log.warning("skipped %s: %s", key, reason)
    return Data(task, recs, y, strata, sets, eval_set)


def inner_split(records: np.ndarray, data: Data, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A validation part of a training set, by blocks, stratified like the outer split."""
    subset = [data.recordings[i] for i in records]
    k = max(2, round(1 / fraction))
    folds = np.array(ds.split_folds(subset, k, seed=seed + 7))
    fit_part, val_part = records[folds != 0], records[folds == 0]
    if len(fit_part) == 0 or len(val_part) == 0:
        # Only on toy slices: too few blocks for two parts, so validate on the training records.
        log.warning("too few recordings (%d) for a separate validation part", len(records))
        return records, records
    return fit_part, val_part


def score(
    task: Task,
    y: np.ndarray,
    probs: np.ndarray,
    strata: np.ndarray,
    threshold: float,
    recordings: list[ds.Recording] | None = None,
) -> dict[str, Any]:
    """Overall, per database, and (screening) over every database except training-e; with ``recordings``
    of several data sets (binary tasks) also per source (``source_scores``)."""
    if task.positive is not None:
        s = probs[:, task.labels.index(task.positive)]
        out: dict[str, Any] = {"all": binary_scores(y, s, threshold), "per_db": {}}
        for g in sorted(set(strata)):
            out["per_db"][g] = binary_scores(y[strata == g], s[strata == g], threshold)
        not_e = strata != "training-e"
        if not_e.any() and (~not_e).any():
            out["not_e"] = binary_scores(y[not_e], s[not_e], threshold)
        if recordings is not None and len(task.train_on) > 1:
            out["sources"] = source_scores(task, recordings, y, s, threshold)
        return out
    pred = probs.argmax(1)
    labels = list(task.labels)
    res: dict[str, Any] = {}
    for name, m in [("all", np.ones(len(y), bool))] + [(g, strata == g) for g in sorted(set(strata))]:
        cm = confusion([labels[i] for i in y[m]], [labels[i] for i in pred[m]], labels)
        res[name] = {**pascal_scores(cm, labels), "confusion": cm.tolist()}
    return {"all": res["all"], "per_db": {g: res[g] for g in sorted(set(strata))}}


def source_scores(
    task: Task, recordings: list[ds.Recording], y: np.ndarray, s: np.ndarray, threshold: float
) -> dict[str, dict[str, Any]]:
    """Per data set: all its recordings; PhysioNet also outside training-e ("not_e"); CirCor also per
    patient: "patient" by the device's exam rule (device/core/exam.py: the mean score of the patient's
    scored recordings against the threshold) and "patient_any" by the earlier rule (the highest score,
    abnormal if any recording is; kept for comparison with runs before session 14). A patient's scored
    recordings share one label (murmur sites of a Present patient, every site of an Absent one)."""
    pos = task.labels.index(task.positive or "")
    y = (np.asarray(y) == pos).astype(int)
    names = np.array([r.dataset for r in recordings])
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names)):
        m = names == name
        entry = {"all": binary_scores(y[m], s[m], threshold)}
        if name == ds.PHYSIONET:
            not_e = m & np.array([r.subset != "training-e" for r in recordings])
            entry["not_e"] = binary_scores(y[not_e], s[not_e], threshold)
        if name == cc.CIRCOR:
            by: dict[str, list[int]] = {}
            for i in np.flatnonzero(m):
                by.setdefault(cc.patient_of(recordings[i].record_id), []).append(int(i))
            yp = np.array([y[v].max() for v in by.values()])
            entry["patient"] = binary_scores(yp, np.array([s[v].mean() for v in by.values()]), threshold)
            entry["patient_any"] = binary_scores(yp, np.array([s[v].max() for v in by.values()]), threshold)
        out[name] = entry
    return out


# The figures of a source that make up a multi-source task's headline (see `headline`).
HEADLINE_PARTS = ((ds.PHYSIONET, "not_e"), (cc.CIRCOR, "patient"))


def train_and_score(
    arch: str, data: Data, train_recs: np.ndarray, test_recs: np.ndarray | None, *, cfg: RunConfig, seed: int
) -> tuple[Any, float, dict[str, Any], np.ndarray]:
    """The model, its validation threshold, and its scores and probabilities on ``test_recs`` (None: trained
    only, nothing predicted; the scores are then empty and the probabilities have no rows)."""
    fit_recs, val_recs = inner_split(train_recs, data, cfg.val_fraction, seed)
    settings = TrainSettings(**{**asdict(cfg.settings), "seed": seed})
    model, val_probs, _ = fit(
        arch,
        train_sets=data.train_sets,
        eval_set=data.eval_set,
        y=data.y,
        strata=data.strata,
        fit_records=fit_recs,
        val_records=val_recs,
        n_classes=len(data.task.labels),
        settings=settings,
    )
    threshold = 0.5
    if data.task.positive is not None:
        pos = data.task.labels.index(data.task.positive)
        threshold = best_threshold(data.y[val_recs], val_probs[:, pos], data.strata[val_recs])
    if test_recs is None:
        return model, threshold, {}, np.empty((0, len(data.task.labels)))
    probs = record_probabilities(model, data.eval_set, test_recs, len(data.task.labels))
    recs = [data.recordings[i] for i in test_recs]
    s = score(data.task, data.y[test_recs], probs, data.strata[test_recs], threshold, recs)
    return model, threshold, s, probs


@dataclass(frozen=True)
class Job:
    """One training: ``arch`` on ``train`` recordings, scored on ``test``; the model saved if asked.

    ``scored`` False: trained (and saved) only, ``test`` never predicted; its result then holds no scores
    (``{}``) and no probabilities (no rows). The final and cross-source models of a run without
    ``--score-test``: the held-out split stays unseen."""

    arch: str
    train: np.ndarray
    test: np.ndarray
    seed: int
    save_to: str | None = None
    scored: bool = True


_worker: dict[str, Any] = {}


def _start_worker(task: Task, root: Path, cfg: RunConfig) -> None:
    import tensorflow as tf

    # One thread per process: small-batch recurrent training uses a second core poorly, a second
    # process well (two fits at once finish in ~60% of the time of two fits one after the other).
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    # A spawned process starts with no logging set up: show each epoch as the parent would.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("converter").setLevel(logging.INFO)
    _worker["data"] = load_data(task, root, cfg)
    _worker["cfg"] = cfg


JobResult = tuple[float, dict[str, Any], np.ndarray]  # (validation threshold, scores, test probabilities)


def _run_job(job: Job, data: Data | None = None, cfg: RunConfig | None = None) -> JobResult:
    data, cfg = data or _worker["data"], cfg or _worker["cfg"]
    test = job.test if job.scored else None
    model, thr, s, probs = train_and_score(job.arch, data, job.train, test, cfg=cfg, seed=job.seed)
    if job.save_to:
        Path(job.save_to).parent.mkdir(parents=True, exist_ok=True)
        model.save(job.save_to)
    return thr, s, probs


class Runner:
    """Runs Jobs in this process (``cfg.jobs`` 1) or in a pool of worker processes, results in order."""

    def __init__(self, task: Task, root: Path, cfg: RunConfig, data: Data) -> None:
        self.data, self.cfg = data, cfg
        self.pool: Any = None
        if cfg.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: TensorFlow's threads do not survive a fork.
            self.pool = ProcessPoolExecutor(
                cfg.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(task, root, cfg),
            )

    def map(self, jobs: list[Job]) -> Iterator[JobResult]:
        """Results in the order of ``jobs``, each as soon as it and those before it are done."""
        if self.pool is None:
            return (_run_job(j, self.data, self.cfg) for j in jobs)
        return self.pool.map(_run_job, jobs)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def splits(
    data: Data, cfg: RunConfig, split_seed: int | None = None, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(development indices, held-out indices, CV fold of each development recording).

    A task with its own ``[split]`` (and ``root``, where a "patients" rule reads its data set) holds out
    what that names, whatever the run's seed; otherwise blocks of every data set with the run's seed."""
    seed = cfg.settings.seed if split_seed is None else split_seed
    all_idx = np.arange(len(data.recordings))
    if data.task.split is not None and root is not None:
        held = data.task.split.held_out(data.recordings, root)
        dev_idx, test_idx = all_idx[~held], all_idx[held]
    else:
        folds_all = np.array(ds.split_folds(data.recordings, max(2, round(1 / cfg.test_fraction)), seed=seed))
        dev_idx, test_idx = all_idx[folds_all != 0], all_idx[folds_all == 0]
    dev_recs = [data.recordings[i] for i in dev_idx]
    return dev_idx, test_idx, np.array(ds.split_folds(dev_recs, cfg.folds, seed=seed + 1))


def lodo_databases(data: Data, dev_idx: np.ndarray) -> list[str]:
    """Databases that can be left out: (binary tasks) the other databases still hold both labels; not
    those of a data set the task's split only trains on (PASCAL in screening)."""
    train_only = {d for d, r in data.task.split.rules.items() if r.rule == "train_only"} if data.task.split else set()
    skip = {r.subset for r in data.recordings if r.dataset in train_only}
    dbs = []
    # the largest databases first (their figures say the most; a run cut short keeps them)
    sizes = {db: int(np.sum(data.strata[dev_idx] == db)) for db in set(data.strata[dev_idx]) - skip}
    for db in sorted(sizes, key=lambda d: (-sizes[d], d)):
        rest = dev_idx[data.strata[dev_idx] != db]
        if data.task.positive is not None and len(set(data.y[rest])) < len(data.task.labels):
            continue
        dbs.append(db)
    return dbs


def headline(task: Task, s: dict[str, Any]) -> float:
    """The number the architectures are ranked by.

    A binary task trained on several sources: the mean of PhysioNet's MAcc outside training-e (the
    databases unlike training-e, where 0.4.0 fell short) and CirCor's MAcc per patient (a nurse's exam:
    the mean score over the patient's recordings, as the device decides), the two things the kit must get
    right on stethoscopes it was not tuned on; whichever of the two the scores hold. One source (screening
    before issue 23): MAcc outside training-e. Multi-class tasks: mean recall per class."""
    parts = [
        float(s["sources"][name][part]["macc"])
        for name, part in HEADLINE_PARTS
        if name in s.get("sources", {}) and part in s["sources"][name]
    ]
    parts = [p for p in parts if not np.isnan(p)]
    if parts:
        return float(np.mean(parts))
    if task.positive is not None:
        return float(s.get("not_e", s["all"])["macc"])
    return float(np.mean([v["sensitivity"] for v in s["all"]["per_class"].values() if not np.isnan(v["sensitivity"])]))


def run(root: Path, out: Path, cfg: RunConfig) -> dict[str, Any]:
    task = get_task(cfg.task)
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(task, root, cfg)  # builds the feature cache that worker processes then load
    runner = Runner(task, root, cfg, data)
    dev_idx, test_idx, cv_folds = splits(data, cfg, root=root)
    log.info("%d recordings: %d development, %d held out", len(data.recordings), len(dev_idx), len(test_idx))
    report: dict[str, Any] = {
        "task": task.name,
        "task_definition": task.to_dict(),  # `steth convert` writes the sidecar from it
        "labels": task.labels,
        "config": asdict(cfg),
        "feature_params": cfg.params(task).to_dict(),
        "n_recordings": len(data.recordings),
        "n_dev": len(dev_idx),
        "n_test": len(test_idx),
        "n_test_per_source": {
            d: int(sum(data.recordings[i].dataset == d for i in test_idx)) for d in sorted(set(task.train_on))
        },
        "cv": [],
        "lodo": [],
    }

    # 1. cross-validation over the development data
    rows = []
    oof = {a: np.full((len(data.recordings), len(task.labels)), np.nan) for a in cfg.archs}
    cv_jobs = [
        Job(
            arch,
            dev_idx[cv_folds != f],
            dev_idx[cv_folds == f],
            cfg.settings.seed + f,
            save_to=str(fold_model_path(out, arch, f)) if cfg.save_folds else None,
        )
        for arch in cfg.archs
        for f in range(cfg.folds)
    ]
    for job, (thr, s, probs) in zip(cv_jobs, runner.map(cv_jobs), strict=True):
        f = job.seed - cfg.settings.seed
        oof[job.arch][job.test] = probs
        report["cv"].append({"arch": job.arch, "fold": f, "threshold": thr, "scores": s})
        rows += _rows(job.arch, f, s)
        log.info("CV %s fold %d: headline %.3f", job.arch, f, headline(task, s))
    _write_csv(out / "folds.csv", rows)
    means = {
        a: float(np.mean([headline(task, c["scores"]) for c in report["cv"] if c["arch"] == a])) for a in cfg.archs
    }
    chosen = max(means, key=lambda a: means[a])
    report["cv_headline_means"] = means
    report["chosen_arch"] = chosen
    log.info("chosen architecture: %s (%s)", chosen, means)

    # 2. leave one database out (screening: PhysioNet's six databases and CirCor; sound type: set A vs
    # set B), 3. the final model on all development data (scored once on the held-out split with
    # --score-test only), and (several sources) 4. the cross-source models and 5. the comparator's CV:
    # independent trainings, side by side.
    report["test_split"] = held_out_status(cfg.score_test)
    (val_thr, test_scores, test_probs), lodo = _final_and_reported(
        runner, data, cfg, report, dev_idx, test_idx, cv_folds, out
    )
    thr = val_thr
    if task.positive is not None:
        thr = _threshold_from_cv(report, data, dev_idx, cv_folds, oof[chosen], val_thr)
        if cfg.score_test:
            # scored once more only because the threshold may differ from the one the job applied
            test_recs = [data.recordings[i] for i in test_idx]
            test_scores = score(task, data.y[test_idx], test_probs, data.strata[test_idx], thr, test_recs)
    report["threshold"] = thr
    report["test"] = test_scores if cfg.score_test else None
    if not cfg.score_test:
        log.info("held-out test split (%d recordings) not scored: %s", len(test_idx), report["test_split"]["why"])
    _write_oof(out / "oof.json", data, dev_idx, cv_folds, oof)
    from converter import models

    model = models.keras().models.load_model(out / "model.h5", compile=False)
    split = {"dev": [data.recordings[i].key for i in dev_idx], "test": [data.recordings[i].key for i in test_idx]}
    (out / "split.json").write_text(json.dumps(split))
    for check in task.checks if task.positive is not None else ():
        report[check.name] = _out_of_domain_check(model, task, check, root, thr, cfg)
    report["seconds"] = report["seconds_before_lodo"] = round(time.monotonic() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_jsonable))
    for db, (db_thr, s, _) in lodo:
        report["lodo"].append({"held_out_db": db, "threshold": db_thr, "scores": s})
        log.info("LODO %s: %s", db, json.dumps(s["all"], default=float)[:200])
        report["seconds"] = round(time.monotonic() - t0, 1)
        (out / "report.json").write_text(json.dumps(report, indent=1, default=_jsonable))
    runner.close()
    from converter.report import boxplot

    boxplot(rows, out / "boxplot.png", task.name)
    return report


FOLDS_DIR = "folds"
COMPARATOR = "comparator"


def fold_model_path(run_dir: Path, arch: str, fold: int) -> Path:
    """Where `steth train --save-folds` keeps CV fold ``fold``'s model of ``arch`` (or of the comparator,
    ``arch`` = COMPARATOR)."""
    return run_dir / FOLDS_DIR / f"{arch}_fold{fold}.h5"


NOT_SCORED_WHY = (
    "steth train scores the held-out test split only with --score-test, so that it stays unseen until the final "
    "model (issue 23); split.json still names it, for steth convert's int8 parity check"
)


def held_out_status(scored: bool, why_not: str = NOT_SCORED_WHY) -> dict[str, Any]:
    """``report["test_split"]``: whether the run scored the held-out split, and why (not); the same record for
    `steth train`, `steth murmur train` and `steth ensemble`, each with its own reason when it did not."""
    return {"scored": scored, "why": "scored once, as asked with --score-test" if scored else why_not}


def held_out_scored(report: dict[str, Any]) -> bool:
    """Whether a run's report holds test-split figures (runs made before --score-test always scored it)."""
    return report.get("test") is not None


def cv_source_means(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean over CV folds of each per-source figure ("physionet2016/not_e" -> {"macc": ..., ...})."""
    acc: dict[str, dict[str, list[float]]] = {}
    for e in entries:
        for name, parts in e["scores"].get("sources", {}).items():
            for part, v in parts.items():
                for k in ("macc", "sensitivity", "specificity", "auc"):
                    acc.setdefault(f"{name}/{part}", {}).setdefault(k, []).append(float(v[k]))
    return {scope: {k: float(np.nanmean(v)) for k, v in m.items()} for scope, m in acc.items()}


def ship_decision(
    candidate: dict[str, dict[str, float]], comparator: dict[str, dict[str, float]], margin: float
) -> dict[str, Any]:
    """The rule fixed before the test split is scored (issue 23): ship the all-sources model only if, in
    this run's CV, its PhysioNet MAcc (all databases and outside training-e) is no more than ``margin``
    below the model trained without CirCor, and its CirCor MAcc per patient is higher."""

    def get(m: dict[str, dict[str, float]], scope: str) -> float:
        return float(m.get(scope, {}).get("macc", float("nan")))

    checks = {
        scope: {"candidate": get(candidate, scope), "comparator": get(comparator, scope)}
        for scope in (f"{ds.PHYSIONET}/all", f"{ds.PHYSIONET}/not_e", f"{cc.CIRCOR}/patient")
    }
    ok_physionet = all(
        checks[s]["candidate"] >= checks[s]["comparator"] - margin
        for s in (f"{ds.PHYSIONET}/all", f"{ds.PHYSIONET}/not_e")
    )
    ok_circor = checks[f"{cc.CIRCOR}/patient"]["candidate"] > checks[f"{cc.CIRCOR}/patient"]["comparator"]
    return {
        "rule": f"PhysioNet CV MAcc (all, not_e) >= comparator - {margin}; CirCor CV per-patient MAcc > comparator",
        "margin": margin,
        "figures": checks,
        "physionet_within_margin": ok_physionet,
        "circor_better": ok_circor,
        "ship": bool(ok_physionet and ok_circor),
    }


def _final_and_reported(
    runner: Runner,
    data: Data,
    cfg: RunConfig,
    report: dict[str, Any],
    dev_idx: np.ndarray,
    test_idx: np.ndarray,
    cv_folds: np.ndarray,
    out: Path,
) -> tuple[JobResult, Iterator[tuple[str, JobResult]]]:
    """The trainings after CV, side by side: the final model (its result returned), the cross-source
    models and the comparator's CV (these into ``report``), and leave-one-database-out (its results
    returned as they come)."""
    task, chosen = data.task, report["chosen_arch"]
    lodo_dbs = lodo_databases(data, dev_idx) if cfg.lodo else []
    scored = cfg.score_test  # without it the final and cross-source models are trained and saved, not scored
    final = Job(chosen, dev_idx, test_idx, cfg.settings.seed + 1000, save_to=str(out / "model.h5"), scored=scored)
    source = np.array([r.dataset for r in data.recordings])
    # 4. cross-source models: the chosen architecture trained without one source, scored on the test split
    # with --score-test (report only: nothing is chosen with them). Without CirCor it is also the plain
    # comparison; without the test split the comparator's CV (5.) gives its transfer out of fold.
    without = [d for d in cfg.cross_source if d in task.train_on and len(task.train_on) > 1]
    # saved: `steth ensemble` averages the final model with the one trained without the comparator's source
    cross = [
        Job(
            chosen,
            dev_idx[source[dev_idx] != d],
            test_idx,
            cfg.settings.seed + 1000,
            save_to=str(out / f"model_without_{d}.h5"),
            scored=scored,
        )
        for d in without
    ]
    # 5. the comparator's CV (the same folds, the source left out of each training part) for the ship decision
    comp = cfg.comparator_without if cfg.comparator_without in task.train_on and len(task.train_on) > 1 else ""
    comp_cv = [
        Job(
            chosen,
            dev_idx[(cv_folds != f) & (source[dev_idx] != comp)],
            dev_idx[cv_folds == f],
            cfg.settings.seed + f,
            save_to=str(fold_model_path(out, COMPARATOR, f)) if cfg.save_folds else None,
        )
        for f in range(cfg.folds)
        if comp
    ]
    lodo_jobs = [
        Job(chosen, dev_idx[data.strata[dev_idx] != db], dev_idx[data.strata[dev_idx] == db], cfg.settings.seed + 100)
        for db in lodo_dbs
    ]
    # LODO last: the run's report is complete (and written) before it, each LODO figure added as it comes
    results_in_order = runner.map([final, *cross, *comp_cv, *lodo_jobs])
    n_cross, n_comp = len(cross), len(comp_cv)
    results = [next(results_in_order) for _ in range(1 + n_cross + n_comp)]
    comp_results = results[1 + n_cross : 1 + n_cross + n_comp]
    comp_entries = [
        {"arch": chosen, "fold": f, "threshold": thr, "scores": s} for f, (thr, s, _) in enumerate(comp_results)
    ]
    report["cross_source"] = [
        {"trained_without": d, "threshold": thr, "test": s if scored else None}
        # test split not scored: the chosen architecture trained without the comparator's source is judged
        # on that source out of fold by the comparator's CV (the same folds; mean over folds) instead
        | ({"cv_source_means": cv_source_means(comp_entries)} if not scored and d == comp else {})
        for d, (thr, s, _) in zip(without, results[1 : 1 + n_cross], strict=True)
    ]
    report["comparator"] = {"trained_without": comp, "cv": comp_entries}
    if comp:
        # the comparator's out-of-fold probabilities too, for threshold studies on both models' CV
        comp_oof = np.full((len(data.recordings), len(task.labels)), np.nan)
        for job, (_, _, probs) in zip(comp_cv, comp_results, strict=True):
            comp_oof[job.test] = probs
        _write_oof(out / "oof_comparator.json", data, dev_idx, cv_folds, {chosen: comp_oof})
    report["cv_source_means"] = {a: cv_source_means([c for c in report["cv"] if c["arch"] == a]) for a in cfg.archs}
    if comp:
        report["comparator"]["cv_source_means"] = cv_source_means(report["comparator"]["cv"])
        report["ship_decision"] = ship_decision(
            report["cv_source_means"][chosen], report["comparator"]["cv_source_means"], cfg.ship_margin
        )
    return results[0], zip(lodo_dbs, results_in_order, strict=True)


def _threshold_from_cv(
    report: dict[str, Any], data: Data, dev_idx: np.ndarray, cv_folds: np.ndarray, oof: np.ndarray, val_thr: float
) -> float:
    """The shipped threshold: pooled over out-of-fold CV scores if that transfers better (see thresholds)."""
    pos = data.task.labels.index(data.task.positive or "")
    y, s, strata = data.y[dev_idx], oof[dev_idx, pos], data.strata[dev_idx]
    val_thresholds = [c["threshold"] for c in report["cv"] if c["arch"] == report["chosen_arch"]]
    check = thresholds.transfer_check(y, s, strata, cv_folds, val_thresholds)
    pooled = thresholds.pooled_threshold(y, s, strata)
    thr, source = thresholds.choose(check, val_thr, pooled)
    report["threshold_choice"] = {
        "validation_threshold": val_thr,
        "pooled_threshold": pooled,
        "source": source,
        "transfer_check": check,
    }
    log.info("threshold %.3f from %s (validation %.3f, pooled %.3f)", thr, source, val_thr, pooled)
    return thr


def _write_oof(path: Path, data: Data, dev_idx: np.ndarray, cv_folds: np.ndarray, oof: dict[str, np.ndarray]) -> None:
    """Out-of-fold CV probabilities per development recording, for later threshold or ensemble studies."""
    rows = {
        "labels": list(data.task.labels),
        "records": [data.recordings[i].key for i in dev_idx],
        "y": data.y[dev_idx].tolist(),
        "database": data.strata[dev_idx].tolist(),
        "fold": cv_folds.tolist(),
        "probabilities": {a: np.round(p[dev_idx], 5).tolist() for a, p in oof.items()},
    }
    path.write_text(json.dumps(rows))


def _out_of_domain_check(
    model: Any, task: Task, check: Check, root: Path, threshold: float, cfg: RunConfig
) -> dict[str, Any] | None:
    """A binary task's final model on another stethoscope's recordings (screening: PASCAL set B, DigiScope)."""
    try:
        recs = task.check_recordings(check, root)
    except ds.DatasetError:
        return None
    fs = featurestore.build(recs, cfg.params(task), name=f"{check.name}-{task.name}-eval")
    kept = np.unique(fs.owner)
    pos = task.labels.index(task.positive or "")
    y = np.array([task.label_of(recs[i]) == task.positive for i in kept], dtype=int)
    probs = record_probabilities(model, fs, kept, len(task.labels))
    return {"n": len(kept), "skipped_short": len(recs) - len(kept), **binary_scores(y, probs[:, pos], threshold)}


def _rows(arch: str, fold: int, s: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    scopes = {"all": s["all"], **({"not_e": s["not_e"]} if "not_e" in s else {}), **s.get("per_db", {})}
    scopes |= {f"{name}/{part}": v for name, parts in s.get("sources", {}).items() for part, v in parts.items()}
    for scope, v in scopes.items():
        flat = {k: v[k] for k in ("sensitivity", "specificity", "macc", "accuracy", "auc", "n") if k in v}
        if "per_class" in v:
            flat = {"accuracy": v["accuracy"], **{f"recall_{c}": pc["sensitivity"] for c, pc in v["per_class"].items()}}
        rows.append({"arch": arch, "fold": fold, "scope": scope, **flat})
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="compare model families (CV, leave-one-database-out) and train the shipped one")
    p.add_argument("data_dir", nargs="?", help=f"data folder (default: ${ds.DATA_ENV})")
    p.add_argument("--task", default=DEFAULT_TASK, help=f"{', '.join(TASKS)} or a task definition file (.toml)")
    p.add_argument("--out", type=Path, help="run folder (default: artifacts/train/TASK)")
    p.add_argument("--archs", help="comma-separated architectures (default: the task's)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    p.add_argument("--windows-per-epoch", type=int, default=TrainSettings.windows_per_epoch)
    p.add_argument("--augment", type=int, default=1, help="augmented copies of the training windows")
    p.add_argument("--no-lodo", action="store_true", help="skip leave-one-database-out")
    p.add_argument(
        "--score-test",
        action="store_true",
        help="score the final and cross-source models on the held-out test split (off by default: the split "
        "stays unseen until the final model, issue 23; split.json still names it for steth convert's parity check)",
    )
    p.add_argument(
        "--save-folds",
        action="store_true",
        help="keep every CV model (and the comparator's) in RUN/folds/, for steth ensemble --transfer-threshold",
    )
    p.add_argument("--limit", type=int, help="at most N recordings per database and label (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--domain-adversarial",
        type=float,
        metavar="LAMBDA",
        help="gradient reversal factor of the database head (0: no database head; default: the task's, "
        + ", ".join(f"{t.name} {t.domain_adversarial:g}" for t in TASKS.values())
        + ")",
    )
    p.add_argument("--jobs", type=int, default=2, help="models trained at once, one process and thread each")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further setting, as `steth ablate --set` takes it (repeatable), so a recipe compared there "
        "trains the same way here: features.cmvn=recording-mean, database_scale=training-e=0.5, ...",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)  # a mistyped setting fails before TensorFlow loads
    task = get_task(args.task)  # so does an unknown task or a broken definition

    from converter import models

    logging.getLogger("converter").setLevel(logging.INFO)
    archs = tuple(a.strip() for a in args.archs.split(",") if a.strip()) if args.archs else task.architectures
    unknown = [a for a in archs if a not in models.ARCHITECTURES]
    if unknown:
        raise ds.DatasetError(f"unknown architecture(s) {unknown}", f"choose from {', '.join(models.ARCHITECTURES)}")
    cfg = RunConfig(
        task=args.task,
        archs=archs,
        folds=args.folds,
        augment_copies=args.augment,
        lodo=not args.no_lodo,
        score_test=args.score_test,
        save_folds=args.save_folds,
        limit_per_stratum=args.limit,
        jobs=max(1, args.jobs),
        settings=TrainSettings(
            epochs=args.epochs,
            windows_per_epoch=args.windows_per_epoch,
            seed=args.seed,
            domain_adversarial=(
                task.domain_adversarial if args.domain_adversarial is None else args.domain_adversarial
            ),
        ),
    )
    cfg = with_overrides(cfg, overrides)
    root = ds.resolve_data_dir(args.data_dir)
    out = args.out or DEFAULT_RUNS / task.name
    report = run(root, out, cfg)
    print(f"chosen: {report['chosen_arch']}  CV means: {report['cv_headline_means']}")
    if held_out_scored(report):
        print(f"held-out test: {json.dumps(report['test']['all'], default=_jsonable)}")
    else:
        print(f"held-out test split: not scored ({report['test_split']['why']})")
    if "ship_decision" in report:
        print(f"ship decision (CV only): {json.dumps(report['ship_decision'], default=_jsonable)}")
    print(f"run folder: {out}")
    return 0
