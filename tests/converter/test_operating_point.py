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
