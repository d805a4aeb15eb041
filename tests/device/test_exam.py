"""combine_exam: one answer per exam from its recordings' results, on real results and edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device.core.exam import combine_exam, combine_murmur, usable
from device.core.inference import load_model

SAMPLES = Path(__file__).resolve().parents[2] / "device" / "samples"


def result(
    label: str, p_abnormal: float, *, ok: bool = True, murmur: float | None = None, site: str | None = None
) -> dict[str, Any]:
    """A result shaped like `steth classify --json` prints it (only the fields the rule reads differ)."""
    r: dict[str, Any] = {
        "file": f"{site or 'x'}.wav",
        "label": label,
        "probabilities": {"normal": round(1 - p_abnormal, 4), "abnormal": p_abnormal},
        "quality": {"score": 0.9 if ok else 0.1, "ok": ok, "issues": [] if ok else ["too noisy"]},
        "task": "screening",
    }
    if murmur is not None:
        r["murmur"] = {"label": "present" if murmur >= 0.5 else "absent", "probability": murmur}
    if site:
        r["site"] = site
    return r


def test_the_exam_is_the_mean_of_its_usable_sites_not_any_one_of_them():
    # one site over the threshold, outvoted by the other: (0.2 + 0.7) / 2 < 0.5
    exam = combine_exam([result("normal", 0.2, site="aortic"), result("abnormal", 0.7, site="mitral")])
    assert exam["label"] == "normal"
    assert exam["probabilities"] == {"normal": 0.55, "abnormal": 0.45}
    assert exam["n_recordings"] == 2 and exam["n_usable"] == 2
    # two of three sites clearly abnormal: (0.9 + 0.8 + 0.3) / 3 >= 0.5
    exam = combine_exam([result("abnormal", 0.9), result("abnormal", 0.8), result("normal", 0.3)])
    assert exam["label"] == "abnormal" and exam["probabilities"]["abnormal"] == pytest.approx(0.6667, abs=1e-4)


def test_a_tie_at_the_threshold_goes_to_the_finding_as_for_one_recording():
    exam = combine_exam([result("abnormal", 0.6), result("normal", 0.4)])
    assert exam["probabilities"] == {"normal": 0.5, "abnormal": 0.5} and exam["label"] == "abnormal"


def test_unfit_recordings_do_not_count():
    exam = combine_exam([result("normal", 0.2), result("normal", 0.4), result("unsure", 0.9, ok=False)])
    # the unfit recording's high score does not count
    assert exam["label"] == "normal"
    assert exam["probabilities"]["abnormal"] == 0.3
    assert exam["n_usable"] == 2


def test_several_labels_take_the_highest_mean():
    def r(probs: dict[str, float]) -> dict[str, Any]:
        label = max(probs, key=lambda k: probs[k])
        return {"label": label, "probabilities": probs, "quality": {"ok": True, "score": 0.9}}

    exam = combine_exam(
        [r({"normal": 0.5, "murmur": 0.4, "extrahls": 0.1}), r({"normal": 0.2, "murmur": 0.7, "extrahls": 0.1})]
    )
    assert exam["label"] == "murmur" and exam["probabilities"] == {"normal": 0.35, "murmur": 0.55, "extrahls": 0.1}


def test_an_exam_without_a_usable_recording_is_unsure_and_its_murmur_unknown():
    exam = combine_exam([result("unsure", 0.9, ok=False, murmur=0.9), result("unsure", 0.1, ok=False)])
    assert exam["label"] == "unsure" and exam["probabilities"] == {}
    assert exam["murmur"] == {"label": "unknown", "probability": None, "sites": [], "n_recordings": 0}
    assert combine_exam([])["label"] == "unsure"


def test_murmur_is_present_at_the_sites_that_say_so_most_likely_first():
    exam = combine_exam(
        [
            result("normal", 0.2, murmur=0.3, site="aortic"),
            result("abnormal", 0.6, murmur=0.8, site="mitral"),
            result("normal", 0.3, murmur=0.6, site="tricuspid"),
            result("unsure", 0.3, ok=False, murmur=0.99, site="pulmonic"),
        ]
    )
    m = exam["murmur"]
    # mean over the three usable sites: (0.3 + 0.8 + 0.6) / 3
    assert m["label"] == "present" and m["probability"] == pytest.approx(0.5667, abs=1e-4)
    assert m["sites"] == ["mitral", "tricuspid"]
    assert "pulmonic" not in m["site_probabilities"] and m["n_recordings"] == 3


def test_murmur_is_absent_when_the_sites_together_do_not_reach_the_threshold():
    m = combine_murmur([result("normal", 0.2, murmur=0.3, site="aortic"), result("normal", 0.2, murmur=0.6)])
    # one site above 0.5 is outvoted by the other: the mean rule (see MURMUR_RULE)
    assert m["label"] == "absent" and m["sites"] == [] and m["probability"] == 0.45
    assert m["site_probabilities"] == {"aortic": 0.3, "unknown": 0.6}


def test_a_recording_whose_murmur_is_unknown_does_not_count():
    r = result("normal", 0.2, murmur=0.9)
    r["murmur"]["label"] = "unknown"
    assert combine_murmur([r])["label"] == "unknown"
    assert usable(r)


@pytest.mark.parametrize("names", [["a0405.flac", "e00008.flac"], ["a0296.flac"]])
def test_it_combines_real_results_of_the_shipped_model(names):
    clf = load_model()
    results = [clf.analyse_file(SAMPLES / n).to_json(n) for n in names]
    exam = combine_exam(results)
    counted = [r for r in results if usable(r)]
    assert exam["n_usable"] == len(counted)
    if counted:
        mean = sum(r["probabilities"]["abnormal"] for r in counted) / len(counted)
        assert exam["probabilities"]["abnormal"] == pytest.approx(mean, abs=1e-4)
        assert (exam["label"] == "abnormal") == (round(mean, 4) >= 0.5)
    else:
        assert exam["label"] == "unsure"


def test_it_combines_result_messages_as_the_dashboard_receives_them():
    from device.core import contract

    clf = load_model()
    messages = [
        clf.analyse_file(SAMPLES / name).to_result_message("kit-1", patient_ref="p-7", site=site)
        for name, site in (("a0405.flac", "aortic"), ("d0017.flac", "mitral"))
    ]
    for m in messages:
        contract.validate("result", m)
    exam = combine_exam(messages)
    assert exam["n_recordings"] == 2
    murmur = [m["murmur"]["probability"] for m in messages if usable(m) and "murmur" in m]
    if murmur:  # the murmur model is shipped: its sites come from the messages' own site field
        assert set(exam["murmur"]["site_probabilities"]) <= {"aortic", "mitral"}
        assert exam["murmur"]["probability"] == pytest.approx(sum(murmur) / len(murmur), abs=1e-4)
