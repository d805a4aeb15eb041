"""SpecAugment-style masks on training windows: a copy, bounded, only on the share asked for."""

from __future__ import annotations

import numpy as np

from converter.trainer import mask_windows


def test_masks_touch_about_the_share_asked_and_at_most_a_fifth_of_frames_and_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 201, 16)).astype(np.float32) + 3.0  # no feature is 0 before masking
    y = mask_windows(x, 0.5, rng)
    assert not (x == 0).any(), "the input must be left as it was"
    zero = y == 0
    masked = zero.any(axis=(1, 2))
    assert 0.45 < masked.mean() < 0.55
    full_frames = zero.all(axis=2).sum(axis=1)  # frames wiped across every coefficient
    full_coefs = zero.all(axis=1).sum(axis=1)  # coefficients wiped across every frame
    assert full_frames.max() <= 201 // 5 and full_coefs.max() <= 16 // 5
    assert np.array_equal(y[~masked], x[~masked])


def test_no_share_no_change():
    x = np.ones((10, 20, 4), dtype=np.float32)
    assert np.array_equal(mask_windows(x, 0.0, np.random.default_rng(1)), x)
