"""A result in words (device/core/wording.py): unsure says why and what the model leaned to."""

from __future__ import annotations

from device.core import wording

RHYTHM = "no clear heartbeat rhythm: hold still, reduce noise, place the stethoscope firmly"
BURSTS = "noise bursts in 30% of the recording (movement, rubbing, talking): record again"


def test_unsure_says_the_reason_and_the_models_probability():
    text = wording.summary("unsure", {"normal": 0.11, "abnormal": 0.89}, {"ok": False, "issues": [RHYTHM]})
    assert text == "Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal"


def test_a_reason_code_is_said_in_words_when_there_are_no_issues():
    text = wording.summary("unsure", {"normal": 0.6, "abnormal": 0.4}, {"ok": False, "issues": [], "reason": "noise"})
    assert text == "Unsure — poor signal: too much noise. Model: 60% normal"
    assert wording.unsure_reason({"ok": True, "issues": []}) == "the model could not decide"


def test_a_sure_answer_names_the_label_its_percentage_belongs_to():
    assert wording.summary("abnormal", {"normal": 0.18, "abnormal": 0.82}, {"ok": True}) == (
        "Abnormal — model: 82% abnormal"
    )


def test_advice_is_said_once():
    quality = {"ok": False, "issues": [RHYTHM, BURSTS, BURSTS]}
    text = wording.advice(quality)
    assert text == "Hold still, reduce noise, place the stethoscope firmly; record again."
    assert text.lower().count("record again") == 1
    assert wording.advice({"ok": False, "issues": [RHYTHM]}) == (
        "Hold still, reduce noise, place the stethoscope firmly; record again if the patient is still here."
    )
    assert wording.advice({"ok": True, "issues": []}) == ""
