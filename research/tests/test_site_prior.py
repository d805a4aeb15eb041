"""The known-source prior (research/site_prior): Bayes' shift by the recognised source, neutral elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.core.features import FeatureParams
from research.site_prior import fit as sp
from research.site_prior.prior import SitePrior


def _sources(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three well separated sources: two weighted (PhysioNet-like) with 80% and 10% abnormal, one not."""
    rng = np.random.default_rng(seed)
    centres = {"a": 0.0, "e": 6.0, "circor": -6.0}
    prev = {"a": 0.8, "e": 0.1, "circor": 0.3}
    sig, src, abn = [], [], []
    for name, c in centres.items():
        sig.append(rng.normal(c, 1.0, (200, 4)))
        src += [name] * 200
        abn += [int(v) for v in rng.random(200) < prev[name]]
    src_a = np.array(src)
    return np.vstack(sig), src_a, np.array(abn), src_a != "circor"


def test_prior_shifts_by_source_prevalence_and_leaves_other_sources_alone() -> None:
    sig, src, abn, weighted = _sources()
    model = sp.fit(sig, src, abn, weighted)
    ref = abn[weighted].mean()
    assert model.reference == pytest.approx(ref)
    shift, known = model.offset(np.array([[0.0] * 4, [6.0] * 4, [-6.0] * 4]))
    assert known.all()
    assert shift[0] > 1.2  # source a: ~80% abnormal against ~45% pooled
    assert shift[1] < -1.2  # source e: ~10%
    assert abs(shift[2]) < 0.05  # not a weighted source: no prevalence of its own enters
    far, known_far = model.offset(np.array([[40.0, -40.0, 40.0, -40.0]]))
    assert not known_far[0] and far[0] == 0.0  # nowhere near any source: the score is left alone
    nan, known_nan = model.offset(np.array([[np.nan] * 4]))
    assert not known_nan[0] and nan[0] == 0.0


def test_adjust_is_a_log_odds_shift_and_round_trips() -> None:
    sig, src, abn, weighted = _sources(1)
    model = sp.fit(sig, src, abn, weighted)
    again = SitePrior.from_dict(model.to_dict())
    scores = np.array([0.2, 0.5, 0.7])
    probe = np.array([[0.0] * 4] * 3)
    adj, _ = again.adjust(scores, probe)
    shift, _ = model.offset(probe)
    logit = np.log(scores / (1 - scores)) + shift
    np.testing.assert_allclose(adj, 1 / (1 + np.exp(-logit)), rtol=1e-9)
    assert (adj > scores).all()


def test_signature_of_a_real_recording_is_finite_and_not_normalised(samples_dir: Path) -> None:
    wav = sorted(samples_dir.glob("*.flac"))[0]
    sig = sp.signature_of((str(wav), FeatureParams(n_mfcc=16, cmvn="recording")))
    assert sig.shape == (32,) and np.isfinite(sig).all()
    assert abs(sig[0]) > 1.0  # the first cepstral coefficient's mean: the channel's level, kept here
    assert (sig[16:] > 0).all()  # standard deviations
