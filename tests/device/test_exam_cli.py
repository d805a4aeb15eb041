"""`steth exam --manifest`: real CirCor patients' sites through the shipped models, output against its schema."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from device.cli import main

SITES = {"AV": "aortic", "PV": "pulmonic", "TV": "tricuspid", "MV": "mitral"}


def exam_schema() -> Draft202012Validator:
    text = resources.files("device.core").joinpath("schemas", "exam.v1.json").read_text()
    return Draft202012Validator(json.loads(text))


@pytest.fixture
def circor_manifest(data_dir, tmp_path) -> tuple[Path, dict[str, list[str]]]:
    folder = data_dir / "circor2022" / "training_data"
    if not folder.is_dir():
        pytest.skip(f"the CirCor slice is not in {data_dir} (circor2022/training_data)")
    patients = sorted({p.stem.split("_")[0] for p in folder.glob("*.flac")})[:2]
    rows, files = [], {}
    for pid in patients:
        files[pid] = sorted(str(p) for p in folder.glob(f"{pid}_*.flac"))
        rows += [f"{pid},{f},{Path(f).stem.split('_')[1]}" for f in files[pid]]
    manifest = tmp_path / "exams.csv"
    manifest.write_text("exam_id,path,site\n" + "\n".join(rows) + "\n")
    return manifest, files


def test_it_prints_one_schema_valid_object_per_exam(circor_manifest, capsys):
    manifest, files = circor_manifest
    assert main(["exam", "--manifest", str(manifest), "--json"]) == 0
    exams = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["exam_id"] for e in exams] == list(files)
    validator = exam_schema()
    for exam in exams:
        assert not list(validator.iter_errors(exam)), list(validator.iter_errors(exam))[:3]
        assert [r["file"] for r in exam["recordings"]] == files[exam["exam_id"]]
        assert {r["site"] for r in exam["recordings"]} <= set(SITES.values())
        usable = [r for r in exam["recordings"] if r["quality"]["ok"] and r["label"] != "unsure"]
        assert exam["n_usable"] == len(usable)
        if usable:
            mean_abnormal = sum(r["probabilities"]["abnormal"] for r in usable) / len(usable)
            assert exam["probabilities"]["abnormal"] == pytest.approx(mean_abnormal, abs=1e-4)
            assert (exam["label"] == "abnormal") == (exam["probabilities"]["abnormal"] >= 0.5)
        murmur = [r["murmur"] for r in usable if "murmur" in r and r["murmur"]["label"] != "unknown"]
        if murmur:  # a murmur model is shipped: the exam combines the usable sites' P(present) by their mean
            mean = sum(m["probability"] for m in murmur) / len(murmur)
            assert exam["murmur"]["probability"] == pytest.approx(mean, abs=1e-4)
            assert (exam["murmur"]["label"] == "present") == (mean >= 0.5)


def test_a_recording_that_cannot_be_read_is_reported_and_the_rest_still_answered(samples_dir, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    manifest.write_text(f"e1,{samples_dir / 'a0405.flac'},MV\ne1,broken.wav,AV\ne2,{samples_dir / 'e00008.flac'}\n")
    assert main(["exam", "--manifest", str(manifest), "--json"]) == 1
    out = capsys.readouterr()
    exams = {e["exam_id"]: e for e in map(json.loads, out.out.splitlines())}
    assert set(exams) == {"e1", "e2"}
    assert exams["e1"]["n_recordings"] == 1 and exams["e1"]["errors"][0]["file"] == str(broken)
    assert exams["e1"]["recordings"][0]["site"] == "mitral" and exams["e2"]["recordings"][0]["site"] is None
    assert "broken.wav" in out.err
    for exam in exams.values():
        assert not list(exam_schema().iter_errors(exam))


@pytest.mark.parametrize(
    ("content", "message"),
    [("e1\n", "expected exam_id,path[,site]"), ("", "lists no recordings"), ("e1,a,b,c\n", "expected")],
)
def test_a_malformed_manifest_is_refused_with_the_line(tmp_path, capsys, content, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    assert main(["exam", "--manifest", str(manifest)]) == 2
    assert message in capsys.readouterr().err


def test_the_human_output_names_each_exam_and_its_murmur_answer(samples_dir, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"bed-3,{samples_dir / 'a0405.flac'},aortic\n")
    assert main(["exam", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "Exam bed-3:" in out and "Murmur:" in out and "aortic" in out


def test_the_human_output_says_each_recordings_answer_and_murmur_with_the_models_probability(
    samples_dir, tmp_path, capsys
):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"bed-3,{samples_dir / 'a0405.flac'},aortic\n")
    assert main(["exam", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "a0405.flac" in x)
    # a bare label or murmur word would read as a finding: each carries what the model said
    assert re.search(r": (Normal|Abnormal|Unsure) — .*model: \d+% (normal|abnormal)", line, re.IGNORECASE), line
    assert re.search(r"murmur (present|absent) \(model: \d+% present\)|murmur not assessed", line), line
    assert "Screening support, not a diagnosis" in out
