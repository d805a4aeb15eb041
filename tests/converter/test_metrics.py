from __future__ import annotations

import numpy as np
import pytest

from converter.metrics import best_threshold, binary_scores, confusion, pascal_scores, roc_auc


def test_auc_matches_scikit_learn_with_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounded: many ties
    assert roc_auc(y, s) == pytest.approx(sklearn.roc_auc_score(y, s))
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


def test_binary_scores_count_sensitivity_and_specificity():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.2, 0.1, 0.6, 0.3, 0.2])
    r = binary_scores(y, s, 0.5)
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(3 / 4)
    assert r["macc"] == pytest.approx((2 / 3 + 3 / 4) / 2) and r["n_abnormal"] == 3


def test_best_threshold_balances_groups_not_records():
    # group A is large and separable at 0.5; group B is small and separable only at 0.8
    y = np.array([0] * 50 + [1] * 50 + [0, 0, 1, 1])
    s = np.array([0.2] * 50 + [0.9] * 50 + [0.7, 0.75, 0.85, 0.9])
    g = np.array(["a"] * 100 + ["b"] * 4)
    t = best_threshold(y, s, g)
    assert 0.75 < t <= 0.85
    assert binary_scores(y[g == "b"], s[g == "b"], t)["macc"] == 1.0


def test_pascal_scores_follow_the_challenge_definitions():
    labels = ["normal", "murmur"]
    cm = confusion(
        ["normal", "normal", "murmur", "murmur", "murmur"], ["normal", "murmur", "murmur", "murmur", "normal"], labels
    )
    assert cm.tolist() == [[1, 1], [1, 2]]
    r = pascal_scores(cm, labels)
    m = r["per_class"]["murmur"]
    assert m["precision"] == pytest.approx(2 / 3) and m["sensitivity"] == pytest.approx(2 / 3)
    assert m["youden"] == pytest.approx(2 / 3 + 1 / 2 - 1)
    assert r["accuracy"] == pytest.approx(3 / 5)
