"""Is the all-sources screening model's PhysioNet loss its threshold? Nested threshold procedures on CV.

    python -m research.screening_thresholds RUN_DIR [--json OUT]

RUN_DIR is a `steth train --task screening` run that wrote oof.json (the candidate, trained on every
source) and oof_comparator.json (the same architecture and folds without CirCor). Every development
recording has one out-of-fold P(abnormal) per model. For fold k a threshold is chosen on the OTHER folds'
out-of-fold scores (nested: fold k's recordings play no part) and applied to fold k:

  T0  fold k's model's own validation threshold (report.json; what `steth train`'s CV figures use)
  T1  pooled: maximise MAcc (mean over databases) over every development recording of the other folds
      (converter.thresholds.pooled_threshold)
  T2  headline: maximise mean(PhysioNet MAcc over all its recordings, CirCor per-patient MAcc) over the
      other folds; a CirCor patient's score is the mean P(abnormal) over his labelled recordings (the
      device's exam rule, device/core/exam.py)

Scores per fold, then mean over folds (as `steth train`'s cv_source_means): PhysioNet MAcc all and
outside training-e, CirCor per-patient MAcc (mean rule) and their AUCs. The decision rule of session 14
(docs/screening_all_sources/cv_threshold/SHIP_RULE.md) reads T2's figures; the shipped threshold would be
T2 chosen on all of the candidate's out-of-fold scores. Also shown, not judged: the per-patient MAcc
when the device's exact arithmetic is used (the mean of per-recording probabilities shifted so that 0.5
is the threshold, compared with 0.5), which differs from the mean of raw probabilities only near it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from converter import thresholds
from converter.metrics import binary_scores
from converter.thresholds import pooled_threshold

MARGIN = 0.02
PROCEDURES = ("T0", "T1", "T2")


@dataclass(frozen=True)
class Oof:
    """One model's out-of-fold P(abnormal) per development recording, with what scoring needs."""

    y: np.ndarray  # 1 = abnormal
    s: np.ndarray
    strata: np.ndarray  # database (PhysioNet training-a..f, CirCor's one, PASCAL's set)
    fold: np.ndarray
    physionet: np.ndarray  # bool per recording
    not_e: np.ndarray  # PhysioNet outside training-e
    patient: np.ndarray  # CirCor patient id, "" elsewhere
    val_thresholds: list[float]  # per fold, the fold model's own validation threshold


def load_oof(path: Path, val_thresholds: list[float]) -> Oof:
    d = json.loads(path.read_text())
    pos = d["labels"].index("abnormal")
    (probs,) = d["probabilities"].values()  # one architecture per file
    s = np.array(probs, dtype=float)[:, pos]
    if np.isnan(s).any():
        raise SystemExit(f"{path}: {int(np.isnan(s).sum())} development recordings without an out-of-fold score")
    keys = d["records"]
    dataset = np.array([k.split("/", 1)[0] for k in keys])
    strata = np.array(d["database"])
    patient = np.array([cc.patient_of(k.rsplit("/", 1)[-1]) if k.startswith(cc.CIRCOR) else "" for k in keys])
    fold = np.array(d["fold"])
    for p in set(patient) - {""}:
        assert len(set(fold[patient == p])) == 1, f"patient {p} in several folds"
    physionet = dataset == ds.PHYSIONET
    return Oof(
        y=(np.array(d["y"]) == pos).astype(int),
        s=s,
        strata=strata,
        fold=fold,
        physionet=physionet,
        not_e=physionet & (strata != "training-e"),
        patient=patient,
        val_thresholds=val_thresholds,
    )


def patients(o: Oof, m: np.ndarray, combine: Callable[[np.ndarray], float] = np.mean) -> tuple[np.ndarray, np.ndarray]:
    """(label, score) per CirCor patient among recordings ``m``; a patient's labelled recordings share a label."""
    ids = sorted(set(o.patient[m & (o.patient != "")]))
    yp = np.array([o.y[m & (o.patient == p)].max() for p in ids], dtype=int)
    sp = np.array([float(combine(o.s[m & (o.patient == p)])) for p in ids])
    return yp, sp


def headline_threshold(o: Oof, m: np.ndarray) -> float:
    """T2 on recordings ``m`` (converter.thresholds.headline_threshold, which steth ensemble ships)."""
    return thresholds.headline_threshold(o.y[m], o.s[m], o.physionet[m], o.patient[m])


def choose(o: Oof, procedure: str, fold: int, m: np.ndarray) -> float:
    if procedure == "T0":
        return o.val_thresholds[fold]
    if procedure == "T1":
        return pooled_threshold(o.y[m], o.s[m], o.strata[m])
    return headline_threshold(o, m)


def _shifted(p: np.ndarray, threshold: float) -> np.ndarray:
    """device.core.inference._calibrate: P shifted on the logit scale so that the threshold maps to 0.5."""
    eps = 1e-6
    p, t = np.clip(p, eps, 1 - eps), min(max(threshold, eps), 1 - eps)
    return np.asarray(1 / (1 + np.exp(-(np.log(p / (1 - p)) - np.log(t / (1 - t))))))


def fold_scores(o: Oof, here: np.ndarray, thr: float) -> dict[str, dict[str, float]]:
    yp, sp = patients(o, here)
    y_dev, s_dev = patients(replace(o, s=_shifted(o.s, thr)), here)
    return {
        "physionet/all": binary_scores(o.y[here & o.physionet], o.s[here & o.physionet], thr),
        "physionet/not_e": binary_scores(o.y[here & o.not_e], o.s[here & o.not_e], thr),
        "circor/patient": binary_scores(yp, sp, thr),
        "circor/patient_device": binary_scores(y_dev, s_dev, 0.5),
    }


def nested(o: Oof, procedure: str) -> dict[str, Any]:
    folds = sorted(set(o.fold.tolist()))
    per_fold = []
    for k in folds:
        thr = choose(o, procedure, k, o.fold != k)
        per_fold.append({"fold": k, "threshold": thr, "scores": fold_scores(o, o.fold == k, thr)})
    scopes = per_fold[0]["scores"]
    means = {
        scope: {key: float(np.nanmean([f["scores"][scope][key] for f in per_fold])) for key in ("macc", "auc")}
        for scope in scopes
    }
    sds = {scope: float(np.std([f["scores"][scope]["macc"] for f in per_fold])) for scope in scopes}
    return {"per_fold": per_fold, "mean": means, "sd_macc": sds, "thresholds": [f["threshold"] for f in per_fold]}


def physionet_ceiling(o: Oof) -> float:
    """Not nested, an upper bound: mean over folds of fold k's best PhysioNet MAcc (all its recordings)
    at the threshold chosen on fold k itself. No threshold procedure can do better on these scores."""
    out = []
    for k in sorted(set(o.fold.tolist())):
        m = (o.fold == k) & o.physionet
        candidates = np.unique(o.s[m])
        out.append(float(thresholds.macc_curve(o.y[m], o.s[m], candidates).max()))
    return float(np.mean(out))


def decide(cand: dict[str, Any], comp: dict[str, Any]) -> dict[str, Any]:
    """The session-14 rule's CV part under T2 (parity and known signals are checked at conversion)."""
    c, b = cand["T2"]["mean"], comp["T2"]["mean"]
    checks = {
        "a_physionet_all": c["physionet/all"]["macc"] >= b["physionet/all"]["macc"] - MARGIN,
        "b_physionet_not_e": c["physionet/not_e"]["macc"] >= b["physionet/not_e"]["macc"] - MARGIN,
        "c_circor_patient": c["circor/patient"]["macc"] > b["circor/patient"]["macc"],
    }
    return {**checks, "ship_cv": all(checks.values())}


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| procedure | model | thresholds per fold | PhysioNet MAcc all | PhysioNet MAcc outside e | "
        "CirCor per patient MAcc (mean) | AUC PhysioNet all / outside e / CirCor patient | "
        "(not judged) CirCor per patient, device arithmetic |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for proc in PROCEDURES:
        for name, r in results.items():
            m, sd = r[proc]["mean"], r[proc]["sd_macc"]

            def f(scope: str, m: dict[str, Any] = m, sd: dict[str, float] = sd) -> str:
                return f"{m[scope]['macc']:.3f} ± {sd[scope]:.3f}"

            thr = " ".join(f"{t:.3f}" for t in r[proc]["thresholds"])
            aucs = " / ".join(f"{m[s]['auc']:.3f}" for s in ("physionet/all", "physionet/not_e", "circor/patient"))
            out.append(
                f"| {proc} | {name} | {thr} | {f('physionet/all')} | {f('physionet/not_e')} | "
                f"{f('circor/patient')} | {aucs} | {f('circor/patient_device')} |"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    report = json.loads((args.run / "report.json").read_text())
    chosen = report["chosen_arch"]
    val = {
        "candidate (all sources)": [c["threshold"] for c in sorted(report["cv"], key=lambda c: c["fold"])],
        f"comparator (without {report['comparator']['trained_without']})": [
            c["threshold"] for c in sorted(report["comparator"]["cv"], key=lambda c: c["fold"])
        ],
    }
    models = dict(zip(val, ("oof.json", "oof_comparator.json"), strict=True))
    results: dict[str, dict[str, Any]] = {}
    for name, file in models.items():
        o = load_oof(args.run / file, val[name])
        results[name] = {proc: nested(o, proc) for proc in PROCEDURES}
        everything = np.ones(len(o.y), dtype=bool)
        results[name]["on_all_oof"] = {
            "T1": choose(o, "T1", -1, everything),
            "T2": headline_threshold(o, everything),
        }
        results[name]["physionet_ceiling"] = physionet_ceiling(o)
    cand, comp = results.values()
    decision = decide(cand, comp)
    print(f"run {args.run} ({chosen}; {len(cand['T0']['per_fold'])} folds), figures: mean ± sd over folds\n")
    print("\n".join(table(results)))
    print()
    for name, r in results.items():
        at = r["on_all_oof"]
        print(
            f"- {name}: threshold on all out-of-fold scores T1 {at['T1']:.3f}, T2 {at['T2']:.3f}; PhysioNet MAcc "
            f"all at each fold's own best threshold (not nested, a ceiling) {r['physionet_ceiling']:.3f}"
        )
    c, b = cand["T2"]["mean"], comp["T2"]["mean"]
    print(
        f"\nRule under T2: a. PhysioNet all {c['physionet/all']['macc']:.3f} >= "
        f"{b['physionet/all']['macc']:.3f} - {MARGIN}: {decision['a_physionet_all']}; "
        f"b. outside e {c['physionet/not_e']['macc']:.3f} >= {b['physionet/not_e']['macc']:.3f} - {MARGIN}: "
        f"{decision['b_physionet_not_e']}; c. CirCor per patient {c['circor/patient']['macc']:.3f} > "
        f"{b['circor/patient']['macc']:.3f}: {decision['c_circor_patient']}. "
        f"CV part: {'SHIP (if int8 parity and known signals pass)' if decision['ship_cv'] else 'DO NOT SHIP'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "results": results, "decision": decision}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
