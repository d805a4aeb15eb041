"""`steth record --sites`: the guided exam at the bedside, driven through the replay seam (recordings in
place of the stethoscope, at a stethoscope's pace) with the nurse's answers scripted on stdin; and
`steth record` tried off a device, with no configuration."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.core import contract
from device.core.exam import combine_exam
from device.edge.outbox import Outbox
from tests.device.daemon_support import REPO, model_ref, write_config

pytestmark = pytest.mark.slow

EXAM_ID_RE = re.compile(r"^Exam (E-\d{8}T\d{6}Z-[0-9a-f]{6}) of P-000123:", re.MULTILINE)


@pytest.fixture(scope="module")
def model() -> str:
    return model_ref()


def steth(*args: str, stdin: str = "", cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STETH_")}  # no device configuration
    # the installed `steth` itself: `python -m` would put the working folder first on the import path, and a
    # folder holding device/samples (as a new user's checkout does) would then shadow the package
    command = [str(Path(sys.executable).with_name("steth")), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=240,
                          check=False)  # fmt: skip


def silent_wav(tmp_path: Path) -> Path:
    path = tmp_path / "silent.wav"  # a stethoscope left off the chest
    sf.write(str(path), np.zeros(2000 * 8, dtype=np.float32), 2000, subtype="PCM_16")
    return path


def outbox_results(tmp_path: Path) -> list[dict]:
    with Outbox(tmp_path / "state" / "outbox.sqlite", tmp_path / "run" / "outbox-audio", 1 << 30) as box:
        return sorted((json.loads(p.payload) for p in box.pending(100)), key=lambda r: r["recorded_at"])


def test_an_exam_goes_site_by_site_records_again_only_that_site_and_gives_one_answer(samples_dir, tmp_path, model):
    config = write_config(tmp_path, "mqtt://127.0.0.1:9", model=model)  # no broker: results wait in the outbox
    files = [samples_dir / "a0405.flac", samples_dir / "a0296.flac", silent_wav(tmp_path)]
    answers = [
        "",  # aortic: record
        "r",  # aortic was fine, the nurse asks for it again anyway
        "",  # aortic (2nd): next site
        "",  # pulmonic: record
        "",  # pulmonic: next site
        "",  # mitral: record (silent: poor)
        "",  # poor: record this site again (Enter)
        "n",  # still poor: keep it and finish
    ]
    replay = [arg for f in files for arg in ("--replay", str(f))]
    proc = steth("record", "--patient", "P-000123", "--sites", "aortic,pulmonic,mitral", "--seconds", "5",
                 "--countdown", "1", "--config", str(config), *replay, stdin="\n".join(answers) + "\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    guide, out = proc.stderr, proc.stdout

    # which site next, a countdown, the recording; only the asked-for and the poor site again
    assert [m for m in re.findall(r"^Site (\d) of 3: (\w+)", guide, re.MULTILINE)] == [
        ("1", "AORTIC"), ("2", "PULMONIC"), ("3", "MITRAL")]  # fmt: skip
    assert guide.count("recording in 1...") == 5
    recorded = re.findall(r"Recording 5 s from (\S+): hold the stethoscope still on the (\w+) site", guide)
    assert [(Path(f).name, site) for f, site in recorded] == [
        ("a0405.flac", "aortic"), ("a0405.flac", "aortic"), ("a0296.flac", "pulmonic"),
        ("silent.wav", "mitral"), ("silent.wav", "mitral")]  # fmt: skip
    assert guide.count("Recording the aortic site again.") == 1 and guide.count("Recording the mitral site again.") == 1
    assert "Record again: check that the stethoscope is on the chest" in guide  # the poor site's advice, at once

    # each site's answer at once, the unsure one with its reason in words and the model's leaning
    site_lines = re.findall(r"^(Aortic|Pulmonic|Mitral) +(.*)$", out, re.MULTILINE)
    assert [s for s, _ in site_lines] == ["Aortic", "Aortic", "Pulmonic", "Mitral", "Mitral"]
    assert re.match(r"Unsure — poor signal: silent .*\. Model: \d+% (normal|abnormal) · ", site_lines[-1][1])
    assert "confidence" not in out

    # every attempt kept in the outbox, with the exam id, the patient and the site, valid against the contract
    exam_id = EXAM_ID_RE.search(out)
    assert exam_id, out
    stored = outbox_results(tmp_path)
    assert [r["site"] for r in stored] == ["aortic", "aortic", "pulmonic", "mitral", "mitral"]
    assert {r["exam_id"] for r in stored} == {exam_id.group(1)} and {r["patient_ref"] for r in stored} == {"P-000123"}
    assert all(contract.errors("result", r) == [] for r in stored)
    assert f"Saved:           5 result(s) of exam {exam_id.group(1)}; sent when the device is online" in out

    # one answer: the shared rule over each site's latest attempt
    latest = {r["site"]: r for r in stored}
    combined = combine_exam(list(latest.values()))
    assert combined["n_usable"] == 2
    result_line = re.search(r"^Exam result: +(.*)$", out, re.MULTILINE)
    assert result_line and result_line.group(1).startswith(combined["label"].capitalize() + " — model: "), out
    assert out.rstrip().endswith("Screening support, not a diagnosis: a clinician decides.")


def test_an_unattended_exam_records_each_site_once_and_answers_in_json(samples_dir, tmp_path):
    # no input at all (a script): every site once, a poor one not again, so the run always ends
    out_dir = tmp_path / "records"
    proc = steth("record", "--patient", "P-000123", "--sites", "tricuspid,mitral", "--seconds", "5", "--countdown",
                 "0", "--replay", str(silent_wav(tmp_path)), "--out", str(out_dir), "--json",
                 "--exam-id", "exam-7")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # stdout is only the JSON: the dialogue and site answers went to stderr
    exam = data["exam"]
    assert exam["exam_id"] == "exam-7" and exam["label"] == "unsure" and exam["n_usable"] == 0
    assert [exam["sites"][s]["attempts"] for s in ("tricuspid", "mitral")] == [1, 1]
    assert [(r["site"], r["exam_id"], r["label"], r["stored"]) for r in data["results"]] == [
        ("tricuspid", "exam-7", "unsure", True), ("mitral", "exam-7", "unsure", True)]  # fmt: skip
    kept = {p.stem: json.loads(p.read_text()) for p in out_dir.glob("*.json")}
    assert set(kept) == {r["result_id"] for r in data["results"]}
    assert all(contract.errors("result", r) == [] and r["device_id"] == "local" for r in kept.values())


def test_a_site_can_be_skipped_and_the_exam_ended_early(tmp_path, samples_dir):
    proc = steth("record", "--patient", "P-000123", "--sites", "aortic,pulmonic,mitral", "--countdown", "0",
                 "--replay", str(samples_dir / "a0405.flac"), "--out", str(tmp_path / "r"), stdin="s\nq\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "aortic     not recorded (skipped)" in proc.stdout and "mitral     not recorded\n" in proc.stdout
    assert "Exam result:     Unsure — no site gave a usable recording" in proc.stdout
    assert "Recording" not in proc.stderr and not (tmp_path / "r").exists()


def test_the_readme_example_works_off_a_device_and_keeps_the_result_in_a_local_folder(tmp_path):
    readme = (REPO / "README.md").read_text()
    lines = [
        ln.split("#")[0].strip() for ln in readme.splitlines() if ln.startswith("steth record ") and "--replay" in ln
    ]
    assert lines, "the README shows `steth record ... --replay FILE`"
    args = shlex.split(lines[0])[1:]
    # run from a folder holding what the example names (the repository's sample recordings), as a new user
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "samples").symlink_to(REPO / "device" / "samples")
    proc = steth(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    kept = list((tmp_path / "steth-records").glob("*.json"))
    assert len(kept) == 1
    result = json.loads(kept[0].read_text())
    assert contract.errors("result", result) == [] and result["patient_ref"] == args[args.index("--patient") + 1]
    assert f"Saved:           steth-records/{kept[0].name} (not sent)" in proc.stdout
    assert "no device configuration: trying it out" in proc.stderr


def test_without_a_configuration_or_a_recording_it_says_exactly_what_it_needs(tmp_path):
    proc = steth("record", "--patient", "P-1", "--site", "mitral", cwd=tmp_path)
    assert proc.returncode == 2
    for needed in ("no device configuration", "--config FILE", "$STETH_DEVICE_CONFIG", "--replay FILE"):
        assert needed in proc.stderr
    proc = steth("record", "--patient", "P-1", "--sites", "aortic,mitral,aortic", cwd=tmp_path)
    assert proc.returncode == 2 and "names a site twice" in proc.stderr
    proc = steth("record", "--patient", "P-1", "--sites", "aortic,mitral,tricuspid", "--replay", "a.wav",
                 "--replay", "b.wav", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "--replay given 2 times for 3 site(s)" in proc.stderr
