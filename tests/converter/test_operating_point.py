"""converter.operating_point: the share of recordings flagged carries a threshold from the CV models to the
final ones, and nothing moves when the shares agree."""

from __future__ import annotations

import numpy as np
import pytest

from converter.operating_point import MIN_GAP, flag_rate, matched_threshold, transfer


def test_a_final_model_whose_scores_sit_lower_gets_the_threshold_that_flags_what_the_cv_models_flagged():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=900)
    squash = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    reference = [squash(latent + rng.normal(0, 0.1, 900)) for _ in range(5)]
    final = squash(latent - 0.8)  # ranks alike, scores lower
    tr = transfer(reference, final, 0.5)
    assert tr["moved"] and tr["final_flag_rate"] < tr["reference_flag_rate"] - MIN_GAP
    assert tr["threshold"] < 0.5 and abs(tr["final_flag_rate_at_threshold"] - tr["reference_flag_rate"]) < 0.002
    assert tr["rank_correlation"] > 0.99 and tr["mean_score_difference"] < 0


def test_shares_within_the_gap_keep_the_validated_threshold():
    scores = np.linspace(0, 1, 1000)
    tr = transfer([scores, scores + 0.005], scores, 0.6)
    assert not tr["moved"] and tr["threshold"] == 0.6
    assert tr["reference_flag_rates"] == [flag_rate(scores, 0.6), flag_rate(scores + 0.005, 0.6)]


def test_the_matched_threshold_flags_the_asked_share_and_handles_none_and_all():
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    assert matched_threshold(s, 0.4) == pytest.approx(0.75) and flag_rate(s, matched_threshold(s, 0.4)) == 0.4
    assert flag_rate(s, matched_threshold(s, 0.0)) == 0.0 and flag_rate(s, matched_threshold(s, 1.0)) == 1.0


def test_reference_models_must_score_the_same_recordings():
    with pytest.raises(ValueError, match="same, non-empty set"):
        transfer([np.ones(3)], np.ones(4), 0.5)
    with pytest.raises(ValueError, match="same, non-empty set"):
        transfer([], np.ones(4), 0.5)


def test_the_headline_threshold_weighs_physionet_recordings_and_circor_patients_not_databases():
    from converter.thresholds import headline_threshold

    # PhysioNet: abnormal at >= 0.4 separates perfectly; CirCor: patient P1 (abnormal) has recordings at 0.35
    # and 0.45 (mean 0.40), P2 (normal) at 0.1 and 0.2: 0.4 is the lowest threshold perfect on both
    y = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    s = np.array([0.2, 0.3, 0.4, 0.9, 0.35, 0.45, 0.1, 0.2])
    physionet = np.array([True] * 4 + [False] * 4)
    patient = np.array(["", "", "", "", "P1", "P1", "P2", "P2"])
    assert headline_threshold(y, s, physionet, patient) == pytest.approx(0.4)
    # a patient is scored by his mean: with P1 at 0.35 and 0.55 (mean 0.45) the cut can rise to it
    s2 = s.copy()
    s2[2], s2[5] = 0.5, 0.55
    assert headline_threshold(y, s2, physionet, patient) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="needs PhysioNet recordings and CirCor patients"):
        headline_threshold(y, s, np.zeros(8, dtype=bool), patient)
