"""Training, conversion and parity on a tiny real slice (the bundled recordings), in seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converter import convert as conv
from converter.train import RunConfig, run
from converter.trainer import TrainSettings
from device.inference import Classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, samples_dir) -> Path:
    """The six bundled PhysioNet recordings laid out as two databases, with a few WAV copies."""
    root = tmp_path_factory.mktemp("data") / "physionet2016"
    refs = dict(line.split(",") for line in (samples_dir / "REFERENCE.csv").read_text().split())
    for db in ("training-a", "training-d", "training-e"):
        folder = root / db
        folder.mkdir(parents=True)
        rows = []
        for stem, flag in refs.items():
            if stem[0] == db[-1]:
                shutil.copy(samples_dir / f"{stem}.flac", folder)
                rows.append(f"{stem},{flag}")
        (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    return root.parent


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(
        archs=("lstm", "conv_lstm"),
        folds=2,
        test_fraction=0.5,
        augment_copies=1,
        lodo=True,
        jobs=2,  # the command's default: trainings in two worker processes
        settings=TrainSettings(epochs=2, windows_per_epoch=64, batch_size=16),
    )
    run(tiny_data, out, cfg)
    return out


def test_training_writes_a_complete_run(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["chosen_arch"] in ("lstm", "conv_lstm")
    assert {c["arch"] for c in report["cv"]} == {"lstm", "conv_lstm"}
    assert sorted(c["fold"] for c in report["cv"] if c["arch"] == "lstm") == [0, 1]
    assert {r["held_out_db"] for r in report["lodo"]} <= {"training-a", "training-d", "training-e"}
    for key in ("sensitivity", "specificity", "macc", "accuracy", "auc"):
        assert key in report["test"]["all"]
    assert (tiny_run / "boxplot.png").stat().st_size > 10_000
    assert (tiny_run / "model.h5").exists()
    split = json.loads((tiny_run / "split.json").read_text())
    assert not set(split["dev"]) & set(split["test"])
    folds_csv = (tiny_run / "folds.csv").read_text().splitlines()
    assert folds_csv[0].startswith("arch,fold,scope") and len(folds_csv) > 4


def test_conversion_gives_an_int8_model_close_to_the_float_one(tiny_run, tiny_data, tmp_path):
    try:
        meta = conv.convert(tiny_run, tiny_data, "tiny", "0.0.1", tmp_path)
    except conv.ParityError as exc:
        # A model trained for seconds sits near its threshold, so a single flip can fail the 99% rule;
        # the check must then refuse loudly and write nothing, which is what we assert instead.
        assert "int8 model refused" in str(exc)
        assert not (tmp_path / "tiny.tflite").exists()
        return
    tflite = tmp_path / "tiny.tflite"
    assert tflite.exists() and meta["sha256"] == conv.sha256_file(tflite)
    assert meta["parity"]["max_probability_difference"] < 0.1
    clf = Classifier(tflite, json.loads((tmp_path / "tiny.json").read_text()))
    assert clf._in["dtype"] == np.int8
    # Tensor names were stripped (a third of an unrolled model's file); the device needs none.
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model(str(tflite)).subgraphs[0]
    assert len(graph.tensors) > 50 and not any(t.name for t in graph.tensors)


def test_the_parity_check_refuses_a_model_that_disagrees(tiny_run, tiny_data, tmp_path, monkeypatch):
    # An int8 model that says the opposite of the float one must never be shipped.
    real = Classifier.predict_windows
    monkeypatch.setattr(Classifier, "predict_windows", lambda self, f: 1 - real(self, f))
    with pytest.raises(conv.ParityError, match="agree on"):
        conv.convert(tiny_run, tiny_data, "flipped", "0.0.1", tmp_path)
    assert not (tmp_path / "flipped.tflite").exists()
