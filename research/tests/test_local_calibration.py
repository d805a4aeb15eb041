"""Re-thresholding a left-out database on a few of its labelled recordings (research.local_calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from research import local_calibration as lc


def _shifted(rng: np.random.Generator, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    labels = (rng.random(n) < 0.3).astype(int)
    return labels, labels * 1.0 + rng.normal(0, 0.4, n) + 3.0  # well ranked, far above a 0.5 threshold


def test_a_threshold_set_on_a_few_labelled_recordings_recovers_a_shifted_database():
    rng = np.random.default_rng(0)
    labels, scores = _shifted(rng)
    res = lc.simulate(labels, scores, transferred=0.5, n=30, draws=100, rng=rng)
    assert res["transferred"] == pytest.approx(0.5)  # everything called abnormal
    assert res["local"] > 0.8 and res["draws"] == 100


def test_one_labelled_recording_cannot_move_the_threshold():
    rng = np.random.default_rng(1)
    labels, scores = _shifted(rng)
    res = lc.simulate(labels, scores, transferred=0.5, n=1, draws=50, rng=rng)
    assert res["local"] == res["transferred"]


def test_the_command_reads_ablation_results(tmp_path, capsys):
    rng = np.random.default_rng(2)
    labels, scores = _shifted(rng)
    lodo = {"labels": labels.tolist(), "scores": scores.tolist(), "threshold": 0.5, "records": []}
    (tmp_path / "da0.3-seed0.json").write_text(json.dumps({"lodo_scores": {"training-x": lodo}}))
    assert lc.main([str(tmp_path), "--labelled", "20", "--draws", "50"]) == 0
    out = capsys.readouterr().out
    assert "| training-x | 0.500 -> 0." in out and "| mean over x | 0.500 -> 0." in out


def test_results_without_scores_are_a_clear_error(tmp_path, capsys):
    (tmp_path / "da0.3-seed0.json").write_text(json.dumps({"lodo_macc": {}}))
    assert lc.main([str(tmp_path)]) == 2
    assert "no result with lodo_scores" in capsys.readouterr().err
