"""MODEL_CARD.md for the shipped models, written from the training reports and the sidecars.

python -m converter.model_card [--run DIR ...] [--rerun DIR] [--ablation DIR]

One section per shipped model, written from its sidecar and the run that trained it (a run's report
names its task; a two-class model gets the thresholded tables, a multi-class one the per-class ones).
The project's targets are checked for the default model (the one devices run unless told otherwise).
A model whose run folder is not given (or gone) keeps its section from the card already there, so one
model can be retrained without retraining the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from converter import thresholds
from converter.models import DESCRIPTIONS
from converter.tasks import task_of_model
from device.core.inference import DEFAULT_MODEL, available_models, models_dir

METRICS = ("sensitivity", "specificity", "macc", "accuracy", "auc")
STATUS_HEADER = "## Status against the project's targets"


def _sidecar(dest: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dest / f"{name}.json").read_text())
    return data


def section_header(meta: dict[str, Any]) -> str:
    """A model's section title, from its sidecar (older sidecars: from their task's definition)."""
    title = meta.get("title") or task_of_model(meta).title
    return f"## {title} (`{meta['name']}`)"


def section_headers(dest: Path | None = None) -> dict[str, str]:
    """The card's section headers: the status, then one per shipped model in ``dest``."""
    d = dest or models_dir()
    return {"status": STATUS_HEADER, **{n: section_header(_sidecar(d, n)) for n in available_models(d)}}


SECTION_HEADERS = section_headers()
# written by hand from `steth train-segmenter` and tests/benchmarks/eval_quality.py; kept as it is
SEGMENTER_HEADER = "## Heart cycles and signal quality (`segmenter`)"
# written by hand from tests/benchmarks/eval_murmur_ood.py (no training report holds it): kept when the
# murmur section is rewritten from a new run, to be measured again for that model
MURMUR_OOD_HEADER = "### Out of domain: PhysioNet 2016 (adults, other stethoscopes)"


def _f(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def not_scored(report: dict[str, Any]) -> str | None:
    """Why a run has no held-out figures (`steth train` without --score-test), or None when it has them."""
    if report.get("test") is not None:
        return None
    return str((report.get("test_split") or {}).get("why", "its report holds no test figures"))


def _not_scored_line(report: dict[str, Any]) -> str:
    why = not_scored(report)
    return f"Not scored by this run: {why}. `steth train --score-test` scores it once, with the final model."


def scored_phrase(report: dict[str, Any]) -> str:
    """How often the run's test split had been scored: once, or (``--test-looks``) more, which makes it
    development data rather than an unseen estimate, and the card says so wherever it gives its figures."""
    looks = (report.get("test_split") or {}).get("looks")
    if not looks or looks == 1:
        return "scored once"
    return f"scored for the {_ordinal(int(looks))} time: development data now, not an unseen estimate"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


SHORT_NOT_SCORED = "Test split not scored by this run (`steth train --score-test` scores it; see the held-out split)."


def _header(*columns: str) -> list[str]:
    """A Markdown table's header row and its rule."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def _ms(values: list[float]) -> str:
    arr = np.array([v for v in values if v is not None and not np.isnan(v)])
    return "–" if len(arr) == 0 else f"{arr.mean():.3f} ± {arr.std(ddof=1) if len(arr) > 1 else 0:.3f}"


def _features_line(fp: dict[str, Any]) -> str:
    """The input a model was trained on, from its run's FeatureParams (the sidecar carries the same)."""
    cmvn = {
        True: "each window's mean and variance per coefficient removed",
        False: "no normalisation",
        "mean": "each window's mean per coefficient removed",
        "recording": "the recording's mean and variance per coefficient removed",
        "recording-mean": "the recording's mean per coefficient removed (no variance scaling)",
    }.get(fp["cmvn"], str(fp["cmvn"]))
    kind = (
        f"{fp['n_mfcc']} MFCCs from {fp['n_mels']} mel bands"
        if fp["kind"] == "mfcc"
        else f"{fp['n_mels']} log-mel bands"
    )
    return (
        f"- Input: {fp['sample_rate']} Hz, band-pass {fp['band_low_hz']:g}-{fp['band_high_hz']:g} Hz, "
        f"{fp['window_s']:g} s windows every {fp['hop_s']:g} s, {kind} ({fp['fmin']:g}-{fp['fmax']:g} Hz), {cmvn}."
    )


def _threshold_words(report: dict[str, Any]) -> str:
    """Where the shipped threshold came from, in the card's words."""
    tr = (report.get("threshold_choice") or {}).get("transfer") or {}
    if tr.get("moved"):
        return (
            f"pooled over the CV models' out-of-fold scores at {tr['validated_threshold']:.3f}, "
            f"{thresholds.objective_words(report['threshold_choice'])}, then carried over to the final models: "
            f"at {tr['validated_threshold']:.3f} the CV "
            f"models flag {tr['reference_flag_rate']:.1%} of the {tr['n_recordings']} held-out recordings and the "
            f"final pair {tr['final_flag_rate']:.1%}, so the threshold is the final pair's score that flags "
            f"{tr['reference_flag_rate']:.1%}; their inputs only, no label read"
        )
    return (
        f"chosen on {thresholds.threshold_source(report)}, "
        f"{thresholds.objective_words(report.get('threshold_choice') or {})}; never on the held-out split"
    )


def binary_section(report: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """A two-class model: thresholded scores per scope, LODO, held-out split, parity, known signals."""
    out = [section_header(meta), ""]
    members = (report.get("ensemble") or {}).get("members")
    out += [
        f"- Architecture: **{report['chosen_arch']}** ({DESCRIPTIONS.get(report['chosen_arch'], '?')})"
        + (f", the average of {len(members)} such models ({', '.join(members)})" if members else "")
        + "; "
        f"threshold {report['threshold']:.3f} ({_threshold_words(report)}); int8 file "
        f"{meta['size_bytes']:,} bytes, sha256 `{meta['sha256']}`.",
        _features_line(report["feature_params"]),
        f"- Data: {report['n_recordings']} {_data_name(report)} recordings: {report['n_dev']} for development "
        f"(cross-validation, training), {report['n_test']} held out ("
        + (
            "the task's test split, per source below"
            if report.get("n_test_per_source") and len(report["n_test_per_source"]) > 1
            else "blocks of consecutive records"
        )
        + ", never seen in training or model selection, "
        + (f"{scored_phrase(report)})." if not_scored(report) is None else "not scored by this run)."),
        f"- Training: {report['config']['settings']['epochs']} epochs of "
        f"{report['config']['settings']['windows_per_epoch']} windows drawn evenly over label within database; "
        f"{report['config']['augment_copies']} augmented copy (gain, EQ, tilt, noise, shift); "
        + _database_head(report)
        + f"run took {report['seconds'] / 60:.0f} min on 2 CPU cores (all of CV, LODO and the final model).",
        "",
    ]
    out += [
        f"### Cross-validation ({report['config']['folds']} folds, blocks of consecutive records and linked "
        "patients kept together), mean ± sd over folds",
        "",
        *_header("architecture", "scope", *METRICS),
    ]
    for arch in dict.fromkeys(c["arch"] for c in report["cv"]):
        for scope in ("all", "not_e"):
            vals = [c["scores"].get(scope) for c in report["cv"] if c["arch"] == arch]
            if any(v is None for v in vals):
                continue
            out.append(
                f"| {arch} | {'all databases' if scope == 'all' else 'without training-e'} | "
                + " | ".join(_ms([v[m] for v in vals]) for m in METRICS)
                + " |"
            )
    out += [
        "",
        f"Chosen by {_headline_name(report)}: {json.dumps(report['cv_headline_means'])}.",
        "",
        f"![Cross-validation box plot](figures/{meta['name']}_boxplot.png)",
        "",
    ]
    if report.get("cv_source_means"):
        out += sources_section(report)
    if report.get("ensemble"):
        out += ensemble_section(report)
    out += threshold_section(report)
    if report.get("lodo"):
        out += [
            "### Leave one database out (train on the other databases, test on the one left out)",
            "",
            "The chosen architecture alone (not an average), all development recordings of one database held out."
            + (f" From {report['lodo_from']}." if report.get("lodo_from") else ""),
            "",
            *_header("held-out database", "n", *METRICS),
        ]
        maccs = []
        for row in report["lodo"]:
            s = row["scores"]["all"]
            maccs.append(s["macc"])
            # CirCor's recordings all sit in one stratum named after its folder
            db = "CirCor 2022 (training_data)" if row["held_out_db"] == "training_data" else row["held_out_db"]
            out.append(f"| {db} | {s['n']} | " + " | ".join(_f(s[m]) for m in METRICS) + " |")
        out += ["", f"Mean MAcc {np.mean(maccs):.3f}, lowest {np.min(maccs):.3f}.", ""]
    looks = "" if scored_phrase(report) == "scored once" else f"; {scored_phrase(report)}"
    out += [f"### Held-out test split (float model; int8 parity below{looks})", "", *_held_out_table(report)]
    p = meta["parity"]
    out += [
        "",
        f"int8 vs float on {p['n_recordings']} held-out recordings: decisions agree on "
        f"{p['agreement']:.1%}, largest probability difference {p['max_probability_difference']}"
        + (f", MAcc float {p['float']['macc']:.3f} vs int8 {p['int8']['macc']:.3f}" if "float" in p else "")
        + ".",
        "",
    ]
    for check in (report.get("task_definition") or task_of_model(meta).to_dict())["checks"]:
        b = report.get(check["name"])
        if b:
            out += [
                f"### Another stethoscope: {check['dataset']} {', '.join(check['subsets'])}",
                "",
                f"{b['n']} recordings of at least one window ({b['skipped_short']} shorter ones cannot be "
                "decided on): " + ", ".join(f"{m} {_f(b[m])}" for m in METRICS) + ".",
                "",
            ]
    if meta.get("check_failures"):
        out += ["Conversion checks that failed: " + "; ".join(meta["check_failures"]) + ".", ""]
    ks = meta["known_signals"]
    out += [
        "### Known non-heart signals through the shipped pipeline",
        "",
        "| signal | label | confidence |",
        "|---|---|---|",
    ]
    out += [f"| {k} | {v['label']} | {v['confidence']:.2f} |" for k, v in ks.items()]
    return [*out, ""]


def _held_out_table(report: dict[str, Any]) -> list[str]:
    """A two-class model's held-out figures per scope, or why the run has none."""
    t = report.get("test")
    if t is None:
        return [_not_scored_line(report)]
    # several sources: "not_e" pools CirCor and PASCAL with PhysioNet's other databases, so the per-source
    # table (sources_section) gives PhysioNet outside training-e instead
    rows = [("all databases", t["all"])] + (
        [("without training-e", t["not_e"])] if "not_e" in t and "sources" not in t else []
    )
    rows += [(db, v) for db, v in t["per_db"].items()]
    return [*_header("scope", "n", *METRICS)] + [
        f"| {name} | {s['n']} | " + " | ".join(_f(s[m]) for m in METRICS) + " |" for name, s in rows
    ]


ENSEMBLE_SCOPES = ("physionet2016/all", "physionet2016/not_e", "circor2022/patient")


def ensemble_section(report: dict[str, Any]) -> list[str]:
    """An averaged model (steth ensemble): the average and its two members on the same CV, each fold at
    the threshold pooled over the other folds, and the rule that decided."""
    e = report["ensemble"]
    names = {"candidate": "every source", "comparator": f"without {report['comparator']['trained_without']}"}
    names["average"] = "**average of the two (shipped)**"
    out = [
        "### The average of two models (`steth ensemble`), cross-validation",
        "",
        f"The shipped graph averages the class probabilities of {' and '.join(e['members'])} ({e['how']}). "
        "All three on the run's CV folds, each fold scored at the threshold pooled over the other folds' "
        "out-of-fold scores (mean over folds, MAcc / AUC):",
        "",
        *_header("model", *(label for scope, label in SOURCE_SCOPES if scope in ENSEMBLE_SCOPES)),
    ]
    for name, cv in e["cv_nested_pooled"].items():
        m = cv["means"]
        cells = [f"{_f(m[s]['macc'])} / {_f(m[s]['auc'])}" if s in m else "–" for s in ENSEMBLE_SCOPES]
        out.append(f"| {names.get(name, name)} | " + " | ".join(cells) + " |")
    d = e["decision"]
    out += ["", f"Rule ({d['rule']}): {'ship' if d['ship'] else 'do not ship'}.", ""]
    return out


SOURCE_SCOPES = (
    ("physionet2016/all", "PhysioNet, all databases"),
    ("physionet2016/not_e", "PhysioNet, outside training-e"),
    ("circor2022/all", "CirCor, per recording"),
    ("circor2022/patient", "CirCor, per patient (mean over recordings)"),
    ("circor2022/patient_any", "CirCor, per patient (any recording abnormal)"),
    ("pascal2011/all", "PASCAL (trains only; CV folds)"),
)


def _scope_label(source: dict[str, Any], part: str, label: str) -> str:
    """A scope's name; runs before session 14 scored CirCor patients only by "any recording abnormal",
    under "patient" (and wrote no "patient_any")."""
    if part == "patient" and "patient_any" not in source:
        return dict(SOURCE_SCOPES)["circor2022/patient_any"]
    return label


def _headline_name(report: dict[str, Any]) -> str:
    if report.get("cv_source_means"):
        return "the mean of PhysioNet MAcc outside training-e and CirCor MAcc per patient (CV)"
    return "the mean MAcc outside training-e"


def _source_rows(scores: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    sources = scores.get("sources", {})
    rows = []
    for scope, name in SOURCE_SCOPES:
        src, part = scope.split("/")
        if part in sources.get(src, {}):
            rows.append((_scope_label(sources[src], part, name), sources[src][part]))
    return rows


def sources_section(report: dict[str, Any]) -> list[str]:
    """A model trained on several sources: CV per source (every architecture and the comparator trained
    without CirCor), the ship decision, cross-source transfer and the test split per source."""
    keys = ("macc", "sensitivity", "specificity", "auc")
    out = [
        "### Cross-validation per source, mean ± sd over folds",
        "",
        *_header("model", "scope", *keys),
    ]
    comp = report.get("comparator", {})
    entries = [(a, [c for c in report["cv"] if c["arch"] == a]) for a in dict.fromkeys(c["arch"] for c in report["cv"])]
    if comp.get("cv"):
        entries.append((f"{report['chosen_arch']} without {comp['trained_without']}", comp["cv"]))
    for name, cvs in entries:
        for scope, label in SOURCE_SCOPES:
            src, part = scope.split("/")
            vals = [c["scores"].get("sources", {}).get(src, {}).get(part) for c in cvs]
            if vals and all(v is not None for v in vals):
                shown = _scope_label(cvs[0]["scores"]["sources"][src], part, label)
                out.append(f"| {name} | {shown} | " + " | ".join(_ms([v[k] for v in vals]) for k in keys) + " |")
    out += [
        "",
        "CirCor per recording and per patient count the recordings that carry a label: every site of an Absent "
        "patient, the sites where a Present patient's murmur is heard (Unknown patients and the other sites "
        "of Present patients do not train and are not scored).",
        "",
    ]
    if report.get("ship_decision"):
        d = report["ship_decision"]
        alone = " for the all-sources model alone** (the shipped average is judged below)"
        out += [
            "**Ship decision"
            + (alone if "ensemble" in report else "**")
            + " (rule fixed before the test split was scored, from CV figures only): "
            + d["rule"]
            + ". "
            + "; ".join(
                f"{k}: {_f(v['candidate'])} vs comparator {_f(v['comparator'])}" for k, v in d["figures"].items()
            )
            + f". Outcome: **{'ship' if d['ship'] else 'do not ship'}**.",
            "",
        ]
    if report.get("cross_source"):
        out += cross_source_section(report, keys)
    if not_scored(report):
        out += ["### Test split per source", "", SHORT_NOT_SCORED, ""]
    t = report.get("test") or {}
    if t.get("sources"):
        out += [
            f"### Test split per source ({'the shipped average' if 'ensemble' in report else 'final model'}, "
            f"float; {scored_phrase(report)})",
            "",
            *_header("scope", "n", *keys),
        ]
        out += [f"| {name} | {v['n']} | " + " | ".join(_f(v[k]) for k in keys) + " |" for name, v in _source_rows(t)]
        split = (report.get("task_definition") or {}).get("split", {})
        out += [
            "",
            "Test split: "
            + "; ".join(
                f"{d}: {r['rule']}"
                + (f" (fraction {r['fraction']}, seed {r['seed']})" if r["rule"] != "train_only" else "")
                for d, r in split.items()
            )
            + ". CirCor's test patients are the murmur model's.",
            "",
        ]
    return out


def cross_source_section(report: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Each cross-source model on the test split; a run that did not score it gives, for the source the
    comparator left out, the comparator's CV on that source (out of fold, mean over folds) instead."""
    scored = not_scored(report) is None
    out = [
        f"### Cross-source transfer ({'test split; ' if scored else ''}reported, nothing chosen with it)",
        "",
        *_header("trained without", "scored on", "n", *keys),
    ]
    for row in report["cross_source"]:
        d = row["trained_without"]
        if row.get("test") is not None:
            for name, v in _source_rows(row["test"]):
                out.append(f"| {d} | {name} | {v['n']} | " + " | ".join(_f(v[k]) for k in keys) + " |")
            continue
        means = row.get("cv_source_means") or {}
        cv = [(label, means[scope]) for scope, label in SOURCE_SCOPES if scope.split("/")[0] == d and scope in means]
        for label, v in cv:
            out.append(f"| {d} | {label} (CV, out of fold) | – | " + " | ".join(_f(v.get(k)) for k in keys) + " |")
        if not cv:
            out.append(
                f"| {d} | test split not scored; no CV trains without {d} | – | " + " | ".join("–" for _ in keys) + " |"
            )
    if not scored:
        cv_note = " Rows marked CV: the comparator's cross-validation on the source it left out (the folds above)."
        out += ["", SHORT_NOT_SCORED + (cv_note if any("(CV, out of fold)" in line for line in out) else "")]
    return [*out, ""]


def threshold_section(report: dict[str, Any]) -> list[str]:
    """How the decision threshold was chosen, and the development-data check behind that choice."""
    choice = report.get("threshold_choice")
    if not choice or not choice.get("transfer_check", {}).get("per_fold"):  # an ensemble: pooled only
        return []
    check = choice["transfer_check"]
    scopes = [k for k in ("not_e_macc", "all_macc") if k in check["at_validation"]]
    names = {"not_e_macc": "MAcc without training-e", "all_macc": "MAcc all databases"}
    lines = [
        "### Decision threshold",
        "",
        f"The final model's own validation part chose {choice['validation_threshold']:.3f}; the "
        f"out-of-fold scores of the {report['chosen_arch']} cross-validation models, pooled over "
        f"{report['n_dev']} development recordings, choose {choice['pooled_threshold']:.3f}. Which one "
        "transfers to a model that did not produce the pooled scores is checked per CV fold: the fold's "
        "model at its own validation threshold vs at the threshold pooled over the other folds (mean "
        "over folds):",
        "",
        *_header("threshold", *(names[k] for k in scopes)),
        "| each model's validation part | " + " | ".join(_f(check["at_validation"][k]) for k in scopes) + " |",
        "| pooled over the other folds | " + " | ".join(_f(check["at_pooled"][k]) for k in scopes) + " |",
        "",
        f"Shipped: **{report['threshold']:.3f}**, from {choice['source']} (the pooled threshold ships only "
        "where it does at least as well in this check, on the first scope).",
        "",
    ]
    return lines


def _database_head(report: dict[str, Any]) -> str:
    factor = float(report["config"]["settings"].get("domain_adversarial", 0.0))
    if factor <= 0:
        return ""
    return (
        f"a database head behind gradient reversal (factor {factor:g}) trained alongside, so the shared layers "
        "learn what does not identify the stethoscope and site (dropped from the shipped graph); "
    )


def ablation_section(summary: dict[str, Any]) -> list[str]:
    from converter.ablation import table

    seeds = sorted({s for v in summary["variants"] for s in v["seeds"]})
    return [
        f"### Settings compared: `steth ablate` over {len(seeds)} training seeds",
        "",
        "The same cross-validation folds and leave-one-database-out trainings as above, with and without the "
        "database head (and with other settings where named), repeated with different training seeds (the "
        "held-out split untouched); mean ± sd over seeds. One run of `steth train` moves by about ±0.05 from "
        "seed to seed, so a setting is adopted on the mean, not on one run. The pooled-threshold columns "
        "score each fold at the threshold pooled over the other folds' out-of-fold scores (see Decision "
        "threshold). A row names only the settings it changed from the defaults of the code it ran with "
        "(the rows without settings are screening 0.3.0's recipe); the shipped model's own are its Input line.",
        "",
        *table(summary),
        "",
    ]


def _row(name: str, s: dict[str, Any]) -> str:
    return f"| {name} | {_f(s['sensitivity'])} | {_f(s['specificity'])} | **{_f(s['macc'])}** | {_f(s['auc'])} |"


def _physionet_rows(name: str, by_db: dict[str, Any]) -> list[str]:
    return [
        f"| {name} | {db} | {v['n_normal']} | {v['n_abnormal']} | **{_f(v['false_alarm'])}** | {_f(v['auc'])} |"
        for db, v in by_db.items()
    ]


def _murmur_not_scored(report: dict[str, Any]) -> str:
    why = (report.get("test_split") or {}).get("why", "its report holds no test figures")
    return f"Test splits not scored by this run: {why}. `steth murmur train --score-test` scores them once."


def _murmur_test_split(report: dict[str, Any], chosen: str, physionet: bool) -> list[str]:
    """The chosen recipe and the baseline on the test splits (a run made with --score-test)."""
    cfg, rule = report["config"], report["rule"]
    cand, base = report["results"][chosen], report["results"]["baseline"]
    recipe = report["recipes"][chosen]
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    base_note = "" if "cv" in base else f", threshold {base['threshold']:.2f}: not cross-validated in this run"
    out = [
        "",
        f"Test split, mean over seeds {seeds} (the chosen recipe's first seed is the shipped model), float model:",
        "",
        "| model | level | Se | Sp | MAcc | AUC |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in ((chosen, cand), (f"baseline (no class weights, CirCor only{base_note})", base)):
        for level in ("patient", "recording"):
            s = r["test_mean"][level]
            out.append(
                f"| {name} | per {level} | {_f(s['sensitivity'])} | {_f(s['specificity'])} | **{_f(s['macc'])}** "
                f"| {_f(s['auc'])} |"
            )
    if physionet:
        out += [
            "",
            "PhysioNet 2016 test split (first seed, float model; scored once):",
            "",
            "| model | database | normal | abnormal | false alarms | AUC |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in ((chosen, cand), ("baseline", base)):
            out += _physionet_rows(name, r["test_physionet_per_seed"][0])
        if recipe.get("physionet_normals"):
            out += [
                "",
                "- PhysioNet's normal recordings trained as absent and its abnormal ones did not, so P(present) there "
                "also rises for whatever sounds unlike those normals, murmur or not: read its AUC abnormal vs normal "
                "as distance from the trained normals (highest in training-e, which holds most of them), not as "
                "murmur detection. The false-alarm rate on normals is the figure this recipe was chosen for.",
            ]
    target = cand["test_mean"]["patient"]["macc"]
    first = cand["test_per_seed"][0]
    gap = cand["test_mean"]["patient"]["macc"] - base["test_mean"]["patient"]["macc"]
    gap_auc = cand["test_mean"]["patient"]["auc"] - base["test_mean"]["patient"]["auc"]
    cv_gap = (
        f" (CV: {cand['cv'][rule]['patient']['macc'] - base['cv'][rule]['patient']['macc']:+.3f})"
        if "cv" in base
        else ""
    )
    out += [
        "",
        f"- Target per-patient MAcc >= 0.80 on the test split: **{'met' if target >= 0.80 else 'MISSED'}** "
        f"({target:.3f}).",
        f"- Against the baseline on the test split: per-patient MAcc {gap:+.3f}, AUC {gap_auc:+.3f}{cv_gap}. The "
        f"recipe was fixed on CV before the test split was scored ({len(cand['test_per_seed'])} seed(s), one run "
        f"each; the test split holds {first['patient']['n_abnormal']} Present patients, so one patient moves Se by "
        f"{1 / max(first['patient']['n_abnormal'], 1):.3f}).",
    ]
    return out


def murmur_section(report: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """The murmur model: CV and test-split figures per recording and per patient, its baseline, parity; with
    PhysioNet 2016 in the run, the recipe decision and false alarms on PhysioNet normals (CV and test)."""
    c = report["counts"]
    cfg = report["config"]
    rule = report["rule"]
    chosen = report.get("chosen", "candidate")
    results = report["results"]
    cand, base = results[chosen], results["baseline"]
    recipe = report["recipes"][chosen]
    physionet = "cv_physionet" in cand
    scored = "test_mean" in cand  # runs made without `steth murmur train --score-test` have none
    out = [
        section_header(meta),
        "",
        "- Answers beside every screening result as `murmur`: *present*, *absent*, or *unknown* when the signal "
        "is unfit (the screening model's quality check), with P(present) shifted so that 0.5 is the threshold "
        f"({meta['threshold']:.2f} on the raw mean window probability). Version {meta['version']}, int8 file "
        f"{meta['size_bytes']:,} bytes, sha256 `{meta['sha256']}`.",
        f"- Recipe **{chosen}**: architecture **{recipe['arch']}** ({DESCRIPTIONS.get(recipe['arch'], '?')}), "
        f"class weights {'on' if recipe['class_weights'] else 'off'}, {recipe['epochs']} epochs, no early stopping.",
        _features_line(report["feature_params"]),
        f"- Sources: CirCor DigiScope 2022 development patients ({c['dev_patients']} patients, {c['dev_recordings']} "
        f"recordings outside the test split; present = recordings at the sites where the murmur is heard, absent = "
        f"patients without one; Unknown patients and other sites of Present patients do not train) and PASCAL 2011 "
        f"murmur vs normal ({c['pascal_recordings']} recordings; {c['skipped']} recordings in all refused by the "
        "pipeline, nearly all PASCAL clips shorter than one 5 s window)"
        + (
            f"; PhysioNet 2016 normal recordings outside its test split as absent ({c['physionet_dev_normals']} "
            "recordings, adults, other stethoscopes; abnormal ones never train: their murmur status is unknown)."
            if recipe.get("physionet_normals")
            else "."
        ),
        f"- Test split: **{c['test_patients']} CirCor development patients** ({c['test_recordings']} recordings; "
        f"`converter.circor.split_patients`, fraction {cfg['test_fraction']}, seed {cfg['test_seed']}; linked "
        "patients together), set aside before anything else and "
        + (
            "scored once by each run that ships a version (0.1.0's run was the first; a version's choices are made "
            "on CV before its run scores them)"
            if scored
            else "not scored by this run (`steth murmur train --score-test`)"
        )
        + (
            f"; and **{c['physionet_test_recordings']} PhysioNet 2016 recordings**, the screening model's test split "
            f"(fold 0 of `converter.datasets.split_folds` over all labelled PhysioNet recordings, "
            f"{cfg['physionet_test']['folds']} folds, seed {cfg['physionet_test']['seed']}), never trained on."
            if physionet
            else ". PhysioNet normals were not used."
        ),
        f"- Exam rule (`device/core/exam.py`, docs/exam.md): **{rule}** of P(present) over a patient's usable "
        "sites; the threshold was chosen on the development patients' out-of-fold scores for per-patient MAcc "
        "under this rule.",
        "",
        f"Grouped {cfg['folds']}-fold CV on the development patients (seed {cfg['seeds'][0]}; each fold's "
        "threshold chosen on the other folds):",
        "",
        "| recipe, rule, level | Se | Sp | MAcc | AUC |",
        "|---|---|---|---|---|",
    ]
    cv_names = [n for n, r in results.items() if "cv" in r]
    for name in cv_names:
        for rl in ("mean", "max"):
            for level in ("patient", "recording"):
                if level == "recording" and rl != rule:
                    continue
                out.append(_row(f"{name}, {rl}, per {level}", results[name]["cv"][rl][level]))
    if physionet:
        out += [
            "",
            f"The same CV folds on PhysioNet 2016's development recordings ({c['physionet_dev_recordings']}; blocks "
            "of consecutive records kept together, stratified by database and label): false alarms = share of "
            "normal recordings at or above the fold's threshold; AUC = P(present) abnormal vs normal. "
            f"Per fold, then per database on the pooled out-of-fold scores ({rule} rule threshold of all folds):",
            "",
            "| recipe | database | normal | abnormal | false alarms | AUC |",
            "|---|---|---|---|---|---|",
        ]
        for name in cv_names:
            pn = results[name]["cv_physionet"]
            out.append(f"| {name} | mean of folds | | | **{_f(pn['false_alarm'])}** | {_f(pn['auc'])} |")
            out += _physionet_rows(name, pn["pooled"])
        out += [
            "",
            f"- Decision rule, fixed before the run: {report['decision_rule']}. Outcome: **{chosen}** "
            f"({report['decision']}). "
            + (
                "Only the chosen recipe and the baseline then trained final models and met the test splits."
                if scored
                else "Only the chosen recipe's shipped model then trained; the test splits were not scored."
            ),
        ]
    # the test-split figures end in bullets that the ones below continue
    out += _murmur_test_split(report, chosen, physionet) if scored else ["", _murmur_not_scored(report), ""]
    first = cand["test_per_seed"][0] if scored else None
    p = meta.get("parity", {})
    checks = "passed" if meta.get("checks_passed") else "FAILED: " + "; ".join(meta.get("check_failures", []))
    out += [
        *(
            [
                f"- The plain baseline scored higher on CirCor in CV (per-patient MAcc "
                f"{base['cv'][rule]['patient']['macc']:.3f} vs {cand['cv'][rule]['patient']['macc']:.3f}) but false-"
                f"alarmed on {base['cv_physionet']['false_alarm']:.1%} of PhysioNet's normal recordings in CV (the "
                f"chosen recipe {cand['cv_physionet']['false_alarm']:.1%}); the rule weighs the PhysioNet normals "
                "against the candidate recipe only: a baseline trained with them was not run."
            ]
            if physionet and "cv" in base and base["cv"][rule]["patient"]["macc"] > cand["cv"][rule]["patient"]["macc"]
            else []
        ),
        (
            f"- The shipped model (seed {cfg['seeds'][0]}) on the test split: per patient Se "
            f"{first['patient']['sensitivity']:.3f}, Sp {first['patient']['specificity']:.3f}, MAcc "
            f"{first['patient']['macc']:.3f}, AUC {first['patient']['auc']:.3f} (float); per recording int8 MAcc "
            if first
            else f"- The shipped model (seed {cfg['seeds'][0]}) on the test recordings (conversion check): per "
            "recording int8 MAcc "
        )
        + f"{p.get('int8', {}).get('macc', float('nan')):.3f}, AUC {p.get('int8', {}).get('auc', float('nan')):.3f}.",
        f"- Conversion: int8 agrees with float on {p.get('agreement', float('nan')):.1%} of "
        f"{p.get('n_recordings', 0)} test recordings"
        + (" (CirCor test patients and PhysioNet test normals)" if physionet else "")
        + f", MAcc delta {p.get('macc_delta', float('nan')):.3f}; known signals: "
        + ", ".join(f"{k} {v['label']}" for k, v in meta.get("known_signals", {}).items())
        + f"; checks {checks}.",
        f"- Training time: the whole run ({'CV, final models and baseline' if scored else 'CV and the shipped model'}) "
        f"took {report['seconds'] / 60:.0f} min on "
        "this shared 2-core machine.",
        "- Intended use: a prompt to listen again or refer when a murmur is likely; **not a diagnosis**, and not "
        "a judgement of whether a murmur is innocent or pathological.",
        "- Limits: the murmur labels come from one stethoscope family (CirCor's Littmann 3200, mostly children in "
        "Brazil; PASCAL's recordings are few and mostly too short for a 5 s window)"
        + (
            "; PhysioNet's adults from other stethoscopes only teach it what *absent* sounds like there (no adult "
            "murmur labels exist in the project's data)"
            if recipe.get("physionet_normals")
            else "; not trained on adults or other stethoscopes"
        )
        + ". Not measured on the held-back CirCor patients. A recording of 2-5 s is repeated to one 5 s window "
        "(as for screening) and answered; it trained on 5 s windows only, so such answers are less steady; "
        "under 2 s there is no answer.",
        "",
    ]
    return out


def _kept_section(card: Path, header: str) -> list[str]:
    """``header``'s section of an existing card (up to the next header of its level or above: ``## `` for a
    ``## `` section, ``## `` or ``### `` for a ``### `` one), or nothing."""
    if not card.exists():
        return []
    lines = card.read_text().splitlines()
    if header not in lines:
        return []
    level = len(header) - len(header.lstrip("#"))
    start = lines.index(header)

    def ends(line: str) -> bool:
        hashes = len(line) - len(line.lstrip("#"))
        return 0 < hashes <= level and line[hashes : hashes + 1] == " "

    end = next((i for i in range(start + 1, len(lines)) if ends(lines[i])), len(lines))
    return lines[start:end]


def multiclass_section(report: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """A model with more than two labels: PASCAL challenge measures per class and set."""
    labels = report["labels"]
    out = [
        section_header(meta),
        "",
        f"- Architecture **{report['chosen_arch']}** ({DESCRIPTIONS.get(report['chosen_arch'], '?')}), "
        f"labels {', '.join(labels)} ({_data_name(report)}); "
        f"{report['feature_params']['window_s']:g} s windows. int8 file "
        f"{meta['size_bytes']:,} bytes, sha256 `{meta['sha256']}`.",
        f"- {report['n_dev']} development and {report['n_test']} held-out recordings (set B patients kept together).",
        "",
        "### Held-out test split, PASCAL challenge measures per set",
        "",
    ]
    t = report.get("test")
    if t is None:
        out += [_not_scored_line(report), ""]
    for scope, s in [("all", t["all"]), *t["per_db"].items()] if t is not None else []:
        out += [
            f"**{scope}**: accuracy {_f(s['accuracy'])}",
            "",
            "| class | n | precision | sensitivity | specificity | Youden | F-score | discriminant power |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c, v in s["per_class"].items():
            out.append(
                f"| {c} | {v['n']} | {_f(v['precision'])} | {_f(v['sensitivity'])} | {_f(v['specificity'])} "
                f"| {_f(v['youden'])} | {_f(v['f_score'])} | {_f(v['discriminant_power'])} |"
            )
        cm = s["confusion"]
        out += ["", "Confusion matrix (rows true, columns predicted: " + ", ".join(labels) + "):", "", "```"]
        out += ["  ".join(f"{x:4d}" for x in row) for row in cm]
        out += ["```", ""]
    if meta.get("check_failures"):
        out += ["Conversion checks that failed: " + "; ".join(meta["check_failures"]) + ".", ""]
    lodo = [(r["held_out_db"], r["scores"]["all"]["accuracy"]) for r in report.get("lodo", [])]
    if lodo:
        out += [
            "Trained on the other sets, tested on the one named: "
            + ", ".join(f"tested on {db}: accuracy {acc:.3f}" for db, acc in lodo)
            + ".",
            "",
        ]
    cv_acc = [c["scores"]["all"]["accuracy"] for c in report["cv"]]
    out += [f"Cross-validation accuracy ({len(cv_acc)} folds): {_ms(cv_acc)}.", ""]
    return out


FOOTER = """## Intended use

Screening support for clinicians: a prompt to listen again, refer or investigate. **Not a diagnosis.**
A result of *unsure* means the recording cannot be assessed (silence, clipping, no heart sounds found,
noise over most of it; `quality.reason` says which): record again. The model's probabilities are
reported beside it.

## Known limits

- Populations: PhysioNet 2016 mixes adults and children from several countries and clinical settings;
  PASCAL comes from a smartphone app (set A) and a clinical trial (set B). Patients unlike these
  (neonates, very high heart rates, prosthetic valves) are not represented.
- Devices: six databases' stethoscopes plus two PASCAL set-ups. A new stethoscope can shift the
  scores: the leave-one-database-out table is the honest estimate of that; check a few dozen labelled
  recordings from a new device with `steth evaluate` before relying on it. `steth calibrate` sets the
  decision threshold on such recordings where cross-validation on them shows a gain (docs/deploy.md);
  every result decided that way says so.
- Noise: recordings in noisy wards score worse (training-b, PASCAL noisy sublabels); the quality gate
  turns the worst into *unsure*. On PhysioNet 2016 it now does so about as often for abnormal
  recordings as for normal ones (1.2 % / 1.1 %; 3.3 % / 1.2 % before the heart sound share), except in
  training-a, whose clipped recordings are abnormal ones (see the segmenter section).
- The screening model decides per recording from 5 s windows; a recording of 2-5 s is repeated end to
  end to fill one window (fewer heart cycles: a less steady answer), and one under 2 s gets none.
  Abnormal covers many conditions (valve disease, murmurs, CAD in training-e) that the model does not
  tell apart.
- The screening model listens up to 700 Hz (since 0.4.0; 400 Hz before) and normalises over the whole
  recording. Over three training seeds that raised cross-validated MAcc outside training-e (+0.04) and
  leave-one-database-out MAcc (+0.03), but not how well it ranks a database it never heard (AUC -0.01);
  training-d, left out, was ranked worse (AUC 0.64 vs 0.68; docs/experiments.md). What lies above 400
  Hz differs between stethoscopes: on a new one, check with `steth evaluate` first.
- The probabilities are calibrated so that 0.5 is the decision threshold; they are not
  population-calibrated risks. The model is trained with equal labels inside every database, so its
  score carries no clinic's prevalence (training-a is 73% abnormal, training-e 9%). Letting the score
  learn each database's prevalence lifts PhysioNet CV MAcc by 0.02-0.04 (research/site_prior,
  research/label_mix), but by recognising the database's sound, not by hearing the heart better (AUC
  within most databases fell), and a kit's stethoscope is none of those databases. Within one site a
  prevalence would only move the threshold; what a kit needs is its own threshold for its own score
  shift, which `steth calibrate` sets from the kit's labelled recordings.
- Sensitivity outside training-e is well below what a diagnostic test needs (see the held-out table):
  a *normal* answer does not rule out heart disease. The decision threshold moves from run to run (see
  Decision threshold), trading sensitivity against specificity.
- What "abnormal" sounds like differs between the training databases: coronary artery disease in
  training-b and training-e (often without a murmur), mostly valve disease elsewhere. Trained on the
  other databases, this model ranks the abnormal recordings of training-b and training-e at about
  chance (leave-one-database-out table), and so does a model of another kind (gradient-boosted trees on
  rhythm and band features, docs/experiments.md): a *normal* answer says little about coronary artery
  disease, nor about any condition whose recordings the training data lacks.
"""


NOT_SCORED_CELL = "not scored (`steth train --score-test`)"


def _met(met: bool | None) -> str:
    return "–" if met is None else ("yes" if met else "**no**")


def _data_name(report: dict[str, Any]) -> str:
    task = report.get("task_definition") or {}
    return str(task.get("description") or report.get("task", "?"))


def status_section(
    screening: dict[str, Any] | None, meta: dict[str, Any] | None, rerun: dict[str, Any] | None = None
) -> list[str]:
    """The project's targets next to what the default model reached: misses are stated, not hidden."""
    if not screening or not meta:
        return []
    t = screening.get("test") or {}
    scored = not_scored(screening) is None
    lodo = [r["scores"]["all"]["macc"] for r in screening.get("lodo", [])]
    cv_all = [c["scores"]["all"]["macc"] for c in screening["cv"] if c["arch"] == screening["chosen_arch"]]
    p = meta["parity"]
    not_e = t.get("not_e", {}).get("macc")
    lodo_mean = float(np.mean(lodo)) if lodo else None
    lodo_min = float(np.min(lodo)) if lodo else None
    minutes = screening.get("seconds", float("nan")) / 60
    took = _took(screening)
    if rerun:
        took += f"; {_took(rerun)} for the rerun below"
        minutes = min(minutes, rerun["seconds"] / 60)
    # (target, required, reached, met?) — met is None where there is nothing to meet (reported only).
    rows: list[tuple[str, str, str, bool | None]] = [
        (
            "held-out MAcc (int8)",
            ">= 0.90",
            f"{p['int8']['macc']:.3f} (float {p['float']['macc']:.3f})",
            p["int8"]["macc"] >= 0.90,
        ),
        (
            "held-out MAcc outside training-e",
            ">= 0.80",
            _f(not_e) if scored else NOT_SCORED_CELL,
            (not_e is not None and not_e >= 0.80) if scored else None,
        ),
        ("leave-one-database-out mean MAcc", ">= 0.75", _f(lodo_mean), lodo_mean is not None and lodo_mean >= 0.75),
        ("leave-one-database-out lowest MAcc", ">= 0.60", _f(lodo_min), lodo_min is not None and lodo_min >= 0.60),
        ("CV MAcc, chosen architecture", "mean ± sd reported", _ms(cv_all), None),
        ("int8 agrees with float", ">= 99% of recordings", f"{p['agreement']:.1%}", p["agreement"] >= 0.99),
        ("int8 vs float MAcc", "differ <= 0.01", f"{p['macc_delta']:.3f}", p["macc_delta"] <= 0.01),
        ("model file", "<= 100 KB", f"{meta['size_bytes'] / 1024:.0f} KB", meta["size_bytes"] <= 100 * 1024),
        ("whole `steth train` run", "<= 30 min", took, minutes <= 30),
    ]
    if t.get("sources") or (not scored and len(screening.get("n_test_per_source") or {}) > 1):
        rows = multi_source_targets(screening, meta, lodo_mean, lodo_min, cv_all, took, minutes)
    missed = [a for a, _, _, met in rows if met is False]
    verdict = (
        f"**This model misses {len(missed)} of {sum(met is not None for *_, met in rows)} targets "
        f"({', '.join(missed)}).** It ships so that the device and dashboard work out of the box; read the "
        + ("leave-one-database-out" if lodo else "cross-source transfer")  # a run without LODO has none to read
        + " figures before relying on it with a stethoscope it was not trained on."
        if missed
        else "This model meets every target below."
    )
    if not scored:
        verdict = verdict.replace("every target below", "every target measured below") + (
            " The held-out targets were not measured: this run did not score the test split "
            "(`steth train --score-test` scores it once, with the final model)."
        )
    out = [
        STATUS_HEADER,
        "",
        verdict,
        "",
        "| target | required | this model | met |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {_met(m)} |" for a, b, c, m in rows]
    if meta.get("check_failures"):
        out += [
            "",
            "Conversion checks that failed (the model was written with `--allow-parity-shortfall`, which records "
            "them here and in the sidecar): " + "; ".join(meta["check_failures"]) + ".",
        ]
    if rerun:
        out += ["", *rerun_section(screening, rerun)]
    return [*out, ""]


def multi_source_targets(
    report: dict[str, Any],
    meta: dict[str, Any],
    lodo_mean: float | None,
    lodo_min: float | None,
    cv_all: list[float],
    took: str,
    minutes: float,
) -> list[tuple[str, str, str, bool | None]]:
    """Issue 23's targets for a model trained on several sources (test split per source, float model)."""
    scored = not_scored(report) is None
    src = (report.get("test") or {}).get("sources", {})
    physio, not_e = src.get("physionet2016", {}).get("all", {}), src.get("physionet2016", {}).get("not_e", {})
    patient = src.get("circor2022", {}).get("patient", {})
    p = meta["parity"]
    # what the screening kit runs per recording: the screening model and the murmur model beside it
    dest = models_dir()
    total = sum(
        (dest / f"{n}.tflite").stat().st_size for n in ("screening", "murmur") if (dest / f"{n}.tflite").exists()
    )

    def at_least(v: dict[str, Any], bar: float) -> bool | None:
        return None if not v else bool(v["macc"] >= bar)

    def reached(v: dict[str, Any]) -> str:
        return _f(v.get("macc")) if scored else NOT_SCORED_CELL

    return [
        ("test split PhysioNet MAcc", ">= 0.90", reached(physio), at_least(physio, 0.90)),
        ("test split PhysioNet MAcc outside training-e", ">= 0.80", reached(not_e), at_least(not_e, 0.80)),
        ("test split CirCor MAcc per patient", ">= 0.80", reached(patient), at_least(patient, 0.80)),
        ("leave-one-database-out MAcc", "reported", f"mean {_f(lodo_mean)}, lowest {_f(lodo_min)}", None),
        ("CV MAcc (all sources), chosen architecture", "mean ± sd reported", _ms(cv_all), None),
        ("int8 agrees with float", ">= 99% of recordings", f"{p['agreement']:.1%}", p["agreement"] >= 0.99),
        ("int8 vs float MAcc", "differ <= 0.01", f"{p['macc_delta']:.3f}", p["macc_delta"] <= 0.01),
        ("screening + murmur models (int8)", "<= 1 MB together", f"{total / 1024:.0f} KB", total <= 1024 * 1024),
        ("whole `steth train` run", "<= 60 min on 2 cores", took, minutes <= 60),
    ]


def _took(report: dict[str, Any]) -> str:
    jobs = report["config"].get("jobs", 1)
    return f"{report['seconds'] / 60:.0f} min, " + ("one training at a time" if jobs == 1 else f"{jobs} at a time")


def rerun_section(run: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """The same command run twice: how far its figures move without any change (float model, held out)."""

    def figures(r: dict[str, Any]) -> list[str]:
        cv = [c["scores"]["all"]["macc"] for c in r["cv"] if c["arch"] == r["chosen_arch"]]
        lodo = {x["held_out_db"][-1]: x["scores"]["all"]["macc"] for x in r.get("lodo", [])}
        t = r.get("test")
        return [
            r["chosen_arch"],
            _ms(cv),
            _f(t["all"]["macc"]) if t is not None else NOT_SCORED_CELL,
            _f(t.get("not_e", {}).get("macc")) if t is not None else NOT_SCORED_CELL,
            " ".join(f"{k} {v:.2f}" for k, v in lodo.items()),
            _f(float(np.mean(list(lodo.values())))) if lodo else "–",
        ]

    head = ["run", "chosen", "CV MAcc", "held-out MAcc", "outside training-e", "LODO per database", "LODO mean"]
    a, b = run["config"], rerun["config"]
    # neither the trainings at a time nor whether the test split was scored changes what is trained
    differs = sorted(k for k in set(a) | set(b) if k not in ("jobs", "score_test") and a.get(k) != b.get(k))
    how = (
        f"with other settings ({', '.join(differs)})"
        if differs
        else "with the same settings and seeds (only the trainings at a time differ, which changes the "
        "floating-point order of the convolutions)"
    )
    return [
        f"**Run to run.** The same data trained a second time {how}: the spread below is what any single "
        "figure in this card carries; small databases (training-c: 31 recordings) swing most.",
        "",
        *_header(*head),
        "| shipped | " + " | ".join(figures(run)) + " |",
        "| rerun | " + " | ".join(figures(rerun)) + " |",
    ]


def _report(run: Path | None) -> dict[str, Any] | None:
    if run is None or not (run / "report.json").exists():
        return None
    data: dict[str, Any] = json.loads((run / "report.json").read_text())
    return data


def write(
    runs: list[Path | None],
    dest: Path,
    rerun: Path | None = None,
    ablation: Path | None = None,
    murmur_run: Path | None = None,
    test_looks: int | None = None,
) -> Path:
    """The card in ``dest``: each shipped model's section from the run (among ``runs``) of its task;
    ``rerun`` (a second run of the default model's command) and ``ablation`` go with the default model."""
    card = dest / "MODEL_CARD.md"
    reports = [r for r in map(_report, runs) if r is not None]
    by_task = {r["task"]: r for r in reports}
    if test_looks:  # how often the given runs' test split had been scored, their own look included
        for r in reports:
            r["test_split"] = {**(r.get("test_split") or {}), "looks": test_looks}
    lines = [
        "# Model card: stethoscope-edge shipped models",
        "",
        "> Screening support, not a diagnosis. Figures below were measured on the development data of "
        "`../shared/data` as described; each section says whether, and how often, the held-out split it "
        "scores had been scored.",
        "",
    ]
    models = {n: _sidecar(dest, n) for n in available_models(dest)}
    default = models.get(DEFAULT_MODEL)
    default_report = by_task.get(default["task"]) if default else None
    if default_report:
        lines += status_section(default_report, default, _report(rerun))
    else:
        lines += _kept_section(card, STATUS_HEADER)
    for meta in models.values():
        report = by_task.get(meta["task"])
        if report is None:
            lines += _kept_section(card, section_header(meta))
            continue
        # a run of `steth murmur train` (its report has recipes: candidate and baseline) has its own section
        if "recipes" in report:
            section = murmur_section
        else:
            section = binary_section if meta.get("positive_label") is not None else multiclass_section
        lines += section(report, meta)
        if section is murmur_section:
            lines += _kept_section(card, MURMUR_OOD_HEADER)
        if meta is default and ablation and any(ablation.glob("da*-seed*.json")):
            from converter.ablation import summarise

            lines += ablation_section(summarise(ablation))
    lines += _kept_section(card, SEGMENTER_HEADER)
    lines.append(FOOTER)
    card.write_text("\n".join(lines))
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--run",
        type=Path,
        action="append",
        help="a `steth train` run folder (repeatable; default: every folder under artifacts/train)",
    )
    p.add_argument("--dest", type=Path, default=None)
    p.add_argument("--rerun", type=Path, help="a second run of the default model's command: its figures beside")
    p.add_argument(
        "--ablation",
        type=Path,
        help="a `steth ablate` results folder (e.g. research/ablations/screening): its table goes in the card",
    )
    p.add_argument(
        "--test-looks",
        type=int,
        help="how many times the runs' test split had been scored, their own look included (said beside its figures)",
    )
    args = p.parse_args(argv)
    dest = args.dest or models_dir()
    runs = args.run or sorted(p for p in Path("artifacts/train").glob("*") if p.is_dir())
    print(write(runs, dest, args.rerun, args.ablation, test_looks=args.test_looks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
