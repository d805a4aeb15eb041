"""How results are said: an unsure one with its reason and the model's leaning, advice said once."""

from __future__ import annotations

import numpy as np

from device.core.answer_text import headline, model_leaning, rerecord_advice, split_issue, unsure_reason
from device.core.audio_io import Audio
from device.core.inference import load_model


def test_it_says_an_unsure_result_with_its_reason_and_the_models_leaning():
    issues = ["no clear heartbeat rhythm: hold still, reduce noise, place the stethoscope firmly"]
    said = headline("unsure", {"normal": 0.11, "abnormal": 0.89}, issues)
    assert said == "UNSURE — poor signal: no clear heartbeat rhythm (model: 89% abnormal)"
    assert headline("abnormal", {"normal": 0.18, "abnormal": 0.82}) == "ABNORMAL (model: 82% abnormal)"
    assert headline("normal", {"normal": 0.7, "abnormal": 0.3}) == "NORMAL (model: 70% normal)"
    assert unsure_reason([]) == "the model could not decide"
    assert model_leaning({}) == "model: no probability"


def test_it_says_record_again_once():
    assert split_issue("noise bursts in 30% of the recording (movement): record again") == (
        "noise bursts in 30% of the recording (movement)",
        "",
    )
    issues = [
        "silent (RMS -90 dBFS): check that the stethoscope is on the chest, then record again",
        "signal very weak (-90 dBFS): press the stethoscope on the chest, check the gain",
        "no clear heartbeat rhythm: hold still",
        "no clear heartbeat rhythm: hold still",
    ]
    advice = rerecord_advice(issues)
    assert (
        advice
        == "check that the stethoscope is on the chest; press the stethoscope on the chest, check the gain; hold still"
    )
    assert "record again" not in advice.lower()


def test_a_real_silent_recording_is_said_without_repeating_itself():
    analysis = load_model().analyse(Audio(np.zeros(2000 * 10, dtype=np.float32), 2000, "silence"))
    said = headline(analysis.label, analysis.probabilities, analysis.quality.issues)
    assert said.startswith("UNSURE — poor signal: silent") and "% " in said and "confidence" not in said
    advice = rerecord_advice(analysis.quality.issues)
    assert advice and "record again" not in advice.lower()
    assert len(advice.split("; ")) == len(set(advice.split("; ")))
