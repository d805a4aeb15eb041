"""`steth train-segmenter` on the shared CirCor slice: trains in seconds and writes a loadable model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converter import circor
from converter import segmenter as tr
from device.cli import main
from device.core import segment as sg


@pytest.fixture(scope="module")
def slice_dir(data_dir: Path) -> Path:
    if not (data_dir / "circor2022" / "training_data").is_dir():
        pytest.skip(f"CirCor slice not found under {data_dir}")
    return data_dir / "circor2022"


def test_it_trains_on_the_slice_and_scores_unseen_patients(slice_dir, tmp_path, capsys):
    out = tmp_path / "seg" / "segmenter"
    code = main(
        ["train-segmenter", "--circor", str(slice_dir), "--epochs", "8", "--test-fraction", "0.25",
         "--val-fraction", "0.2", "--final", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    split = meta["data"]["split"]
    assert split["train_patients"] + split["val_patients"] + split["test_patients"] == 16
    model = sg.SegmenterModel.load(out.with_suffix(".npz"))
    # a model trained on ~10 children already finds most heart sounds of patients it never heard
    assert meta["scores"]["validation"]["f1"] > 0.7 and meta["scores"]["test"]["f1"] > 0.7
    assert set(meta["data"]["split"]["unseen_patients"]).isdisjoint(
        {r.patient for r in tr.split(circor.load_circor2022(slice_dir), 0.25, 0.2, 0)[0]}
    )
    assert model.durations.b[3] > 0.3  # diastole grows with the cycle, as annotated


def test_frame_labels_skip_unannotated_spans():
    spans = [circor.Span(0.0, 0.1, 0), circor.Span(0.1, 0.2, 1), circor.Span(0.2, 0.3, 2)]
    labels = tr.frame_labels(spans, 20)
    assert list(labels[:5]) == [-1] * 5 and list(labels[5:10]) == [0] * 5 and list(labels[10:15]) == [1] * 5
    assert (labels[15:] == -1).all()


def test_matching_is_one_to_one_within_the_tolerance():
    assert tr.match([1.0, 1.02, 2.5], [1.01, 2.0]) == 1
    assert tr.match([1.0, 2.05], [1.05, 2.0]) == 2
    assert tr.match([1.0], [1.07]) == 0
