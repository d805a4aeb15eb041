"""`steth ablate`: does a training setting help, beyond run-to-run noise?

One `steth train` run carries about ±0.05 of run-to-run spread on its headline figures (two runs of
the same command: LODO mean 0.561 vs 0.520), so a single run cannot tell a better setting from a lucky
seed. This command repeats the cross-validation and leave-one-database-out trainings of `steth train`
for each variant of the settings (the database head's gradient reversal factor, plus any training,
run or feature setting given with ``--set``) and each seed, on the same splits, and reports the mean
and spread over seeds. The held-out split is never touched, so the
choice it informs does not leak into the held-out score.

Seed s trains with seeds 1000*s + fold (CV) and 1000*s + 100 (LODO): seed 0 is exactly the trainings
`steth train --seed 0` runs. Each (value, seed) lands in OUT as JSON as soon as it is done; a rerun
skips those already there, so an interrupted ablation resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter import thresholds
from converter.overrides import parse_overrides, with_overrides
from converter.tasks import DEFAULT_TASK, TASKS, get_task
from converter.train import Job, RunConfig, Runner, load_data, lodo_databases, splits
from converter.trainer import TrainSettings

log = logging.getLogger(__name__)
SPLIT_SEED = 0  # the held-out and CV splits of `steth train --seed 0`, whatever the training seed
HEADLINES = (
    "cv_not_e_macc",
    "cv_not_e_auc",
    "cv_all_macc",
    "cv_all_auc",
    "cv_not_e_macc_pooled_threshold",
    "cv_all_macc_pooled_threshold",
    "lodo_mean_macc",
    "lodo_mean_auc",
    "lodo_min_macc",
)


def variant_name(value: float, overrides: dict[str, Any] | None = None) -> str:
    """``da0.3`` for a reversal factor alone; ``da0.3-augment_copies2`` with other settings."""
    return f"da{value:g}" + "".join(f"-{k}{v}" for k, v in sorted((overrides or {}).items()))


def result_name(value: float, seed: int, overrides: dict[str, Any] | None = None) -> str:
    return f"{variant_name(value, overrides)}-seed{seed}.json"


def configure(cfg: RunConfig, value: float, overrides: dict[str, Any]) -> RunConfig:
    """``cfg`` with the reversal factor, the split seed and the ``--set`` overrides applied."""
    settings = replace(cfg.settings, domain_adversarial=value, seed=SPLIT_SEED)
    return with_overrides(replace(cfg, settings=settings), overrides)


def run_one(
    root: Path, cfg: RunConfig, arch: str, value: float, seed: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """CV and LODO of ``arch`` trained with gradient reversal factor ``value``, the ``overrides``
    and training seed ``seed``."""
    task = get_task(cfg.task)
    overrides = overrides or {}
    cfg = configure(cfg, value, overrides)
    data = load_data(task, root, cfg)
    dev_idx, _, cv_folds = splits(data, cfg, split_seed=SPLIT_SEED, root=root)
    dbs = lodo_databases(data, dev_idx)
    base = 1000 * seed
    jobs = [Job(arch, dev_idx[cv_folds != f], dev_idx[cv_folds == f], base + f) for f in range(cfg.folds)]
    jobs += [
        Job(arch, dev_idx[data.strata[dev_idx] != db], dev_idx[data.strata[dev_idx] == db], base + 100) for db in dbs
    ]
    t0 = time.monotonic()
    runner = Runner(task, root, cfg, data)
    try:
        results = list(runner.map(jobs))
    finally:
        runner.close()
    cv = [s for _, s, _ in results[: cfg.folds]]
    lodo = dict(zip(dbs, (s["all"] for _, s, _ in results[cfg.folds :]), strict=True))
    out: dict[str, Any] = {
        "task": task.name,
        "arch": arch,
        "domain_adversarial": value,
        "overrides": overrides,
        "variant": variant_name(value, overrides),
        "seed": seed,
        "seconds": round(time.monotonic() - t0),
        "cv_all_macc": float(np.mean([s["all"]["macc"] for s in cv])),
        "cv_all_auc": float(np.mean([s["all"]["auc"] for s in cv])),
        "lodo_macc": {db: v["macc"] for db, v in lodo.items()},
        "lodo_auc": {db: v["auc"] for db, v in lodo.items()},
        "cv": cv,
    }
    if all("not_e" in s for s in cv):
        out["cv_not_e_macc"] = float(np.mean([s["not_e"]["macc"] for s in cv]))
        out["cv_not_e_auc"] = float(np.mean([s["not_e"]["auc"] for s in cv]))
    if task.positive is not None:
        # the threshold transfer check of `steth train` (see thresholds), on this setting's CV models
        pos = task.labels.index(task.positive)
        scores = np.full(len(data.recordings), np.nan)
        for job, (_, _, probs) in zip(jobs[: cfg.folds], results[: cfg.folds], strict=True):
            scores[job.test] = probs[:, pos]
        check = thresholds.transfer_check(
            data.y[dev_idx], scores[dev_idx], data.strata[dev_idx], cv_folds, [t for t, _, _ in results[: cfg.folds]]
        )
        out["threshold_check"] = check
        # each development recording's out-of-fold score: what a second model's scores on the same
        # folds can be fused with, or compared to recording by recording (each fold's own threshold
        # is in threshold_check)
        out["cv_scores"] = {
            "records": [data.recordings[i].key for i in dev_idx],
            "databases": [str(data.strata[i]) for i in dev_idx],
            "labels": data.y[dev_idx].tolist(),
            "folds": [int(f) for f in cv_folds],
            "scores": [round(float(v), 5) for v in scores[dev_idx]],
        }
        for key, v in check["at_pooled"].items():
            out[f"cv_{key.removesuffix('_macc')}_macc_pooled_threshold"] = v
    if lodo and task.positive is not None:
        # each left-out database's recording scores and the threshold chosen without it: what
        # research.local_calibration (not installed) re-thresholds on a few labelled recordings of that database
        pos = task.labels.index(task.positive)
        out["lodo_scores"] = {
            db: {
                "records": [data.recordings[i].key for i in job.test],
                "labels": data.y[job.test].tolist(),
                "scores": [round(float(v), 5) for v in probs[:, pos]],
                "threshold": threshold,
            }
            for db, job, (threshold, _, probs) in zip(dbs, jobs[cfg.folds :], results[cfg.folds :], strict=True)
        }
    if lodo:
        out["lodo_mean_macc"] = float(np.mean(list(out["lodo_macc"].values())))
        out["lodo_mean_auc"] = float(np.nanmean(list(out["lodo_auc"].values())))
        out["lodo_min_macc"] = float(np.min(list(out["lodo_macc"].values())))
    return out


def summarise(folder: Path) -> dict[str, Any]:
    """Per value of the setting: mean and sd over seeds of each headline, and of each LODO database."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("da*-seed*.json"))]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        # results written before --set existed carry no variant name: the reversal factor alone
        by.setdefault(r.get("variant") or variant_name(float(r["domain_adversarial"])), []).append(r)
    summary: dict[str, Any] = {"variants": []}
    for name in sorted(by, key=lambda n: (len(by[n][0].get("overrides") or {}), by[n][0]["domain_adversarial"], n)):
        rs = sorted(by[name], key=lambda r: r["seed"])
        row: dict[str, Any] = {
            "variant": name,
            "domain_adversarial": float(rs[0]["domain_adversarial"]),
            "overrides": rs[0].get("overrides") or {},
            "seeds": [r["seed"] for r in rs],
            "arch": rs[0]["arch"],
        }
        for key in HEADLINES:
            vals = [r[key] for r in rs if key in r]
            if vals:
                row[key] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
        for db in sorted({db for r in rs for db in r["lodo_macc"]}):
            vals = [r["lodo_macc"][db] for r in rs if db in r["lodo_macc"]]
            row.setdefault("lodo_macc", {})[db] = float(np.mean(vals))
        summary["variants"].append(row)
    return summary


def table(summary: dict[str, Any]) -> list[str]:
    """Markdown: one row per value of the setting, mean ± sd over seeds."""
    names = {
        "cv_not_e_macc": "CV MAcc without e",
        "cv_not_e_auc": "CV AUC without e",
        "cv_all_macc": "CV MAcc all",
        "cv_not_e_macc_pooled_threshold": "CV MAcc without e, pooled threshold",
        "cv_all_macc_pooled_threshold": "CV MAcc all, pooled threshold",
        "lodo_mean_macc": "LODO mean MAcc",
        "lodo_mean_auc": "LODO mean AUC",
        "lodo_min_macc": "LODO worst MAcc",
    }
    dbs = sorted({db for v in summary["variants"] for db in v.get("lodo_macc", {})})
    lines = [
        "| database head (reversal factor), other settings | seeds | "
        + " | ".join(names.values())
        + " | "
        + " | ".join(f"LODO {db.removeprefix('training-')}" for db in dbs)
        + " |",
        "|---" * (2 + len(names) + len(dbs)) + "|",
    ]
    for v in summary["variants"]:
        cells = [f"{v[k]['mean']:.3f} ± {v[k]['sd']:.3f}" if k in v else "–" for k in names]
        per_db = [f"{v['lodo_macc'][db]:.3f}" if db in v.get("lodo_macc", {}) else "–" for db in dbs]
        label = "none" if v["domain_adversarial"] == 0 else f"{v['domain_adversarial']:g}"
        label += "".join(f", {k} {val}" for k, val in sorted(v.get("overrides", {}).items()))
        lines.append(f"| {label} | {len(v['seeds'])} | " + " | ".join(cells + per_db) + " |")
    return lines


def register(sub: Any) -> None:
    p = sub.add_parser("ablate", help="repeat CV and leave-one-database-out over seeds for each value of a setting")
    p.add_argument("data_dir", nargs="?", help=f"data folder (default: ${ds.DATA_ENV})")
    p.add_argument("--task", default=DEFAULT_TASK, help=f"{', '.join(TASKS)} or a task definition file (.toml)")
    p.add_argument("--arch", default="conv_lstm")
    p.add_argument(
        "--domain-adversarial", default="0,0.3", help="comma-separated gradient reversal factors to compare (0: none)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another setting for every variant (repeatable): a RunConfig or TrainSettings field "
        "(augment_copies=2, learning_rate=0.001) or features.FIELD (features.kind=logmel)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    p.add_argument("--windows-per-epoch", type=int, default=TrainSettings.windows_per_epoch)
    p.add_argument("--out", type=Path, help="results folder (default: artifacts/ablation/TASK)")
    p.add_argument("--jobs", type=int, default=2, help="models trained at once, one process and thread each")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    logging.getLogger("converter").setLevel(logging.INFO)
    try:
        values = [float(v) for v in args.domain_adversarial.split(",") if v.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise ds.DatasetError(f"bad list: {exc}", "give comma-separated numbers, e.g. --seeds 0,1,2") from exc
    overrides = parse_overrides(args.set)
    task = get_task(args.task)
    root = ds.resolve_data_dir(args.data_dir)
    out = args.out or Path("artifacts") / "ablation" / task.name
    out.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(
        task=args.task,
        archs=(args.arch,),
        folds=args.folds,
        jobs=max(1, args.jobs),
        settings=TrainSettings(epochs=args.epochs, windows_per_epoch=args.windows_per_epoch),
    )
    for seed in seeds:  # seed-major: a partial ablation still compares every value on the same seeds
        for value in values:
            path = out / result_name(value, seed, overrides)
            if path.exists():
                log.info("%s already done", path.name)
                continue
            result = run_one(root, cfg, args.arch, value, seed, overrides)
            path.write_text(json.dumps(result, indent=1, default=float))
            log.info("%s: %s", path.name, {k: result.get(k) for k in HEADLINES})
    summary = summarise(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n".join(table(summary)))
    print(f"results: {out}")
    return 0
