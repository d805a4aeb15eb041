"""`steth ensemble RUN_DIR`: the average of a run's final model and its comparator, as a run `steth convert` takes.

A `steth train` run with a comparator (screening: the same architecture trained without CirCor) holds two
models trained on the same folds: the final model on every source (model.h5) and the one without the
comparator's source (model_without_SOURCE.h5), with both models' out-of-fold CV probabilities (oof.json,
oof_comparator.json). Averaging the two was more robust than either in session 14's CV: on two seeds the
single models' PhysioNet AUC moved between 0.830 and 0.890 from run to run, the average's stayed at
0.898-0.904, and CirCor per patient kept most of the all-sources model's gain (docs/screening_all_sources).

This command judges the average on the run's CV, with the same procedure for all three models (the
candidate, the comparator and their average): for each fold, the threshold pooled over the other folds'
out-of-fold scores (converter.thresholds.pooled_threshold) applied to that fold. It writes RUN_DIR/ensemble/
(report.json, split.json, model.h5: one Keras graph averaging the two, converter.models.build_ensemble)
with the threshold pooled over all the average's out-of-fold scores, and scores the average once on the
run's test split if the run scored it (`steth train --score-test`): the average follows its run, so a run
that left the split unseen (issue 23) still has it unseen after this command.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from converter import featurestore, operating_point, thresholds
from converter.run_config import RunConfig
from converter.tasks import Task, task_of_run
from converter.train import cv_source_means, held_out_scored, held_out_status, score, ship_decision
from converter.trainer import record_probabilities
from device.core.errors import ModelError
from device.core.features import FeatureParams

MEMBERS = ("candidate", "comparator", "average")


def _oof(path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    (probs,) = d["probabilities"].values()  # one architecture per file: the chosen one
    return {**d, "p": np.asarray(probs, dtype=np.float64)}


def oof_pair(run_dir: Path) -> dict[str, Any]:
    """A run's out-of-fold class probabilities of the candidate (oof.json), the comparator
    (oof_comparator.json) and their mean (what `steth ensemble` ships), with the recordings they cover,
    their labels ``y``, ``database`` and ``fold`` (arrays)."""
    cand, comp = _oof(run_dir / "oof.json"), _oof(run_dir / "oof_comparator.json")
    if cand["records"] != comp["records"] or cand["fold"] != comp["fold"]:
        raise ModelError(
            "oof.json and oof_comparator.json do not cover the same recordings and folds", "rerun steth train"
        )
    return {
        "records": list(cand["records"]),
        "y": np.asarray(cand["y"]),
        "database": np.asarray(cand["database"]),
        "fold": np.asarray(cand["fold"]),
        "candidate": cand["p"],
        "comparator": comp["p"],
        "average": (cand["p"] + comp["p"]) / 2,
    }


def threshold_of(
    objective: str, task: Task, recs: list[ds.Recording], y: np.ndarray, probs: np.ndarray, strata: np.ndarray
) -> float:
    """The threshold ``objective`` chooses on these recordings' out-of-fold scores (thresholds.OBJECTIVES)."""
    pos = task.labels.index(task.positive or "")
    if objective == "databases":
        return thresholds.pooled_threshold(y, probs[:, pos], strata)
    if objective != "headline":
        raise ValueError(f"threshold objective {objective!r}: one of {', '.join(thresholds.OBJECTIVES)}")
    physionet = np.array([r.dataset == ds.PHYSIONET for r in recs])
    patient = np.array([cc.patient_of(r.key.rsplit("/", 1)[-1]) if r.dataset == cc.CIRCOR else "" for r in recs])
    return thresholds.headline_threshold((y == pos).astype(int), probs[:, pos], physionet, patient)


def nested_cv(
    task: Task,
    recs: list[ds.Recording],
    y: np.ndarray,
    probs: np.ndarray,
    strata: np.ndarray,
    folds: np.ndarray,
    objective: str = "databases",
) -> dict[str, Any]:
    """Fold k scored at the threshold ``objective`` chooses on the other folds' out-of-fold scores; means
    over folds."""
    entries = []
    for k in sorted(set(folds.tolist())):
        here = folds == k
        other = [r for r, h in zip(recs, here, strict=True) if not h]
        thr = threshold_of(objective, task, other, y[~here], probs[~here], strata[~here])
        fold_recs = [r for r, h in zip(recs, here, strict=True) if h]
        entries.append(
            {"fold": k, "threshold": thr, "scores": score(task, y[here], probs[here], strata[here], thr, fold_recs)}
        )
    return {"folds": entries, "means": cv_source_means(entries)}


def build_average(run_dir: Path, without: str) -> Any:
    """The Keras graph averaging the final model and the one trained without ``without``."""
    from converter import models

    k = models.keras()
    members = [k.models.load_model(run_dir / f, compile=False) for f in ("model.h5", f"model_without_{without}.h5")]
    arch = members[0].name
    shape, n_classes = tuple(members[0].input_shape[1:]), int(members[0].output_shape[-1])
    avg = models.build_ensemble(arch, shape, n_classes, len(members), cell_clip=models.cell_clip_of(members[0]))
    for i, m in enumerate(members):
        avg.get_layer(f"member{i}").set_weights(m.get_weights())
    # the graph must compute what it claims: the mean of the members' probabilities
    probe = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    want = np.mean([m.predict(probe, verbose=0) for m in members], axis=0)
    if not np.allclose(avg.predict(probe, verbose=0), want, atol=1e-5):
        raise ModelError("the averaged graph does not reproduce the mean of its members", "report this as a bug")
    return avg


def make(
    run_dir: Path,
    data_dir: Path,
    out: Path | None = None,
    transfer_threshold: bool = False,
    score_test: bool = False,
    objective: str = "databases",
) -> dict[str, Any]:
    """``transfer_threshold``: carry the pooled threshold over from the CV models (RUN/folds, `steth train
    --save-folds`) to the averaged final pair by the share of test-split recordings each flags
    (converter.operating_point; no label read). ``score_test``: score the average on the test split even
    though its run did not (`steth ensemble --score-test`, asked for once the average is final). ``objective``:
    what the threshold maximises on the out-of-fold scores, for the CV figures and the shipped threshold alike
    (thresholds.OBJECTIVES: "databases", mean MAcc over databases; "headline", the issue's own figures)."""
    report = json.loads((run_dir / "report.json").read_text())
    without = (report.get("comparator") or {}).get("trained_without")
    if not without or not (run_dir / "oof_comparator.json").exists():
        raise ModelError(
            f"{run_dir}: not a run with a comparator and its out-of-fold scores",
            "train with a task that names a comparator (screening) with steth train from session 14 on",
        )
    task = task_of_run(report)
    out = out or run_dir / "ensemble"
    out.mkdir(parents=True, exist_ok=True)

    pair = oof_pair(run_dir)
    by_key = {r.key: r for r in task.loader(data_dir)}  # data sets' own labels, as steth train scores them
    missing = [key for key in pair["records"] if key not in by_key]
    if missing:
        raise ModelError(
            f"{len(missing)} of the run's {len(pair['records'])} development recordings are not in {data_dir} "
            f"(first: {missing[0]})",
            "give the data folder the run was trained on (--data-dir or $STETH_DATA_DIR)",
        )
    recs = [by_key[key] for key in pair["records"]]
    y, strata, folds = pair["y"], pair["database"], pair["fold"]
    probs = {name: pair[name] for name in MEMBERS}
    cv = {name: nested_cv(task, recs, y, p, strata, folds, objective) for name, p in probs.items()}
    # steth train's own ship rule and margin, with the average in the candidate's place
    margin = float(report["config"].get("ship_margin", RunConfig().ship_margin))
    decision = ship_decision(cv["average"]["means"], cv["comparator"]["means"], margin)
    thr = threshold_of(objective, task, recs, y, probs["average"], strata)

    avg = build_average(run_dir, without)
    choice: dict[str, Any] = {
        "source": "the pooled out-of-fold CV scores of the average"
        + ("" if objective == "databases" else ", for mean(PhysioNet MAcc, CirCor per-patient MAcc)"),
        "objective": objective,
        "pooled_threshold": thr,
    }
    scored = held_out_scored(report) or score_test
    # the test split's features, built once for both uses (no label is read to build them)
    feats = _test_features(task, run_dir, report, by_key) if transfer_threshold or scored else None
    if transfer_threshold and feats is not None:
        choice["transfer"] = _transfer(avg, task, run_dir, report, feats, thr)
        if choice["transfer"]["moved"]:
            thr = choice["transfer"]["threshold"]
            choice["source"] = (
                "the pooled out-of-fold CV threshold carried over to the final pair by the share of test-split "
                "recordings the CV models flag at it (converter.operating_point)"
            )
    test_scores = test_scores_of(avg, task, feats, thr) if scored and feats is not None else None

    avg.save(out / "model.h5")
    shutil.copy(run_dir / "split.json", out / "split.json")
    if (run_dir / "boxplot.png").exists():
        shutil.copy(run_dir / "boxplot.png", out / "boxplot.png")
    members = ["model.h5 (every source)", f"model_without_{without}.h5"]
    ens_report = {
        **report,
        "threshold": thr,
        "threshold_choice": choice,
        "test": test_scores,
        "test_split": held_out_status(True) if test_scores is not None else held_out_status(False, NOT_SCORED_WHY),
        "ensemble": {
            "members": members,
            "how": "mean of the members' class probabilities per window (one int8 graph)",
            "from_run": str(run_dir),
            "cv_nested_pooled": {
                name: {"means": c["means"], "thresholds": [f["threshold"] for f in c["folds"]]}
                for name, c in cv.items()
            },
            "decision": decision,
        },
    }
    (out / "report.json").write_text(json.dumps(ens_report, indent=1, default=float))
    return ens_report


NOT_SCORED_WHY = (
    "steth ensemble scores the test split only when the run it averages did (steth train --score-test) or when "
    "asked (steth ensemble --score-test), so that "
    "it stays unseen until the final model (issue 23)"
)


def _test_features(
    task: Task, run_dir: Path, report: dict[str, Any], by_key: dict[str, ds.Recording]
) -> tuple[featurestore.FeatureSet, np.ndarray, list[ds.Recording]]:
    """The run's held-out test recordings' features, the indices of those with a window, and those recordings."""
    split = json.loads((run_dir / "split.json").read_text())
    test = [by_key[k] for k in split["test"] if k in by_key]
    params = FeatureParams.from_dict(report["feature_params"])
    fs = featurestore.build(test, params, name=f"{task.name}-ensemble-test", use_cache=False)
    kept = np.unique(fs.owner)
    return fs, kept, [test[i] for i in kept]


TestFeatures = tuple[featurestore.FeatureSet, np.ndarray, list[ds.Recording]]


def _transfer(
    avg: Any, task: Task, run_dir: Path, report: dict[str, Any], feats: TestFeatures, thr: float
) -> dict[str, Any]:
    """converter.operating_point.transfer from the CV fold pairs (each fold's model and its comparator,
    averaged as in the CV figures) to ``avg``, on the test split's inputs."""
    from converter import models
    from converter.train import COMPARATOR, fold_model_path

    arch, n_folds = report["chosen_arch"], int(report["config"]["folds"])
    pairs = [(fold_model_path(run_dir, arch, f), fold_model_path(run_dir, COMPARATOR, f)) for f in range(n_folds)]
    missing = [p for pair in pairs for p in pair if not p.exists()]
    if missing:
        raise ModelError(
            f"{run_dir}: {len(missing)} CV fold models missing (first: {missing[0]})",
            "train the run with steth train --save-folds, which keeps them in RUN/folds/",
        )
    fs, kept, _ = feats
    pos, n_classes, k = task.labels.index(task.positive or ""), len(task.labels), models.keras()
    reference = []
    for a, b in pairs:
        p = [record_probabilities(k.models.load_model(m, compile=False), fs, kept, n_classes)[:, pos] for m in (a, b)]
        reference.append((p[0] + p[1]) / 2)
    final = record_probabilities(avg, fs, kept, n_classes)[:, pos]
    return {
        **operating_point.transfer(reference, final, thr),
        "population": "the run's held-out test-split recordings, their inputs only (no label read)",
        "reference_models": [f"{a.name} + {b.name}" for a, b in pairs],
    }


def test_scores_of(avg: Any, task: Task, feats: TestFeatures, thr: float) -> dict[str, Any]:
    """The average on the run's held-out test split, at threshold ``thr``."""
    fs, kept, kept_recs = feats
    test_probs = record_probabilities(avg, fs, kept, len(task.labels))
    y_test = np.array([task.label_index(r) for r in kept_recs])
    return score(task, y_test, test_probs, np.array([r.subset for r in kept_recs]), thr, kept_recs)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ensemble",
        help="average a run's final model with its comparator, judged on the run's CV (and on its test split "
        "only if the run was made with steth train --score-test)",
    )
    p.add_argument("run_dir", type=Path, help="a `steth train` run folder with a comparator")
    p.add_argument("--data-dir", help=f"data folder (default: ${ds.DATA_ENV})")
    p.add_argument("--out", type=Path, help="where to write the averaged run (default: RUN_DIR/ensemble)")
    p.add_argument(
        "--threshold-objective",
        choices=thresholds.OBJECTIVES,
        default="databases",
        help="what the threshold maximises on the out-of-fold scores: mean MAcc over databases (default), or "
        "headline: mean(PhysioNet MAcc over all its recordings, CirCor per-patient MAcc)",
    )
    p.add_argument(
        "--score-test",
        action="store_true",
        help="score the average on the run's held-out test split even if the run did not (once, with the final "
        "average: the split stays unseen until then)",
    )
    p.add_argument(
        "--transfer-threshold",
        action="store_true",
        help="carry the CV threshold over to the final pair by the share of test-split recordings the CV fold "
        "models flag (no label read; needs steth train --save-folds)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    rep = make(
        args.run_dir,
        ds.resolve_data_dir(args.data_dir),
        args.out,
        args.transfer_threshold,
        args.score_test,
        args.threshold_objective,
    )
    e = rep["ensemble"]
    tr = rep["threshold_choice"].get("transfer")
    if tr:
        print(
            f"operating point on {tr['n_recordings']} test-split recordings (no label read): the CV models flag "
            f"{tr['reference_flag_rate']:.1%} at {tr['validated_threshold']:.3f}, "
            f"the final pair {tr['final_flag_rate']:.1%}"
            f" (rank correlation {tr['rank_correlation']:.3f}): "
            + (f"threshold moved to {tr['threshold']:.3f}" if tr["moved"] else "threshold kept")
        )
    print("CV, nested pooled thresholds (mean over folds, MAcc / AUC):")
    for name in MEMBERS:
        m = e["cv_nested_pooled"][name]["means"]
        cells = [
            f"{scope} {m[scope]['macc']:.3f} / {m[scope]['auc']:.3f}"
            for scope in ("physionet2016/all", "physionet2016/not_e", "circor2022/patient")
            if scope in m
        ]
        print(f"  {name:10s} " + "; ".join(cells))
    d = e["decision"]
    print(f"rule (average as the candidate): {d['rule']}: {'SHIP' if d['ship'] else 'DO NOT SHIP'}")
    if rep["test"] is None:
        print(f"threshold {rep['threshold']:.3f}; test split not scored ({rep['test_split']['why']})")
    else:
        sources = rep["test"].get("sources", {})
        print(f"threshold {rep['threshold']:.3f}; test split: {json.dumps(sources, default=float)[:600]}")
    where = args.out or args.run_dir / "ensemble"
    print(f"written to {where}; ship with: steth convert {where} --version X.Y.Z")
    return 0 if d["ship"] else 4
