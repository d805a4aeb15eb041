"""The window rules compared in research/window_aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from research.window_aggregation.evaluate import AGGREGATIONS


def test_rules_on_known_windows() -> None:
    p = np.array([0.1, 0.9, 0.8, 0.2])
    assert AGGREGATIONS["mean"](p) == pytest.approx(0.5)
    assert AGGREGATIONS["median"](p) == pytest.approx(0.5)
    assert AGGREGATIONS["upper_half"](p) == pytest.approx(0.85)  # the two highest windows
    assert AGGREGATIONS["logit_mean"](p) == pytest.approx(0.5)  # log-odds symmetric about 0
    assert AGGREGATIONS["logit_mean"](np.array([0.5, 0.99])) > AGGREGATIONS["mean"](np.array([0.5, 0.99]))


def test_one_window_is_its_own_score() -> None:
    for rule in AGGREGATIONS.values():
        assert rule(np.array([0.3])) == pytest.approx(0.3)
