"""Should a murmur heard make the screening answer abnormal? The figures of research/murmur_or/RULE.md.

    python -m research.murmur_or.study [--screening RUN] [--murmur OOF.json] [--json OUT]

Out-of-fold scores only (each recording scored by a model that did not train on it):
- S: the screening run's two OOF P(abnormal) (oof.json: the all-sources model, oof_comparator.json: the one
  without CirCor) averaged, as the shipped ensemble averages them, at the ensemble's threshold (pooled over
  these OOF scores: RUN/ensemble/report.json).
- M: the murmur model's OOF P(present) (`steth murmur train --cv-only`: oof_RECIPE_seedS.json) at that run's
  pooled CV threshold under the exam's mean rule.
- S+M: abnormal if S or M says so.
Scopes: PhysioNet 2016 development recordings (per recording; all, and outside training-e) and CirCor
development patients (per patient: each arm's mean over the patient's recordings that carry both scores,
then its threshold; truth: the patient's screening label, i.e. murmur Present vs Absent). Only development
recordings have OOF scores; the two runs' split.json are read to check that no test recording is in a scope.
Prints Markdown tables and the rule's verdict; asserts what it relies on.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from converter.metrics import binary_scores
from converter.murmur import shift
from converter.tasks import task_of_run
from converter.train import source_scores

SCREENING_RUN = Path("/work/runs/s15_l2_seed1")
MURMUR_OOF = Path("/work/runs/murmur_oof/oof_physionet_seed0.json")
SHIPPED_THRESHOLD = 0.52258365  # 0.5.0's, RULE.md: S is judged at it
# RULE.md: adopt the OR rule iff CirCor per-patient MAcc gains CIRCOR_GAIN and neither PhysioNet scope loses
# more than PHYSIONET_LOSS
CIRCOR_GAIN = 0.03
PHYSIONET_LOSS = 0.01
ARMS = ("S", "M", "S+M")


@dataclass(frozen=True)
class Scores:
    """Recordings of one scope with both models' OOF scores: key, truth (1 abnormal), S and M."""

    keys: list[str]
    y: np.ndarray
    s: np.ndarray
    m: np.ndarray


def screening_oof(run: Path) -> tuple[dict[str, int], dict[str, float]]:
    """(truth per key: 1 abnormal, S per key): the mean of the run's two OOF P(abnormal)."""
    a, b = (json.loads((run / f).read_text()) for f in ("oof.json", "oof_comparator.json"))
    assert a["records"] == b["records"] and a["y"] == b["y"], "the two OOF files list different recordings"
    pos = a["labels"].index("abnormal")
    (pa,), (pb,) = a["probabilities"].values(), b["probabilities"].values()
    s = (np.asarray(pa)[:, pos] + np.asarray(pb)[:, pos]) / 2
    assert np.isfinite(s).all()
    return {k: int(v == pos) for k, v in zip(a["records"], a["y"], strict=True)}, dict(
        zip(a["records"], s.tolist(), strict=True)
    )


def test_keys(screening_run: Path, murmur_run: Path) -> set[str]:
    """The names (only) of every test recording of both runs, to check that no scope holds one."""
    out: set[str] = set(json.loads((screening_run / "split.json").read_text())["test"])
    split = json.loads((murmur_run / "split.json").read_text())
    return out | set(split["test"]) | set(split["physionet_test"])


def scope(prefix: str, truth: dict[str, int], s: dict[str, float], m: dict[str, float]) -> tuple[Scores, list[str]]:
    """The screening OOF recordings of one data set that have a murmur OOF score; and those that have none."""
    keys = sorted(k for k in truth if k.startswith(prefix))
    both = [k for k in keys if k in m]
    sc = Scores(
        both, np.array([truth[k] for k in both]), np.array([s[k] for k in both]), np.array([m[k] for k in both])
    )
    return sc, [k for k in keys if k not in m]


def arm_scores(y: np.ndarray, s_says: np.ndarray, m_says: np.ndarray) -> dict[str, dict[str, Any]]:
    """Se, Sp, MAcc and counts of S, M and S+M from each arm's decisions (True: abnormal)."""
    decisions = {"S": s_says, "M": m_says, "S+M": s_says | m_says}
    return {
        arm: {k: v for k, v in binary_scores(y, d.astype(float), 0.5).items() if k != "auc"}
        | {"called_abnormal": int(d.sum())}
        for arm, d in decisions.items()
    }


def per_recording(sc: Scores, t_s: float, t_m: float, mask: np.ndarray) -> dict[str, Any]:
    s_says, m_says = sc.s[mask] >= t_s, sc.m[mask] >= t_m
    y = sc.y[mask]
    out = arm_scores(y, s_says, m_says)
    out["or_changes"] = {
        "normals_newly_abnormal": int((~s_says & m_says & (y == 0)).sum()),
        "abnormals_newly_caught": int((~s_says & m_says & (y == 1)).sum()),
    }
    return out


def physionet(sc: Scores, t_s: float, t_m: float) -> dict[str, Any]:
    subsets = np.array([k.split("/")[1] for k in sc.keys])
    out = {
        "all": per_recording(sc, t_s, t_m, np.ones(len(sc.keys), bool)),
        "not_e": per_recording(sc, t_s, t_m, subsets != "training-e"),
    }
    out["by_database"] = {
        db: per_recording(sc, t_s, t_m, subsets == db)["or_changes"] | {"n": int((subsets == db).sum())}
        for db in sorted(set(subsets))
    }
    return out


def patients(sc: Scores) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """(patient ids, truth per patient, indices of each patient's recordings), grouped as
    converter.train.source_scores groups CirCor (cc.patient_of); a patient's recordings share one label."""
    by: dict[str, list[int]] = {}
    for i, k in enumerate(sc.keys):
        by.setdefault(cc.patient_of(k.rsplit("/", 1)[-1]), []).append(i)
    idx = [np.array(v) for v in by.values()]
    assert all(len(set(sc.y[v].tolist())) == 1 for v in idx), "a patient's recordings disagree on the label"
    return list(by), np.array([sc.y[v].max() for v in idx]), idx


def circor(sc: Scores, t_s: float, t_m: float) -> dict[str, Any]:
    """Per patient: each arm's mean over the patient's recordings against its threshold (RULE.md); and, for
    comparison only, the exam's combination (the mean of calibrated P, 0.5 = the model's threshold)."""
    ids, y, idx = patients(sc)
    s_mean = np.array([sc.s[v].mean() for v in idx])
    m_mean = np.array([sc.m[v].mean() for v in idx])
    out: dict[str, Any] = {"patient": arm_scores(y, s_mean >= t_s, m_mean >= t_m)}
    out["patient"]["or_changes"] = {
        "absent_newly_abnormal": int(((s_mean < t_s) & (m_mean >= t_m) & (y == 0)).sum()),
        "present_newly_caught": int(((s_mean < t_s) & (m_mean >= t_m) & (y == 1)).sum()),
    }
    s_cal = np.array([shift(sc.s[v], t_s).mean() for v in idx])
    m_cal = np.array([shift(sc.m[v], t_m).mean() for v in idx])
    out["patient_calibrated_mean"] = arm_scores(y, s_cal >= 0.5, m_cal >= 0.5)
    out["n_patients"] = len(ids)
    out["recordings_per_patient"] = float(np.mean([len(v) for v in idx]))
    return out


def _parts(key: str) -> tuple[str, str, str]:
    dataset, subset, record_id = key.split("/", 2)
    return dataset, subset, record_id


def m_all_sites(sc: Scores, m: dict[str, float], t_m: float) -> dict[str, Any]:
    """For comparison only: M per patient over all the patient's murmur-scored development recordings (the
    murmur CV's view: the other sites of Present patients too, which the screening OOF does not score, being
    left out of its training labels), for the same patients."""
    ids, y, _ = patients(sc)
    by: dict[str, list[float]] = {}
    for k, v in m.items():
        by.setdefault(cc.patient_of(k.rsplit("/", 1)[-1]), []).append(v)
    m_mean = np.array([np.mean(by[p]) for p in ids])
    f = {k: v for k, v in binary_scores(y, m_mean, t_m).items() if k != "auc"}
    return {"M": f | {"called_abnormal": int((m_mean >= t_m).sum())}, "recordings": sum(len(by[p]) for p in ids)}


def check_against_source_scores(run: Path, sc: Scores, t_s: float, t_m: float, figures: dict[str, Any]) -> None:
    """S and M per patient must be what converter.train.source_scores calls CirCor's "patient" scope."""
    task = task_of_run(json.loads((run / "report.json").read_text()))
    recs = [ds.Recording(*_parts(k), Path(k), "") for k in sc.keys]
    y = np.where(sc.y == 1, task.labels.index("abnormal"), task.labels.index("normal"))
    for arm, p, t in (("S", sc.s, t_s), ("M", sc.m, t_m)):
        ref = source_scores(task, recs, y, p, t)[cc.CIRCOR]["patient"]
        got = figures["patient"][arm]
        assert (ref["n"], ref["n_abnormal"]) == (got["n"], got["n_abnormal"]), arm
        assert abs(ref["macc"] - got["macc"]) < 1e-9, (arm, ref["macc"], got["macc"])


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    c = result["circor"]["patient"]
    a, e = result["physionet"]["all"], result["physionet"]["not_e"]
    checks = {
        "a_circor_patient": c["S+M"]["macc"] >= c["S"]["macc"] + CIRCOR_GAIN,
        "b_physionet_all": a["S+M"]["macc"] >= a["S"]["macc"] - PHYSIONET_LOSS,
        "b_physionet_not_e": e["S+M"]["macc"] >= e["S"]["macc"] - PHYSIONET_LOSS,
    }
    adopt = all(checks.values())
    return {
        "checks": checks,
        "adopt_or_rule": adopt,
        "text": "adopt the OR rule" if adopt else "keep the two answers separate (report the figures)",
    }


def study(screening_run: Path, murmur_oof: Path) -> dict[str, Any]:
    truth, s = screening_oof(screening_run)
    t_s = float(json.loads((screening_run / "ensemble" / "report.json").read_text())["threshold"])
    assert abs(t_s - SHIPPED_THRESHOLD) < 1e-6, f"the run's ensemble threshold {t_s} is not the shipped one"
    mo = json.loads(murmur_oof.read_text())
    t_m = float(mo["threshold"])
    assert mo["rule"] == "mean"
    held_out = test_keys(screening_run, murmur_oof.parent)
    p_sc, p_missing = scope(f"{ds.PHYSIONET}/", truth, s, mo["physionet"])
    c_sc, c_missing = scope(f"{cc.CIRCOR}/", truth, s, mo["circor"])
    assert not (set(p_sc.keys) | set(c_sc.keys)) & held_out, "a test recording is in a scope"
    result: dict[str, Any] = {
        "inputs": {"screening_run": str(screening_run), "murmur_oof": str(murmur_oof)},
        "thresholds": {"S": t_s, "M": t_m},
        "counts": {
            "physionet_recordings": len(p_sc.keys),
            "physionet_abnormal": int(p_sc.y.sum()),
            "physionet_without_murmur_score": len(p_missing),
            "circor_recordings": len(c_sc.keys),
            "circor_without_murmur_score": len(c_missing),
            "murmur_oof_not_in_screening_oof": {src: len(set(mo[src]) - set(truth)) for src in ("circor", "physionet")},
            "murmur_unscored": len(mo.get("unscored", [])),
        },
        "physionet": physionet(p_sc, t_s, t_m),
        "circor": circor(c_sc, t_s, t_m),
        "without_murmur_score": {"physionet": p_missing, "circor": c_missing},
    }
    result["circor"]["patient_m_all_sites"] = m_all_sites(c_sc, mo["circor"], t_m)
    check_against_source_scores(screening_run, c_sc, t_s, t_m, result["circor"])
    result["verdict"] = verdict(result)
    return result


def _row(name: str, f: dict[str, Any]) -> str:
    return (
        f"| {name} | {f['sensitivity']:.3f} | {f['specificity']:.3f} | {f['macc']:.3f} | {f['n']} "
        f"| {f['n_abnormal']} | {f['called_abnormal']} |"
    )


def markdown(r: dict[str, Any]) -> list[str]:
    lines = [
        f"Thresholds: S {r['thresholds']['S']:.4f} (mean of the two OOF P(abnormal)), "
        f"M {r['thresholds']['M']:.3f} (murmur OOF P(present)).",
        "",
        "Counts: " + ", ".join(f"{k} {v}" for k, v in r["counts"].items()) + f"; CirCor patients "
        f"{r['circor']['n_patients']} ({r['circor']['recordings_per_patient']:.2f} recordings each).",
        "",
    ]
    scopes = (
        ("PhysioNet development recordings, all", r["physionet"]["all"]),
        ("PhysioNet development recordings, outside training-e", r["physionet"]["not_e"]),
        ("CirCor development patients (per patient, mean over recordings)", r["circor"]["patient"]),
        (
            "CirCor, for comparison: exam combination (mean of calibrated P >= 0.5)",
            r["circor"]["patient_calibrated_mean"],
        ),
    )
    for title, f in scopes:
        lines += [
            f"**{title}**",
            "",
            "| arm | Se | Sp | MAcc | n | n abnormal | called abnormal |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_row(arm, f[arm]) for arm in ARMS]
        if "or_changes" in f:
            lines += ["", "OR changes: " + ", ".join(f"{k} {v}" for k, v in f["or_changes"].items())]
        lines.append("")
    ma = r["circor"]["patient_m_all_sites"]
    lines += [
        f"For comparison, M per patient over all of the patient's murmur-scored recordings ({ma['recordings']}, "
        "other sites of Present patients too; S has no OOF score there):",
        "",
        "| arm | Se | Sp | MAcc | n | n abnormal | called abnormal |",
        "|---|---|---|---|---|---|---|",
        _row("M (all sites)", ma["M"]),
        "",
        "PhysioNet recordings newly called abnormal by S+M, per database:",
        "",
    ]
    lines += [
        f"- {db}: {v['normals_newly_abnormal']} normals called abnormal, {v['abnormals_newly_caught']} abnormals "
        f"newly caught (of {v['n']})"
        for db, v in r["physionet"]["by_database"].items()
    ]
    v = r["verdict"]
    lines += ["", "Verdict: " + v["text"] + " (" + ", ".join(f"{k}: {ok}" for k, ok in v["checks"].items()) + ")"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--screening", type=Path, default=SCREENING_RUN, help="the screening run (oof.json, ensemble/)")
    ap.add_argument("--murmur", type=Path, default=MURMUR_OOF, help="the murmur run's oof_RECIPE_seedS.json")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    result = study(args.screening, args.murmur)
    print("\n".join(markdown(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
