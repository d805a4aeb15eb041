"""Screening on every development source (issue 23): CirCor as a task source, the task's own test split,
and a run on a tiny real slice of PhysioNet, CirCor and PASCAL."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from converter import circor as cc
from converter import datasets as ds
from converter import murmur
from converter.run_config import RunConfig
from converter.tasks import LOADERS, TASKS, Task
from converter.train import headline, run, ship_decision, source_scores
from converter.trainer import TrainSettings
from device.core.errors import ConfigError, ModelError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slice_root(data_dir: Path) -> Path:
    if not (data_dir / "circor2022" / "training_data").is_dir():
        pytest.skip(f"CirCor slice not found under {data_dir}")
    return data_dir


def test_it_loads_circor_recordings_with_the_murmur_models_labels(slice_root):
    recs = LOADERS[cc.CIRCOR](slice_root)
    raw = {r.record_id: r for r in cc.load_circor2022(slice_root)}
    assert len(recs) == len(raw) and {r.dataset for r in recs} == {cc.CIRCOR}
    for r in recs:
        assert r.label == murmur.murmur_label(raw[r.record_id]) and r.group == raw[r.record_id].group
    assert {r.label for r in recs} == {"present", "absent", "unknown"}
    screening = TASKS["screening"]
    kept = screening.relabel(recs)
    by_id = {r.record_id: r for r in recs}
    # heard here -> abnormal, absent patient -> normal, unknown (other sites, Unknown patients) left out
    assert {(by_id[r.record_id].label, r.label) for r in kept} == {("present", "abnormal"), ("absent", "normal")}
    assert len(kept) == sum(r.label != "unknown" for r in recs)


def test_the_test_split_keeps_every_group_on_one_side(slice_root):
    task = TASKS["screening"]
    recs = task.loader(slice_root)
    held = task.split.held_out(recs, slice_root)
    sides: dict[str, set[bool]] = {}
    for r, h in zip(recs, held, strict=True):
        sides.setdefault(r.group, set()).add(bool(h))
    assert all(len(s) == 1 for s in sides.values())
    assert not any(h for r, h in zip(recs, held, strict=True) if r.dataset == ds.PASCAL)  # PASCAL only trains
    physio = [r for r, h in zip(recs, held, strict=True) if r.dataset == ds.PHYSIONET and h]
    assert 0.15 < len(physio) / sum(r.dataset == ds.PHYSIONET for r in recs) < 0.25
    # fixed per data set: loading PhysioNet alone holds out the same records
    alone = [r for r in recs if r.dataset == ds.PHYSIONET]
    assert [r.key for r, h in zip(alone, task.split.held_out(alone, slice_root), strict=True) if h] == [
        r.key for r in physio
    ]
    # a new seed: not the split of 0.1.0-0.4.0 (seed 0 over PhysioNet)
    _, old = ds.train_test_split(alone, 0.2, seed=0)
    assert {r.key for r in old} != {r.key for r in physio}


def test_the_murmur_model_holds_out_the_screening_tasks_physionet_test_split(slice_root):
    """murmur 0.2.0 trains on PhysioNet development normals: its PhysioNet test split must be this task's, or
    one model would train on recordings the other is scored on."""
    task = TASKS["screening"]
    physio = ds.load_physionet2016(slice_root)
    held = task.split.held_out(physio, slice_root)
    assert murmur.physionet_test_keys(physio) == {r.key for r, h in zip(physio, held, strict=True) if h}


def test_circor_test_patients_are_the_murmur_models(slice_root):
    task = TASKS["screening"]
    rule, defaults = task.split.rules[cc.CIRCOR], murmur.RunConfig("", None, None)
    assert (rule.rule, rule.fraction, rule.seed) == ("patients", defaults.test_fraction, defaults.test_seed)
    everyone = cc.load_circor2022(slice_root)
    _, murmur_test = cc.split_patients(everyone, defaults.test_fraction, defaults.test_seed)
    recs = task.loader(slice_root)
    held = task.split.held_out(recs, slice_root)
    ours = {cc.patient_of(r.record_id) for r, h in zip(recs, held, strict=True) if r.dataset == cc.CIRCOR and h}
    # Unknown patients do not train screening, so compare on the patients screening has
    labelled = {cc.patient_of(r.record_id) for r in recs if r.dataset == cc.CIRCOR}
    assert ours == {r.patient for r in murmur_test} & labelled and ours


def _full_circor() -> Path | None:
    raw = os.environ.get("STETH_CIRCOR_FULL", "/work/data/circor_full/src/data/raw_training")
    return Path(raw) if (Path(raw) / "training_data").is_dir() else None


@pytest.mark.skipif(_full_circor() is None, reason="full CirCor set not found (STETH_CIRCOR_FULL)")
def test_on_the_full_set_the_circor_test_patients_are_the_137_of_the_murmur_model(slice_root, tmp_path):
    full = _full_circor()
    assert full is not None
    root = tmp_path / "circor2022"
    root.mkdir()
    for name in ("training_data", "training_data.csv"):
        (root / name).symlink_to(full / name)
    (root / cc.PATIENTS_FILE).symlink_to(slice_root / "circor2022" / cc.PATIENTS_FILE)
    groups = TASKS["screening"].split.test_groups(cc.CIRCOR, tmp_path)
    patients = {r.patient for r in cc.load_circor2022(tmp_path) if r.group in groups}
    listed = (REPO / "research" / "murmur" / "test_patients.txt").read_text().split()
    assert len(patients) == 137 and patients == {p for p in listed if p.isdigit()}


@pytest.mark.parametrize(
    ("split", "says"),
    [
        ({"physionet2016": {"rule": "random"}}, "rule 'random' is not one of"),
        ({"physionet2016": {"rule": "patients"}}, "the patients rule is CirCor's"),
        ({"physionet2016": {"rule": "blocks", "fraction": 1.5}}, "fraction 1.5 is not between 0 and 1"),
        ({"physionet2016": {"rule": "blocks"}}, "split: no rule for circor2022"),
    ],
)
def test_a_broken_split_is_refused_with_what_is_wrong(split, says):
    data = {**TASKS["screening"].to_dict(), "split": split}
    with pytest.raises(ConfigError, match=says):
        Task.from_dict(data)


def test_the_headline_is_the_mean_of_physionet_outside_e_and_circor_per_patient():
    task = TASKS["screening"]
    s = {
        "all": {"macc": 0.1},
        "sources": {"physionet2016": {"not_e": {"macc": 0.8}}, "circor2022": {"patient": {"macc": 0.6}}},
    }
    assert headline(task, s) == pytest.approx(0.7)
    assert headline(task, {"all": {"macc": 0.1}, "not_e": {"macc": 0.5}}) == 0.5


def test_a_circor_patient_is_scored_by_the_mean_over_recordings_as_the_device_does_and_by_any_beside_it():
    task = TASKS["screening"]
    recs = [
        ds.Recording(cc.CIRCOR, cc.SUBSET, rid, Path("x.wav"), lab, lab, rid.split("_")[0])
        for rid, lab in [("1_AV", "abnormal"), ("1_MV", "abnormal"), ("2_AV", "normal"), ("2_PV", "normal")]
    ]
    y = np.array([1, 1, 0, 0])
    # patient 1: mean 0.45 (normal by the device's rule), any 0.7 (abnormal); patient 2: mean 0.35, any 0.6
    s = np.array([0.7, 0.2, 0.1, 0.6])
    patient = source_scores(task, recs, y, s, 0.5)[cc.CIRCOR]
    assert patient["patient"]["sensitivity"] == 0 and patient["patient"]["specificity"] == 1
    assert patient["patient_any"]["sensitivity"] == 1 and patient["patient_any"]["specificity"] == 0
    assert patient["patient"]["n"] == patient["patient_any"]["n"] == 2


def test_the_ship_rule_needs_physionet_within_the_margin_and_circor_better():
    def figures(p_all: float, p_ne: float, c: float) -> dict[str, dict[str, float]]:
        return {
            "physionet2016/all": {"macc": p_all},
            "physionet2016/not_e": {"macc": p_ne},
            "circor2022/patient": {"macc": c},
        }

    comparator = figures(0.85, 0.75, 0.60)
    assert ship_decision(figures(0.84, 0.74, 0.65), comparator, 0.02)["ship"]
    assert not ship_decision(figures(0.82, 0.74, 0.65), comparator, 0.02)["ship"]  # PhysioNet too far below
    assert not ship_decision(figures(0.86, 0.76, 0.60), comparator, 0.02)["ship"]  # CirCor not better


SLICE_RUN = RunConfig(
    archs=("lstm",),
    folds=2,
    lodo=False,
    augment_copies=0,
    limit_per_stratum=2,
    jobs=1,
    settings=TrainSettings(epochs=1, windows_per_epoch=64, batch_size=16),
)


@pytest.mark.slow
def test_a_run_on_a_slice_of_all_three_sources_trains_end_to_end(slice_root, tmp_path):
    report = run(slice_root, tmp_path, replace(SLICE_RUN, score_test=True))
    assert set(report["task_definition"]["train_on"]) == {"physionet2016", "circor2022", "pascal2011"}
    assert {r.split("/")[0] for r in json.loads((tmp_path / "split.json").read_text())["dev"]} == {
        "physionet2016",
        "circor2022",
        "pascal2011",
    }
    assert [c["trained_without"] for c in report["cross_source"]] == ["circor2022", "physionet2016"]
    assert len(report["comparator"]["cv"]) == 2 and "ship" in report["ship_decision"]
    assert {"physionet2016/not_e", "circor2022/patient", "pascal2011/all"} <= set(report["cv_source_means"]["lstm"])
    assert "physionet2016" in report["test"]["sources"]
    assert report["n_test_per_source"]["pascal2011"] == 0
    # the comparator's out-of-fold scores too, for threshold studies on both models (session 14)
    comp = json.loads((tmp_path / "oof_comparator.json").read_text())
    assert comp["records"] == json.loads((tmp_path / "oof.json").read_text())["records"]
    assert list(comp["probabilities"]) == ["lstm"]
    # the average of the final model and the one without CirCor: judged on the same CV, converted as one model
    from converter import convert, ensemble

    ens = ensemble.make(tmp_path, slice_root)
    cv = ens["ensemble"]["cv_nested_pooled"]
    assert set(cv) == {"candidate", "comparator", "average"} and "ship" in ens["ensemble"]["decision"]
    assert len(cv["average"]["thresholds"]) == 2 and 0.0 < ens["threshold"] < 1.0
    assert "physionet2016" in ens["test"]["sources"]
    meta = convert.convert(tmp_path / "ensemble", slice_root, "screening", "0.0.1", tmp_path / "shipped", True)
    assert meta["architecture"] == "lstm" and meta["ensemble"]["members"][1] == "model_without_circor2022.h5"
    assert meta["parity"]["n_recordings"] > 0 and (tmp_path / "shipped" / "screening.tflite").exists()


@pytest.mark.slow
def test_a_run_without_score_test_trains_and_saves_every_model_and_scores_no_test_figures(slice_root, tmp_path):
    # the default: the held-out split stays unseen; --save-folds keeps every CV model
    report = run(slice_root, tmp_path, replace(SLICE_RUN, save_folds=True))
    assert report["test"] is None and report["test_split"]["scored"] is False
    assert "--score-test" in report["test_split"]["why"]
    for name in ("model.h5", "model_without_circor2022.h5", "model_without_physionet2016.h5", "split.json"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "split.json").read_text())["test"]  # steth convert's parity check needs it
    assert json.loads((tmp_path / "report.json").read_text())["test"] is None
    rows = {r["trained_without"]: r for r in report["cross_source"]}
    assert all(r["test"] is None for r in rows.values())
    # trained without CirCor -> CirCor, out of fold: the comparator's CV, in the row it stands in for
    assert rows["circor2022"]["cv_source_means"] == report["comparator"]["cv_source_means"]
    assert "circor2022/patient" in rows["circor2022"]["cv_source_means"]
    assert "cv_source_means" not in rows["physionet2016"]  # no CV trains without PhysioNet
    assert "ship" in report["ship_decision"] and 0.0 < report["threshold"] < 1.0
    # the average follows its run: judged on CV, its test split not scored either
    from converter import ensemble

    ens = ensemble.make(tmp_path, slice_root)
    assert ens["test"] is None and ens["test_split"]["scored"] is False and "ship" in ens["ensemble"]["decision"]
    assert (tmp_path / "ensemble" / "model.h5").exists() and (tmp_path / "ensemble" / "split.json").exists()
    assert "transfer" not in ens["threshold_choice"]
    # the CV models kept, both sets: the threshold carried over from them to the final pair, without a label
    assert sorted(p.name for p in (tmp_path / "folds").iterdir()) == [
        "comparator_fold0.h5",
        "comparator_fold1.h5",
        "lstm_fold0.h5",
        "lstm_fold1.h5",
    ]
    moved = ensemble.make(tmp_path, slice_root, tmp_path / "moved", transfer_threshold=True)
    tr = moved["threshold_choice"]["transfer"]
    assert tr["n_recordings"] == report["n_test"] and len(tr["reference_flag_rates"]) == 2
    assert tr["validated_threshold"] == ens["threshold"] and moved["test"] is None
    assert moved["threshold"] == (tr["threshold"] if tr["moved"] else ens["threshold"])
    # asked once the average is final: the test split scored although its run left it unseen
    scored = ensemble.make(tmp_path, slice_root, tmp_path / "scored", score_test=True)
    assert scored["test_split"]["scored"] is True and "physionet2016" in scored["test"]["sources"]
    # the threshold for the issue's own figures, in the CV figures and the shipped threshold alike
    head = ensemble.make(tmp_path, slice_root, tmp_path / "headline", objective="headline")
    assert head["threshold_choice"]["objective"] == "headline" and 0.0 < head["threshold"] < 1.0
    assert len(head["ensemble"]["cv_nested_pooled"]["average"]["thresholds"]) == 2
    (tmp_path / "folds" / "lstm_fold1.h5").unlink()
    with pytest.raises(ModelError, match="1 CV fold models missing"):
        ensemble.make(tmp_path, slice_root, tmp_path / "moved", transfer_threshold=True)
    # the model card says so where it would give test figures, and gives CirCor's CV transfer instead
    from converter.model_card import sources_section

    text = "\n".join(sources_section(report))
    assert "| circor2022 | CirCor, per patient (mean over recordings) (CV, out of fold) | – |" in text
    assert "| physionet2016 | test split not scored; no CV trains without physionet2016 |" in text
    assert "### Test split per source" in text and "`steth train --score-test` scores it" in text


def test_the_model_card_gives_cv_cross_source_and_test_figures_per_source():
    from converter.model_card import sources_section

    def s(macc: float) -> dict[str, float]:
        return {"macc": macc, "sensitivity": macc, "specificity": macc, "auc": macc, "n": 10}

    scores = {
        "sources": {
            "physionet2016": {"all": s(0.8), "not_e": s(0.7)},
            "circor2022": {"all": s(0.75), "patient": s(0.65)},
        }
    }
    report = {
        "chosen_arch": "lstm",
        "cv": [{"arch": "lstm", "fold": f, "scores": scores} for f in range(2)],
        "comparator": {"trained_without": "circor2022", "cv": [{"scores": scores}]},
        "ship_decision": ship_decision({}, {}, 0.02),
        "cross_source": [{"trained_without": "circor2022", "test": scores}],
        "test": scores,
        "task_definition": TASKS["screening"].to_dict(),
    }
    text = "\n".join(sources_section(report))
    assert "| lstm without circor2022 | CirCor, per patient (any recording abnormal) | 0.650 ± 0.000 |" in text
    # a run since session 14 scores patients by the device's mean rule and keeps "any" beside it
    for entry in [*report["cv"], *report["comparator"]["cv"]]:
        entry["scores"] = {"sources": {"circor2022": {"patient": s(0.7), "patient_any": s(0.6)}}}
    text = "\n".join(sources_section(report))
    assert "| lstm | CirCor, per patient (mean over recordings) | 0.700 ± 0.000 |" in text
    assert "| lstm | CirCor, per patient (any recording abnormal) | 0.600 ± 0.000 |" in text
    assert "| circor2022 | PhysioNet, outside training-e | 10 | 0.700 |" in text
    assert "Outcome: **do not ship**" in text and "seed 2323" in text


def test_the_model_card_shows_an_average_beside_its_two_members_from_the_runs_report():
    from converter.model_card import ensemble_section

    report = json.loads((REPO / "docs" / "screening_all_sources" / "ensemble" / "report.json").read_text())
    text = "\n".join(ensemble_section(report))
    assert "model_without_circor2022.h5" in text and "| without circor2022 |" in text
    avg = report["ensemble"]["cv_nested_pooled"]["average"]["means"]["physionet2016/all"]
    assert f"**average of the two (shipped)** | {avg['macc']:.3f} / {avg['auc']:.3f}" in text


def test_an_ensemble_of_a_run_without_a_comparator_or_without_its_data_says_what_is_missing(slice_root, tmp_path):
    from converter import ensemble
    from device.core.errors import ModelError

    (tmp_path / "report.json").write_text(json.dumps({"task": "screening", "comparator": {"trained_without": ""}}))
    with pytest.raises(ModelError, match="not a run with a comparator"):
        ensemble.make(tmp_path, tmp_path)
    report = json.loads((REPO / "docs" / "screening_all_sources" / "ensemble" / "report.json").read_text())
    (tmp_path / "report.json").write_text(json.dumps(report))
    oof = {"records": ["physionet2016/training-a/a9999"], "fold": [0], "y": [1], "database": ["training-a"]}
    for name in ("oof.json", "oof_comparator.json"):
        (tmp_path / name).write_text(json.dumps({**oof, "probabilities": {"conv_lstm": [[0.4, 0.6]]}}))
    with pytest.raises(ds.DatasetError, match="no PhysioNet 2016 folders"):
        ensemble.make(tmp_path, tmp_path / "nowhere")
    with pytest.raises(ModelError, match="1 of the run's 1 development recordings are not in"):
        ensemble.make(tmp_path, slice_root)
