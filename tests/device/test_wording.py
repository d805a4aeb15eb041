"""A result in words (device/core/wording.py), the same in the CLI and on the dashboard: unsure says why
and what the model leaned to, advice is said once, a murmur answer carries its probability."""

from __future__ import annotations

import numpy as np

from device.core import wording
from device.core.audio_io import Audio
from device.core.inference import load_model

RHYTHM = "no clear heartbeat rhythm: hold still, reduce noise, place the stethoscope firmly"
BURSTS = "noise bursts in 30% of the recording (movement, rubbing, talking): record again"
SILENT = "silent (RMS -90 dBFS): check that the stethoscope is on the chest, then record again"
WEAK = "signal very weak (-90 dBFS): press the stethoscope on the chest, check the gain"


def test_unsure_says_the_reason_and_the_models_probability():
    text = wording.summary("unsure", {"normal": 0.11, "abnormal": 0.89}, {"ok": False, "issues": [RHYTHM]})
    assert text == "Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal"


def test_unsure_says_the_first_issue_the_one_that_blocks_the_decision():
    quality = {"ok": False, "issues": [SILENT, WEAK, RHYTHM]}
    assert wording.unsure_reason(quality) == "poor signal: silent (RMS -90 dBFS)"


def test_a_reason_code_is_said_in_words_when_there_are_no_issues():
    text = wording.summary("unsure", {"normal": 0.6, "abnormal": 0.4}, {"ok": False, "issues": [], "reason": "noise"})
    assert text == "Unsure — poor signal: too much noise. Model: 60% normal"
    assert wording.unsure_reason({"ok": True, "issues": []}) == "the model could not decide"
    assert wording.model_leaning({}) == "model: no probability"


def test_a_sure_answer_names_the_label_its_percentage_belongs_to():
    assert wording.summary("abnormal", {"normal": 0.18, "abnormal": 0.82}, {"ok": True}) == (
        "Abnormal — model: 82% abnormal"
    )
    assert wording.summary("normal", {"normal": 0.7, "abnormal": 0.3}, {}) == "Normal — model: 70% normal"


def test_advice_is_said_once_and_record_again_once():
    quality = {"ok": False, "issues": [RHYTHM, BURSTS, BURSTS]}
    text = wording.advice(quality)
    assert text == "Hold still, reduce noise, place the stethoscope firmly; record again if the patient is still here."
    assert text.lower().count("record again") == 1
    assert wording.advice({"ok": True, "issues": []}) == ""


def test_the_rerecord_advice_leaves_record_again_to_the_line_that_says_it():
    assert wording.split_issue("noise bursts in 30% of the recording (movement): record again") == (
        "noise bursts in 30% of the recording (movement)",
        "",
    )
    quality = {"ok": False, "issues": [SILENT, WEAK, RHYTHM, RHYTHM]}
    assert wording.rerecord_advice(quality) == (
        "check that the stethoscope is on the chest; press the stethoscope on the chest, check the gain; "
        "hold still, reduce noise, place the stethoscope firmly"
    )


def test_a_murmur_answer_carries_its_probability_and_unknown_none():
    assert wording.murmur({"label": "present", "probability": 0.8123}) == "present (model: 81% present)"
    assert wording.murmur({"label": "absent", "probability": 0.2}) == "absent (model: 20% present)"
    exam = {"label": "present", "probability": 0.83, "sites": ["mitral", "aortic"]}
    assert wording.murmur(exam) == "present at mitral, aortic (model: 83% present)"
    assert wording.murmur({"label": "unknown", "probability": 0.9}) == "not assessed (poor signal)"
    assert wording.murmur(None) == ""


def test_a_real_silent_recording_is_said_without_repeating_itself():
    analysis = load_model().analyse(Audio(np.zeros(2000 * 10, dtype=np.float32), 2000, "silence"))
    quality = analysis.quality_dict()
    said = wording.summary(analysis.label, analysis.probabilities, quality)
    assert said.startswith("Unsure — poor signal: silent") and "Model: " in said and "confidence" not in said
    advice = wording.rerecord_advice(quality)
    assert advice and "record again" not in advice.lower()
    assert len(advice.split("; ")) == len(set(advice.split("; ")))
