"""`steth evaluate` says when the recordings it scores trained the model (the sidecar lists them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from converter.datasets import Recording
from converter.evaluate import caveat, trained_on
from device.cli import main
from device.core.inference import models_dir


def rec(stem: str) -> Recording:
    return Recording("physionet2016", "training-a", stem, Path(f"{stem}.wav"), "normal")


def test_it_counts_only_the_listed_recordings():
    meta = {"training_recordings": ["a0001", "a0002"]}
    recs = [rec("a0001"), rec("a0003")]
    assert [r.record_id for r in trained_on(meta, recs)] == ["a0001"]
    assert caveat(meta, recs).startswith("CAVEAT: 1 of 2 recordings")
    assert caveat(meta, [rec("a0003")]) is None
    assert "does not list its training recordings" in caveat({}, recs)


def test_the_shipped_screening_model_warns_on_the_bundled_samples(samples_dir, capsys):
    # every bundled sample is a development recording of the PhysioNet split that 0.5.0 and 0.6.0 trained on
    meta = json.loads((models_dir() / "screening.json").read_text())
    used = sorted(p.stem for p in samples_dir.glob("*.flac") if p.stem in set(meta["training_recordings"]))
    assert used, "the bundled samples are PhysioNet training recordings"
    assert main(["evaluate", str(samples_dir), "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["trained_on"] == len(used)
    assert f"CAVEAT: {len(used)} of 6" in out.err


def test_no_caveat_when_none_of_the_recordings_trained_it(data_dir, tmp_path, capsys):
    # the bundled samples all trained 0.6.0, so take recordings of its held-out split from the data set
    meta = json.loads((models_dir() / "screening.json").read_text())
    listed = set(meta["training_recordings"])
    db = data_dir / "physionet2016" / "training-a"
    rows = [line for line in (db / "REFERENCE.csv").read_text().split() if line.split(",")[0] not in listed][:4]
    assert rows, "some training-a recordings are in the held-out split"
    held_out = tmp_path / "held"
    held_out.mkdir()
    for row in rows:
        shutil.copy(next(db.glob(f"{row.split(',')[0]}.*")), held_out)
    (held_out / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", str(held_out), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["trained_on"] == 0
    assert "CAVEAT" not in out.out + out.err


def test_the_murmur_model_scored_on_the_circor_slice_says_which_recordings_trained_it(data_dir, capsys):
    if not (models_dir() / "murmur.tflite").exists() or not (data_dir / "circor2022").is_dir():
        pytest.skip("needs the shipped murmur model and the CirCor slice")
    meta = json.loads((models_dir() / "murmur.json").read_text())
    assert main(["evaluate", str(data_dir / "circor2022"), "--model", "murmur", "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    listed = set(meta["training_recordings"])
    stems = {p.stem for p in (data_dir / "circor2022" / "training_data").glob("*.flac")}
    assert 0 < report["trained_on"] <= len(stems & listed)
    assert f"CAVEAT: {report['trained_on']} of {report['n']}" in out.err
    # scored on the murmur label: present recordings are the positives
    assert report["groups"]["all"]["n_abnormal"] > 0


def test_a_model_is_not_scored_on_labels_it_does_not_have(data_dir, capsys):
    if not (data_dir / "circor2022").is_dir():
        pytest.skip("needs the CirCor slice")
    assert main(["evaluate", str(data_dir / "circor2022")]) == 2
    assert "not with this model's labels" in capsys.readouterr().err
