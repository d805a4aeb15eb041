"""The database-transfer check: its features ignore the gain, and its evaluation tells a label that
carries over between databases from one that is inverted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from converter.datasets import Recording
from research import database_transfer as dt


def test_features_of_real_recordings_are_finite_and_do_not_move_with_the_gain(samples_dir, tmp_path):
    for name in ("a0296", "e00008"):
        samples, rate = sf.read(samples_dir / f"{name}.flac", dtype="float32")
        quiet = tmp_path / f"{name}-quiet.wav"
        sf.write(quiet, samples * 0.1, rate, subtype="FLOAT")
        loud, soft = dt.recording_features(str(samples_dir / f"{name}.flac")), dt.recording_features(str(quiet))
        assert loud is not None and soft is not None
        assert all(np.isfinite(v) for v in loud.values())
        assert loud["rhythm_found"] == 1.0 and loud["periodicity"] > 0.25, "a real recording has a heartbeat rhythm"
        for key, value in loud.items():
            assert soft[key] == pytest.approx(value, rel=1e-3, abs=1e-3), key


def test_a_recording_the_pipeline_refuses_gives_no_features(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(20_000, dtype=np.float32), 2000)
    assert dt.recording_features(str(silent)) is None


def _synthetic(inverted: str) -> tuple[list[Recording], list[dict[str, float] | None]]:
    """Five databases where feature "f" marks abnormal recordings, except ``inverted``, where it marks normal."""
    rng = np.random.default_rng(0)
    recs, rows = [], []
    for db in ("training-a", "training-b", "training-c", "training-d", "training-e"):
        for i in range(120):
            abnormal = i % 3 == 0
            sign = -1.0 if db == inverted else 1.0
            recs.append(
                Recording("physionet2016", db, f"{db[-1]}{i:04d}", Path("x"), "abnormal" if abnormal else "normal")
            )
            rows.append({"f": sign * float(abnormal) + rng.normal(0, 0.5), "noise": float(rng.normal())})
    return recs, rows


def test_evaluation_finds_the_database_whose_label_is_inverted():
    res = dt.evaluate(*_synthetic(inverted="training-c"))
    lodo = res["lodo"]["all"]
    assert lodo["training-c"]["auc"] < 0.2, "trained on the others, the inverted database scores below chance"
    for db in ("training-a", "training-b", "training-d", "training-e"):
        assert lodo[db]["auc"] > 0.75 and lodo[db]["macc"] > 0.6
        assert res["pairs"][db][db] > 0.8
    assert res["pairs"]["training-a"]["training-c"] < 0.3 and res["pairs"]["training-c"]["training-c"] > 0.8
    assert "| the other five |" in dt.report(res)
