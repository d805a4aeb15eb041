"""The murmur model's training run, conversion and parity on real slices (CirCor's shared slice and a few
PASCAL files), in seconds of training; and the result field it adds through the shipped pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converter import model_card, murmur
from device.core import contract
from device.core.exam import MURMUR_RULE
from device.core.inference import load_model, models_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> tuple[Path, Path]:
    from tests.conftest import _data_dir

    data = _data_dir()
    if data is None or not (data / "circor2022" / "training_data").is_dir():
        pytest.skip("the shared data (circor2022 slice, pascal2011) is not here: set STETH_DATA_DIR")
    pascal = tmp_path_factory.mktemp("pascal") / "set_a"
    pascal.mkdir()
    for label in ("murmur", "normal"):
        for f in sorted((data / "pascal2011" / "set_a").glob(f"{label}__*.flac"))[:3]:
            shutil.copy(f, pascal)
    return data / "circor2022", pascal.parent


@pytest.fixture(scope="module")
def run_dir(slices, tmp_path_factory) -> Path:
    circor, pascal = slices
    out = tmp_path_factory.mktemp("murmur-run")
    cfg = murmur.RunConfig(str(circor), None, str(pascal), seeds=(0,), folds=2, epochs=1)
    murmur.run(cfg, out)
    return out


def test_the_run_keeps_test_patients_apart_and_reports_both_recipes(run_dir, slices):
    report = json.loads((run_dir / "report.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    assert report["rule"] == MURMUR_RULE and 0 < report["threshold"] < 1
    assert set(report["results"]) == {"candidate", "baseline"}
    # no patient (or linked group) on both sides; PASCAL only trains
    dev_patients = {k.rsplit("/", 1)[-1].split("_")[0] for k in split["dev"]}
    assert not dev_patients & set(split["test_patients"]) and split["test"]
    assert all(k.startswith("pascal2011/") for k in split["pascal"]) and len(split["pascal"]) == 6
    for r in report["results"].values():
        assert set(r["cv"]) == {"max", "mean"}
        assert len(r["test_per_seed"]) == 1 and 0 <= r["test_mean"]["patient"]["macc"] <= 1
    assert (run_dir / "model.h5").exists()


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
    split = json.loads((run_dir / "split.json").read_text())
    trained = set(meta["training_recordings"])
    assert not trained & {k.rsplit("/", 1)[-1] for k in split["test"]}
    assert {k.rsplit("/", 1)[-1] for k in split["dev"] + split["pascal"]} == trained
    # the screening model beside it now answers with a murmur field, valid in a result message
    for name in ("screening.tflite", "screening.json"):
        shutil.copy(models_dir() / name, tmp_path)
    clf = load_model("screening", directory=tmp_path)
    assert [c.info.name for c in clf.companions] == ["murmur"]
    analysis = clf.analyse_file(_a_test_file(run_dir))
    field = analysis.to_json()["murmur"]
    assert field["label"] in ("present", "absent", "unknown") and 0 <= field["probability"] <= 1
    contract.validate("result", analysis.to_result_message("kit-1"))


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
