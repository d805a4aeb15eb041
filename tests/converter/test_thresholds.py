"""The pooled out-of-fold threshold and the check that decides whether it ships."""

from __future__ import annotations

import numpy as np

from converter import thresholds


def _scores(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores where abnormal recordings score about ``shift`` higher than normal ones."""
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 + shift * y + rng.normal(0, 0.1, n), 0, 1)


def test_the_pooled_threshold_separates_and_wins_over_badly_placed_validation_thresholds():
    rng = np.random.default_rng(0)
    y, s = _scores(rng, 600, 0.3)
    strata = np.array(["training-a", "training-e"] * 300)
    folds = np.arange(600) % 3
    pooled = thresholds.pooled_threshold(y, s, strata)
    assert 0.4 < pooled < 0.6  # between the two classes' centres, 0.35 and 0.65
    # validation parts that were too small chose thresholds far off
    check = thresholds.transfer_check(y, s, strata, folds, [0.2, 0.8, 0.25])
    assert check["at_pooled"]["not_e_macc"] > check["at_validation"]["not_e_macc"] + 0.1
    assert [p["fold"] for p in check["per_fold"]] == [0, 1, 2]
    thr, source = thresholds.choose(check, 0.3, pooled)
    assert thr == pooled and "pooled" in source


def test_the_validation_threshold_stays_when_the_pooled_one_does_worse():
    rng = np.random.default_rng(1)
    y, s = _scores(rng, 300, 0.3)
    strata = np.array(["training-a"] * 300)
    folds = np.arange(300) % 3
    # each fold's model scores on its own scale: pooling mixes scales, each fold's own threshold fits it
    offsets = np.array([0.0, 0.3, -0.3])[folds]
    s = s + offsets
    val = [float(0.5 + o) for o in (0.0, 0.3, -0.3)]
    check = thresholds.transfer_check(y, s, strata, folds, val)
    assert "not_e_macc" not in check["at_validation"]  # one database: no "outside training-e" scope
    assert check["at_validation"]["all_macc"] > check["at_pooled"]["all_macc"]
    thr, source = thresholds.choose(check, 0.42, 0.5)
    assert thr == 0.42 and "validation" in source
