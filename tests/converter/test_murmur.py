"""The murmur model's training run, conversion and parity on real slices (CirCor's shared slice, a few
PASCAL and PhysioNet files), in seconds of training; and the result field it adds through the shipped
pipeline. The PhysioNet test split is checked on the whole shared PhysioNet listing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converter import datasets as ds
from converter import model_card, murmur
from device.core import contract
from device.core.errors import ModelError
from device.core.exam import MURMUR_RULE
from device.core.inference import load_model, models_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> tuple[Path, Path, Path]:
    from tests.conftest import _data_dir

    data = _data_dir()
    if data is None or not (data / "circor2022" / "training_data").is_dir():
        pytest.skip("the shared data (circor2022 slice, pascal2011) is not here: set STETH_DATA_DIR")
    pascal = tmp_path_factory.mktemp("pascal") / "set_a"
    pascal.mkdir()
    for label in ("murmur", "normal"):
        for f in sorted((data / "pascal2011" / "set_a").glob(f"{label}__*.flac"))[:3]:
            shutil.copy(f, pascal)
    # PhysioNet: normal and abnormal records of two databases (with their block structure kept)
    physionet = tmp_path_factory.mktemp("physionet") / "physionet2016"
    for subset, wanted in (("training-a", {"1": 3, "-1": 4}), ("training-e", {"1": 2, "-1": 5})):
        (physionet / subset).mkdir(parents=True)
        rows = []
        for line in (data / "physionet2016" / subset / "REFERENCE.csv").read_text().split():
            stem, label = line.split(",")
            if wanted[label] > 0:
                wanted[label] -= 1
                rows.append(line)
                shutil.copy(data / "physionet2016" / subset / f"{stem}.flac", physionet / subset)
        (physionet / subset / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    return data / "circor2022", pascal.parent, physionet.parent


@pytest.fixture(scope="module")
def run_dir(slices, tmp_path_factory) -> Path:
    circor, pascal, physionet = slices
    out = tmp_path_factory.mktemp("murmur-run")
    cfg = murmur.RunConfig(
        str(circor), None, str(pascal), seeds=(0,), folds=2, epochs=1, physionet=str(physionet), score_test=True
    )
    murmur.run(cfg, out)
    return out


def test_the_run_keeps_test_patients_apart_and_reports_both_recipes(run_dir, slices):
    report = json.loads((run_dir / "report.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    assert report["rule"] == MURMUR_RULE and 0 < report["threshold"] < 1
    assert set(report["results"]) == {"candidate", "physionet", "baseline"}
    # no patient (or linked group) on both sides; PASCAL only trains
    dev_patients = {k.rsplit("/", 1)[-1].split("_")[0] for k in split["dev"]}
    assert not dev_patients & set(split["test_patients"]) and split["test"]
    assert all(k.startswith("pascal2011/") for k in split["pascal"]) and len(split["pascal"]) == 6
    for r in report["results"].values():
        assert set(r["cv"]) == {"max", "mean"} and 0 <= r["cv_physionet"]["false_alarm"] <= 1
    # the recipe was chosen on CV figures alone; only it and the baseline met the test splits
    chosen = report["chosen"]
    assert (chosen, report["decision"]) == murmur.choose_recipe(report["results"], MURMUR_RULE)
    for name, r in report["results"].items():
        assert ("test_per_seed" in r) == (name in (chosen, "baseline"))
        if "test_per_seed" in r:
            assert len(r["test_per_seed"]) == 1 and 0 <= r["test_mean"]["patient"]["macc"] <= 1
            pn = r["test_physionet_per_seed"][0]
            assert pn["all"]["n_normal"] + pn["all"]["n_abnormal"] == len(split["physionet_test"])
    # PhysioNet: its test split is the screening model's fold, computed on the whole listing given
    _, _, physionet = slices
    listed = ds.load_physionet2016(physionet)
    assert set(split["physionet_test"]) == murmur.physionet_test_keys(listed)
    assert set(split["physionet_dev"]) == {r.key for r in listed} - set(split["physionet_test"])
    assert report["counts"]["physionet_dev_normals"] == sum(
        r.label == "normal" for r in listed if r.key in split["physionet_dev"]
    )
    assert (run_dir / "model.h5").exists()


def test_each_cross_validated_recipe_writes_finite_out_of_fold_scores_of_development_recordings_only(
    run_dir: Path,
) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    for name in report["config"]["cv_recipes"]:
        oof = json.loads((run_dir / murmur.oof_file_name(name, 0)).read_text())
        assert oof["threshold"] == report["results"][name]["threshold"] and oof["rule"] == MURMUR_RULE
        for source, dev in (("circor", split["dev"]), ("physionet", split["physionet_dev"])):
            scored = set(oof[source])
            # every development recording is scored or listed as refused by the pipeline; no test recording
            assert scored | (set(oof["unscored"]) & set(dev)) == set(dev) == set(oof["folds"][source])
            assert scored and np.isfinite(list(oof[source].values())).all()
            assert all(0 <= p <= 1 for p in oof[source].values())
        assert set(oof["folds"]["circor"].values()) == {0, 1}
        # keys as the screening run's oof.json spells them (converter.datasets.Recording.key)
        assert all(k.startswith("circor2022/training_data/") for k in oof["circor"])
        assert all(k.startswith("physionet2016/training-") for k in oof["physionet"])


def test_cv_only_trains_the_folds_and_no_final_model(
    slices: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    circor, pascal, _ = slices
    trained: list[int] = []
    real = murmur.train_model

    def spy(x: np.ndarray, t: np.ndarray, recipe: murmur.Recipe, seed: int) -> object:
        trained.append(seed)
        return real(x, t, recipe, seed)

    monkeypatch.setattr(murmur, "train_model", spy)
    cfg = murmur.RunConfig(
        str(circor), None, str(pascal), seeds=(3,), folds=2, epochs=1, cv_recipes=("candidate",), cv_only=True
    )
    report = murmur.run(cfg, tmp_path)
    assert trained == [3, 3] and report["chosen"] is None and report["threshold"] is None
    assert report["test_split"]["scored"] is False and "--cv-only" in report["test_split"]["why"]
    assert (tmp_path / murmur.oof_file_name("candidate", 3)).exists() and not (tmp_path / "model.h5").exists()
    with pytest.raises(ModelError, match="--cv-only"):
        murmur.ship(tmp_path, tmp_path / "shipped", "0.0.1")
    with pytest.raises(ValueError, match="physionet"):
        murmur.run(murmur.RunConfig(str(circor), None, str(pascal), cv_recipes=("physionet",)), tmp_path)


def test_without_score_test_only_the_shipped_model_trains_and_no_test_split_is_scored(slices, tmp_path, monkeypatch):
    circor, pascal, _ = slices
    trained: list[int] = []
    real = murmur.train_model

    def spy(x, t, recipe, seed):
        trained.append(seed)
        return real(x, t, recipe, seed)

    monkeypatch.setattr(murmur, "train_model", spy)
    cfg = murmur.RunConfig(str(circor), None, str(pascal), seeds=(0, 1), folds=2, epochs=1, cv_recipes=("candidate",))
    report = murmur.run(cfg, tmp_path)
    # two CV folds and the shipped model (first seed): no baseline or second-seed final model to be scored
    assert trained == [0, 0, 0]
    assert report["test_split"]["scored"] is False and "--score-test" in report["test_split"]["why"]
    assert not any("test_mean" in r or "test_per_seed" in r for r in report["results"].values())
    assert (tmp_path / "model.h5").exists() and json.loads((tmp_path / "split.json").read_text())["test"]
    # conversion's parity check still runs on the test recordings; the card says the split was not scored
    meta = murmur.ship(tmp_path, tmp_path / "shipped", "0.0.1", allow_shortfall=True)
    assert meta["parity"]["n_recordings"] >= 1 and meta["metrics"]["test_mean_over_seeds"] is None
    card = "\n".join(model_card.murmur_section(report, meta))
    assert "Test splits not scored by this run" in card and "`steth murmur train --score-test`" in card


def test_only_the_physionet_recipe_trains_on_physionet_and_only_on_development_normals(slices):
    circor, _, _ = slices
    from tests.conftest import _data_dir

    data = _data_dir()
    assert data is not None
    # the whole PhysioNet listing (file names only: nothing is decoded), as the screening model splits it
    recs, sites, _ = murmur.load_recordings(circor, None, None, data)
    _, _, pascal, p_dev, p_test = murmur.split_indices(recs, sites, 0.2, 23)
    physionet = [r for r in recs if r.dataset == ds.PHYSIONET]
    expected_test = {r.key for r in ds.train_test_split(physionet, 0.2, 2323)[1]}
    assert {recs[i].key for i in p_test} == expected_test == murmur.physionet_test_keys(physionet)
    assert 0.18 < len(p_test) / len(physionet) < 0.22
    y = murmur.targets(recs)
    with_normals = murmur.training_set(murmur.RECIPES["physionet"], y, np.array([], int), pascal, p_dev)
    trained = {recs[i].key for i in with_normals if recs[i].dataset == ds.PHYSIONET}
    normals = {recs[i].key for i in p_dev if recs[i].sublabel == "normal"}
    assert trained == normals and not trained & expected_test and len(normals) > 1000
    without = murmur.training_set(murmur.RECIPES["candidate"], y, np.array([], int), pascal, p_dev)
    assert not any(recs[i].dataset == ds.PHYSIONET for i in without)


def test_conversion_checks_the_int8_model_and_writes_a_companion_sidecar(run_dir, tmp_path):
    # a model trained for one epoch on a slice may miss the parity bars: written anyway, failures recorded
    meta = murmur.ship(run_dir, tmp_path, "0.0.1", allow_shortfall=True)
    assert meta["result_field"] == "murmur" and meta["labels"] == ["absent", "present"]
    assert meta["exam_rule"] == MURMUR_RULE
    p = meta["parity"]
    assert p["n_recordings"] >= 1 and 0 <= p["agreement"] <= 1
    passed = (
        p["agreement"] >= 0.99
        and p.get("macc_delta", 0) <= 0.01
        and all(v["passed"] for v in meta["known_signals"].values())
    )
    assert meta["checks_passed"] == passed and bool(meta["check_failures"]) != passed
    card = "\n".join(model_card.murmur_section(json.loads((run_dir / "report.json").read_text()), meta))
    assert card.startswith(model_card.SECTION_HEADERS["murmur"]) and f"{p['agreement']:.1%}" in card
    assert "Test split" in card and "baseline" in card
    report = json.loads((run_dir / "report.json").read_text())
    assert "PhysioNet 2016 test split" in card and f"Outcome: **{report['chosen']}**" in card
    assert meta["recipe"] == report["chosen"] and "all" in meta["metrics"]["test_physionet_first_seed"]
    split = json.loads((run_dir / "split.json").read_text())
    trained = set(meta["training_recordings"])
    assert not trained & {k.rsplit("/", 1)[-1] for k in split["test"]}
    recipe = murmur.RECIPES[report["chosen"]]
    normals = {k for k in split["physionet_dev"] if k in _physionet_normals(run_dir)}
    expected = (
        split["dev"] + (split["pascal"] if recipe.pascal else []) + sorted(normals if recipe.physionet_normals else [])
    )
    assert {k.rsplit("/", 1)[-1] for k in expected} == trained
    assert not trained & {k.rsplit("/", 1)[-1] for k in split["physionet_test"]}
    # the screening model beside it now answers with a murmur field, valid in a result message
    for name in ("screening.tflite", "screening.json"):
        shutil.copy(models_dir() / name, tmp_path)
    clf = load_model("screening", directory=tmp_path)
    assert [c.info.name for c in clf.companions] == ["murmur"]
    analysis = clf.analyse_file(_a_test_file(run_dir))
    field = analysis.to_json()["murmur"]
    assert field["label"] in ("present", "absent", "unknown") and 0 <= field["probability"] <= 1
    contract.validate("result", analysis.to_result_message("kit-1"))


def _physionet_normals(run_dir: Path) -> set[str]:
    cfg = json.loads((run_dir / "report.json").read_text())["config"]
    return {r.key for r in ds.load_physionet2016(cfg["physionet"]) if r.label == "normal"}


def _a_test_file(run_dir: Path) -> Path:
    from converter.circor import load_circor2022
    from tests.conftest import _data_dir

    split = json.loads((run_dir / "split.json").read_text())
    stem = split["test"][0].rsplit("/", 1)[-1]
    data = _data_dir()
    assert data is not None
    return next(r.path for r in load_circor2022(data / "circor2022") if r.record_id == stem)


def test_the_shipped_murmur_model_answers_beside_screening_and_passed_its_checks(samples_dir):
    if "murmur" not in [p.stem for p in models_dir().glob("*.tflite")]:
        pytest.skip("no murmur model shipped in device/models")
    meta = json.loads((models_dir() / "murmur.json").read_text())
    assert meta["checks_passed"], meta["check_failures"]
    assert meta["exam_rule"] == MURMUR_RULE
    assert meta["parity"]["agreement"] >= 0.99 and meta["parity"]["macc_delta"] <= 0.01
    clf = load_model()
    results = [clf.analyse_file(f) for f in sorted(samples_dir.glob("*.flac"))]
    for a in results:
        m = a.to_json()["murmur"]
        assert m["label"] == ("unknown" if not a.quality.ok else m["label"])
        assert (m["label"] == "present") == (a.quality.ok and m["probability"] >= 0.5)
        contract.validate("result", a.to_result_message("kit-1"))
    assert len({round(a.fields["murmur"]["probability"], 3) for a in results}) > 1  # not a constant
    assert np.isfinite([a.fields["murmur"]["probability"] for a in results]).all()
