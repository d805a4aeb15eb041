"""The training sampler: equal labels within each database (or its own mix on request), databases by
sqrt(size), scaled on request."""

from __future__ import annotations

import numpy as np
import pytest

from converter.featurestore import FeatureSet
from converter.trainer import TrainSettings, WindowSampler
from device.core.errors import ConfigError


def _sampler(scale: dict[str, float] | None = None, label_mix: str = "balanced") -> WindowSampler:
    # database "big" has 400 recordings, "small" 100; labels alternate; one window per recording,
    # whose single value is its recording's index (so a draw tells where it came from)
    n = 500
    strata = np.array(["big"] * 400 + ["small"] * 100)
    y = np.arange(n) % 2
    fs = FeatureSet(np.arange(n, dtype=np.float32).reshape(n, 1, 1), np.arange(n, dtype=np.int32), [], [])
    return WindowSampler([fs], y, strata, np.arange(n), scale, label_mix)


def _big_share(scale: dict[str, float] | None) -> float:
    x, _, _ = _sampler(scale).draw(6000, np.random.default_rng(0))
    return float(np.mean(x.ravel() < 400))


def test_databases_are_drawn_by_the_square_root_of_their_size_and_the_scale_moves_that():
    assert _big_share(None) == pytest.approx(2 / 3, abs=0.01)  # sqrt(400) : sqrt(100) = 2 : 1
    assert _big_share({"big": 0.25}) == pytest.approx(1 / 3, abs=0.01)  # 0.5 : 1
    assert _big_share({"big": 0.0}) == 0.0


def test_labels_stay_balanced_within_a_scaled_database():
    x, labels, _ = _sampler({"big": 0.25}).draw(6000, np.random.default_rng(1))
    big = x.ravel() < 400
    assert np.mean(labels[big]) == pytest.approx(0.5, abs=0.02)


def test_a_natural_label_mix_keeps_each_databases_own_prevalence():
    # "big": 1 abnormal in 4; "small": 3 in 4 (labels by index: a prevalence per database)
    n = 500
    strata = np.array(["big"] * 400 + ["small"] * 100)
    y = np.r_[(np.arange(400) % 4 == 0), (np.arange(100) % 4 != 0)].astype(int)
    fs = FeatureSet(np.arange(n, dtype=np.float32).reshape(n, 1, 1), np.arange(n, dtype=np.int32), [], [])
    for mix, big_share, small_share in (("natural", 0.25, 0.75), ("balanced", 0.5, 0.5)):
        x, labels, _ = WindowSampler([fs], y, strata, np.arange(n), None, mix).draw(8000, np.random.default_rng(2))
        big = x.ravel() < 400
        assert np.mean(labels[big]) == pytest.approx(big_share, abs=0.02), mix
        assert np.mean(labels[~big]) == pytest.approx(small_share, abs=0.03), mix
        assert np.mean(big) == pytest.approx(2 / 3, abs=0.01)  # databases still by sqrt(size)


def test_an_unknown_label_mix_is_refused():
    with pytest.raises(ConfigError, match="label_mix"):
        TrainSettings(label_mix="prevalence")


@pytest.mark.parametrize("spec", ["training-e", "training-e=-1", "=0.5", "training-e=x"])
def test_a_malformed_scale_is_refused_when_the_settings_are_made(spec):
    with pytest.raises(ConfigError, match="database_scale"):
        TrainSettings(database_scale=spec)


def test_a_scale_that_leaves_nothing_to_train_on_is_refused():
    with pytest.raises(ConfigError, match="no database"):
        _sampler({"big": 0, "small": 0}).draw(100, np.random.default_rng(0))


def test_scales_parse():
    assert TrainSettings(database_scale="training-e=0.25, training-b=2").scales() == {
        "training-e": 0.25,
        "training-b": 2.0,
    }


def test_weight_average_is_the_mean_of_what_was_added():
    from converter.trainer import WeightAverage

    avg = WeightAverage()
    avg.add([np.array([1.0, 2.0], np.float32), np.array([[4.0]], np.float32)])
    avg.add([np.array([3.0, 6.0], np.float32), np.array([[0.0]], np.float32)])
    mean = avg.mean()
    assert avg.count == 2 and mean[0].tolist() == [2.0, 4.0] and mean[1].tolist() == [[2.0]]
    assert mean[0].dtype == np.float32


@pytest.mark.parametrize("n", [-1, 17])
def test_averaging_more_epochs_than_there_are_is_refused(n):
    with pytest.raises(ConfigError, match="average_last"):
        TrainSettings(average_last=n)
