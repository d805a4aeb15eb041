"""The plain LSTM of issue 23 beside our conv-LSTM and the all-sources recipe, on PhysioNet CV alone.

    python -m research.plain_baseline.compare --plain /work/runs/baseline_s1 ... --recipe /work/runs/s16_seed1
        [--json OUT]

``--plain`` runs are `steth train --task research/plain_baseline/plain_lstm.toml --archs lstm,conv_lstm`
(PhysioNet only, 13 MFCCs, no database head): their oof.json holds both architectures' out-of-fold
P(abnormal), on the same folds. ``--recipe`` runs are `steth train --task screening` runs with a comparator:
oof.json (the candidate, every source), oof_comparator.json (the same folds without CirCor) and their mean
(the shipped recipe, `steth ensemble`), restricted here to their PhysioNet recordings.

Every model is scored the same way, as `steth ensemble` (converter.ensemble.nested_cv) does: fold k at the
threshold pooled over the other folds' out-of-fold scores (converter.thresholds.pooled_threshold, the MAcc
averaged over databases), figures per fold, then the mean over folds. A recipe model's threshold is pooled
two ways: over every source's recordings of the other folds (what `steth ensemble` does: "recipe thr")
and over their PhysioNet recordings only ("PhysioNet thr", the like-for-like with a PhysioNet-only model).
AUC does not depend on the threshold.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter.metrics import best_threshold, binary_scores, roc_auc
from converter.thresholds import macc_curve, pooled_threshold
from converter.trainer import TrainSettings

FIGURES = ("macc", "auc", "sensitivity", "specificity")
SCOPES = ("all", "not_e")  # PhysioNet's every database; every database except training-e


@dataclass(frozen=True)
class Oof:
    """One model's out-of-fold P(abnormal) over a run's development recordings (every source)."""

    keys: list[str]
    y: np.ndarray  # 1 = abnormal
    s: np.ndarray
    strata: np.ndarray  # database
    fold: np.ndarray

    @property
    def physionet(self) -> np.ndarray:
        return np.array([k.startswith(ds.PHYSIONET + "/") for k in self.keys])

    def only(self, mask: np.ndarray) -> Oof:
        return Oof([k for k, m in zip(self.keys, mask, strict=True) if m], *(a[mask] for a in self.arrays()))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.s, self.strata, self.fold


def load_oof(path: Path) -> dict[str, Oof]:
    """Each architecture's out-of-fold scores in one oof.json (a `steth train` run writes one per arch)."""
    d = json.loads(path.read_text())
    pos = d["labels"].index("abnormal")
    y = (np.array(d["y"]) == pos).astype(int)
    out = {}
    for arch, probs in d["probabilities"].items():
        s = np.array(probs, dtype=float)[:, pos]
        if np.isnan(s).any():
            raise SystemExit(f"{path} {arch}: {int(np.isnan(s).sum())} recordings without an out-of-fold score")
        out[arch] = Oof(list(d["records"]), y, s, np.array(d["database"]), np.array(d["fold"]))
    return out


def mean_of(a: Oof, b: Oof) -> Oof:
    """The mean of two models' scores on the same recordings and folds (the shipped average)."""
    if a.keys != b.keys or not np.array_equal(a.fold, b.fold):
        raise SystemExit("the candidate's and the comparator's out-of-fold files cover different recordings or folds")
    return Oof(a.keys, a.y, (a.s + b.s) / 2, a.strata, a.fold)


def ceiling_macc(y: np.ndarray, s: np.ndarray) -> float:
    """The highest MAcc any threshold reaches on these scores (every distinct score tried as the cut:
    converter.metrics.best_threshold rounds its candidates, which can miss the best cut by a recording)."""
    return float(np.max(macc_curve(y, s, np.append(np.unique(s), np.inf))))


def nested(oof: Oof, threshold_pool: str = "all") -> dict[str, Any]:
    """PhysioNet figures per fold at the threshold pooled over the other folds, and their means.

    ``threshold_pool``: "all" pools over every recording of the other folds (converter.ensemble.nested_cv),
    "physionet" over their PhysioNet recordings only."""
    phys = oof.physionet
    pool = phys if threshold_pool == "physionet" else np.ones(len(phys), bool)
    not_e = phys & (oof.strata != "training-e")
    folds = []
    for k in sorted(set(oof.fold.tolist())):
        here = oof.fold == k
        other = ~here & pool
        thr = pooled_threshold(oof.y[other], oof.s[other], oof.strata[other])
        entry: dict[str, Any] = {"fold": k, "threshold": thr}
        for scope, m in (("all", phys), ("not_e", not_e)):
            sel = here & m
            entry[scope] = binary_scores(oof.y[sel], oof.s[sel], thr)
        # the ceiling: fold k at the threshold that maximises its own PhysioNet MAcc (chosen on the scores it
        # judges, so optimistic): what no threshold procedure can beat with these scores
        sel = here & phys
        entry["ceiling_macc"] = ceiling_macc(oof.y[sel], oof.s[sel])
        folds.append(entry)
    means: dict[str, Any] = {
        scope: {f: float(np.nanmean([e[scope][f] for e in folds])) for f in FIGURES} for scope in SCOPES
    }
    means["ceiling_macc"] = float(np.mean([e["ceiling_macc"] for e in folds]))
    return {"folds": folds, "means": means, "thresholds": [e["threshold"] for e in folds]}


def with_database_prior(oof: Oof, k: int, prior_only: bool = False) -> np.ndarray:
    """The scores with each PhysioNet recording's odds multiplied by its database's odds of abnormal in the
    folds other than ``k`` (add-one smoothed); ``prior_only``: the database's odds alone.

    Our models are trained with equal labels in every database (converter/trainer.py), so their scores
    carry no database prevalence: training-a is 73% abnormal, training-e 9%. A model trained on PhysioNet
    with class weights alone, on features that keep the stethoscope's channel, can learn that prevalence
    from the sound of the database; this puts it back by Bayes' rule, to show what it is worth on a test
    set with PhysioNet's own database mix (and nothing on a stethoscope that is not one of PhysioNet's)."""
    out = oof.s.copy()
    phys, other = oof.physionet, oof.fold != k
    for db in set(oof.strata[phys].tolist()):
        train = phys & other & (oof.strata == db)
        prevalence = (oof.y[train].sum() + 1) / (train.sum() + 2)
        sel = phys & (oof.strata == db)
        s = np.clip(oof.s[sel], 1e-4, 1 - 1e-4)
        logit = np.log(prevalence / (1 - prevalence)) + (0.0 if prior_only else np.log(s / (1 - s)))
        out[sel] = 1 / (1 + np.exp(-logit))
    return out


def prior_nested(oof: Oof, prior_only: bool = False) -> dict[str, Any]:
    """``nested`` for the scores of ``with_database_prior``: fold k's prior and threshold from the other
    folds' PhysioNet recordings, the threshold maximising their pooled MAcc (the database is in the score
    now, so not the mean over databases)."""
    phys = oof.physionet
    not_e = phys & (oof.strata != "training-e")
    folds = []
    for k in sorted(set(oof.fold.tolist())):
        s = with_database_prior(oof, k, prior_only)
        here, other = oof.fold == k, (oof.fold != k) & phys
        thr = best_threshold(oof.y[other], s[other])
        entry: dict[str, Any] = {"fold": k, "threshold": thr}
        for scope, m in (("all", phys), ("not_e", not_e)):
            entry[scope] = binary_scores(oof.y[here & m], s[here & m], thr)
        folds.append(entry)
    means = {scope: {f: float(np.nanmean([e[scope][f] for e in folds])) for f in FIGURES} for scope in SCOPES}
    return {"folds": folds, "means": means}


def database_auc(oof: Oof) -> dict[str, float]:
    """AUC per PhysioNet database over every out-of-fold score (pooled over folds: training-c holds 21
    development recordings, a few per fold, too few for an AUC per fold). Threshold-free, so it says how
    well a model ranks within a database, apart from where any threshold falls."""
    phys = oof.physionet
    dbs = sorted(set(oof.strata[phys].tolist()))
    return {db: roc_auc(oof.y[phys & (oof.strata == db)], oof.s[phys & (oof.strata == db)]) for db in dbs}


def physionet_dev_set(oof: Oof) -> tuple[frozenset[str], dict[str, int]]:
    """A run's PhysioNet development recordings and the CV fold of each."""
    idx = np.flatnonzero(oof.physionet)
    return frozenset(oof.keys[i] for i in idx), {oof.keys[i]: int(oof.fold[i]) for i in idx}


def fold_agreement(a: dict[str, int], b: dict[str, int]) -> float:
    """Share of recording pairs on which two fold assignments agree (same fold in both, or different in
    both): 1.0 only for identical partitions, up to relabelling."""
    keys = sorted(set(a) & set(b))
    fa, fb = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    same_a, same_b = fa[:, None] == fa[None, :], fb[:, None] == fb[None, :]
    off = ~np.eye(len(keys), dtype=bool)
    return float(np.mean(same_a[off] == same_b[off]))


def run_variant(run: Path) -> str:
    """ " [KEY=VALUE ...]" for the settings a run changed with `steth train --set` (none: ""), so that
    variants are told apart and never averaged together."""
    config = json.loads((run / "report.json").read_text()).get("config", {})
    changed = {f"features.{k}": v for k, v in config.get("features", {}).items()}
    defaults = asdict(TrainSettings())
    changed |= {k: v for k, v in config.get("settings", {}).items() if k != "seed" and defaults.get(k, v) != v}
    return " [" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + "]" if changed else ""


def run_seconds(run: Path) -> float | None:
    rep = json.loads((run / "report.json").read_text())
    return float(rep["seconds"]) if "seconds" in rep else None


def compare(plain: list[Path], recipe: list[Path]) -> dict[str, Any]:
    """Rows (model, run, threshold pool, nested figures), the dev-set check and the runs' times."""
    rows: list[dict[str, Any]] = []
    prior_rows: list[dict[str, Any]] = []
    dev_sets: dict[str, tuple[frozenset[str], dict[str, int]]] = {}
    for run in plain:
        variant = run_variant(run)
        for arch, oof in load_oof(run / "oof.json").items():
            dev_sets.setdefault(str(run), physionet_dev_set(oof))
            rows.append(
                {
                    "model": f"plain {arch}{variant}",
                    "run": run.name,
                    "pool": "physionet",
                    "db_auc": database_auc(oof),
                    **nested(oof),
                }
            )
            prior_rows.append(
                {"model": f"plain {arch}{variant} x database prior", "run": run.name, **prior_nested(oof)}
            )
        prior_rows.append({"model": "database prior alone", "run": run.name, **prior_nested(oof, prior_only=True)})
    for run in recipe:
        (cand,) = load_oof(run / "oof.json").values()
        (comp,) = load_oof(run / "oof_comparator.json").values()
        dev_sets[str(run)] = physionet_dev_set(cand)
        models = {"recipe candidate": cand, "recipe comparator": comp, "recipe average": mean_of(cand, comp)}
        for name, oof in models.items():
            for pool in ("all", "physionet"):
                rows.append(
                    {"model": name, "run": run.name, "pool": pool, "db_auc": database_auc(oof), **nested(oof, pool)}
                )
            prior_rows.append({"model": f"{name} x database prior", "run": run.name, **prior_nested(oof)})
        prior_rows.append({"model": "database prior alone", "run": run.name, **prior_nested(cand, prior_only=True)})
    names = list(dev_sets)
    ref_keys, ref_folds = dev_sets[names[0]] if names else (frozenset(), {})
    check = {
        "reference": names[0] if names else None,
        "n_physionet_dev": len(ref_keys),
        "runs": {
            n: {
                "n": len(keys),
                "same_recordings": keys == ref_keys,
                "only_here": len(keys - ref_keys),
                "missing_here": len(ref_keys - keys),
                "fold_agreement_with_reference": fold_agreement(ref_folds, folds),
            }
            for n, (keys, folds) in dev_sets.items()
        },
    }
    times = {str(r): run_seconds(r) for r in [*plain, *recipe]}
    return {"rows": rows, "prior_rows": prior_rows, "dev_check": check, "seconds": times}


def _cell(m: dict[str, Any], scope: str) -> str:
    v = m[scope]
    return f"{v['macc']:.3f} | {v['auc']:.3f} | {v['sensitivity']:.3f} / {v['specificity']:.3f}"


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per model and run, then the mean over runs of each (model, threshold pool)."""
    head = (
        "| model | run | threshold pool | MAcc all | AUC all | Se / Sp all | MAcc not-e | AUC not-e | Se / Sp not-e "
        "| MAcc all, in-fold best threshold (ceiling) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['run']} | {r['pool']} | {_cell(r['means'], 'all')} | {_cell(r['means'], 'not_e')} "
            f"| {r['means']['ceiling_macc']:.3f} |"
        )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result["rows"]:
        groups.setdefault((r["model"], r["pool"]), []).append(r)
    for (model, pool), rs in groups.items():
        means: dict[str, Any] = {
            scope: {f: float(np.mean([r["means"][scope][f] for r in rs])) for f in FIGURES} for scope in SCOPES
        }
        ceiling = float(np.mean([r["means"]["ceiling_macc"] for r in rs]))
        spread = [r["means"]["all"]["macc"] for r in rs]
        label = f"**mean of {len(rs)}** (MAcc all {min(spread):.3f}-{max(spread):.3f})"
        lines.append(
            f"| **{model}** | {label} | {pool} | {_cell(means, 'all')} | {_cell(means, 'not_e')} | {ceiling:.3f} |"
        )
    return "\n".join(lines)


def prior_table(result: dict[str, Any]) -> str:
    """Markdown: per model with the database prior (and the prior alone), the mean over runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in result["prior_rows"]:
        groups.setdefault(r["model"], []).append(r)
    lines = [
        "| model | runs | MAcc all | AUC all | Se / Sp all | MAcc not-e | AUC not-e | Se / Sp not-e |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, rs in groups.items():
        means = {scope: {f: float(np.mean([r["means"][scope][f] for r in rs])) for f in FIGURES} for scope in SCOPES}
        spread = [r["means"]["all"]["macc"] for r in rs]
        label = f"{len(rs)} (MAcc all {min(spread):.3f}-{max(spread):.3f})"
        lines.append(f"| {model} | {label} | {_cell(means, 'all')} | {_cell(means, 'not_e')} |")
    return "\n".join(lines)


def database_table(result: dict[str, Any]) -> str:
    """Markdown: per model, the mean over runs of its AUC in each PhysioNet database (out-of-fold, pooled)."""
    groups: dict[str, list[dict[str, float]]] = {}
    for r in result["rows"]:
        if r["pool"] == "physionet":  # the AUC does not depend on the threshold pool: one row per model
            groups.setdefault(r["model"], []).append(r["db_auc"])
    dbs = sorted({db for aucs in groups.values() for a in aucs for db in a})
    lines = ["| model (runs) | " + " | ".join(dbs) + " |", "| --- |" + " --- |" * len(dbs)]
    for model, aucs in groups.items():
        cells = [f"{np.nanmean([a.get(db, np.nan) for a in aucs]):.3f}" for db in dbs]
        lines.append(f"| {model} ({len(aucs)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--plain", type=Path, nargs="*", default=[], help="plain_lstm.toml run folders")
    p.add_argument("--recipe", type=Path, nargs="*", default=[], help="screening run folders with a comparator")
    p.add_argument("--json", type=Path, help="also write every figure (per fold) here")
    args = p.parse_args(argv)
    result = compare(args.plain, args.recipe)
    print(table(result))
    print()
    print("With each database's share of abnormal recordings (from the other folds) multiplied into the odds:")
    print(prior_table(result))
    print()
    print("AUC per PhysioNet database, out-of-fold scores pooled over folds, mean over runs:")
    print(database_table(result))
    print()
    print("PhysioNet development recordings:", json.dumps(result["dev_check"], indent=1))
    print("run seconds (report.json):", json.dumps(result["seconds"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
