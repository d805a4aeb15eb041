"""The guided exam's rules, in process, with the real model on real (replayed) recordings: a site that
stays poor is given up after MAX_ATTEMPTS and the exam goes on; the end of the input never loops."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from device.core import contract
from device.core.exam import combine_exam
from device.edge.analyser import Analyser
from device.edge.bedside import Bedside, FolderSink
from device.edge.exam_flow import MAX_ATTEMPTS, Prompter, exam_summary, new_exam_id, run_exam
from device.edge.sources import ReplaySource


def bedside(tmp_path: Path) -> Bedside:
    return Bedside(
        Analyser(("screening",)),
        FolderSink(tmp_path / "records"),
        device_id="local",
        patient_ref="P-7",
        seconds=8,
        open_source=lambda f: ReplaySource(f, realtime=False),  # as fast as it reads: the rules, not the pace
        countdown_s=0,
        out=io.StringIO(),
    )


def silent(tmp_path: Path) -> Path:
    path = tmp_path / "silent.wav"
    sf.write(str(path), np.zeros(2000 * 8, dtype=np.float32), 2000, subtype="PCM_16")
    return path


def test_a_site_that_stays_poor_is_given_up_after_the_last_attempt_and_the_exam_goes_on(tmp_path, samples_dir):
    guide, answers = io.StringIO(), io.StringIO()
    # Enter to every question: record, and record the poor site again, as often as the flow allows
    prompter = Prompter(io.StringIO("\n" * 20), guide)
    exam = run_exam(bedside(tmp_path), ["mitral", "aortic"], prompter, answers,
                    replay=[silent(tmp_path), samples_dir / "a0405.flac"])  # fmt: skip
    assert [a.site for a in exam.attempts] == ["mitral"] * MAX_ATTEMPTS + ["aortic"]
    assert f"{MAX_ATTEMPTS} recordings of the mitral site were poor: it stays unsure; going on." in guide.getvalue()
    assert all(a.poor for a in exam.attempts[:MAX_ATTEMPTS]) and not exam.attempts[-1].poor
    # every attempt kept, the answer from each site's latest
    assert len(list((tmp_path / "records").glob("*.json"))) == MAX_ATTEMPTS + 1
    latest = exam.latest()
    assert exam.combined() == combine_exam([latest["mitral"].result, latest["aortic"].result])
    summary = "\n".join(exam_summary(exam))
    assert "mitral     Unsure — poor signal: silent" in summary
    assert "from 1 usable of 2 site recording(s)" in summary


def test_at_the_end_of_the_input_each_site_is_recorded_once(tmp_path):
    guide = io.StringIO()
    prompter = Prompter(io.StringIO(""), guide)
    exam = run_exam(bedside(tmp_path), ["tricuspid", "pulmonic"], prompter, io.StringIO(), replay=[silent(tmp_path)])
    assert [a.site for a in exam.attempts] == ["tricuspid", "pulmonic"]  # poor, but never again: no one to ask
    assert guide.getvalue().count("(no more input)") == 4 and prompter.ended


def test_exam_ids_fit_the_contract():
    ids = {new_exam_id() for _ in range(50)}
    assert len(ids) == 50
    for exam_id in ids:
        assert contract.errors("result", {**contract.EXAMPLE_RESULT, "exam_id": exam_id}) == []
    # optional, and refused when malformed
    assert contract.errors("result", contract.EXAMPLE_RESULT) == []
    for bad in ("exam one", "", "x" * 65, 7):
        assert contract.errors("result", {**contract.EXAMPLE_RESULT, "exam_id": bad}), bad
