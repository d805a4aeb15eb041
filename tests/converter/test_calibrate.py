"""`steth calibrate`: a threshold set on a kit's own labelled recordings, kept only where it helps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.calibrate import MIN_PER_CLASS, choose_local
from converter.metrics import binary_scores
from tests.device.daemon_support import REPO, model_ref


def _kit(rng: np.random.Generator, n: int = 40, shift: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores a model ranks well but that sit ``shift`` above its threshold (a new stethoscope)."""
    y = np.zeros(n, dtype=bool)
    y[: n // 2] = True
    return y, y * 1.0 + rng.normal(0, 0.35, n) + shift


def test_a_shifted_kit_gets_its_own_threshold():
    y, s = _kit(np.random.default_rng(0))
    choice = choose_local(y, s, model_threshold=0.5)
    assert choice.macc_model == pytest.approx(0.5)  # every recording called abnormal
    assert choice.adopted and choice.macc_local_cv > 0.8
    assert binary_scores(y, s, choice.threshold)["macc"] > 0.85
    assert (choice.n_normal, choice.n_abnormal) == (20, 20)


def test_a_threshold_that_already_fits_is_kept():
    y, s = _kit(np.random.default_rng(1), shift=0.0)
    choice = choose_local(y, s, model_threshold=0.5)  # halfway between the classes: nothing to gain
    assert not choice.adopted, choice.reason
    assert "kept from +0.05 and at least 0.55" in choice.reason


def test_scores_that_do_not_rank_the_kit_cannot_move_the_threshold():
    rng = np.random.default_rng(2)
    y = np.arange(40) < 20
    kept = [choose_local(y, rng.random(40), 0.5, seed=i).adopted for i in range(20)]
    # Without the check every one of these would move. With it, none of these 20 does; with a margin of
    # 0.02, 3 would (cross-validated MAcc of pure noise on 40 recordings reaches 0.67).
    assert sum(kept) <= 2


def test_too_few_labelled_recordings_of_a_class_are_refused_with_the_number_needed():
    y = np.array([True] * (MIN_PER_CLASS - 1) + [False] * 30)
    choice = choose_local(y, y + 3.0, 0.5)
    assert not choice.adopted and choice.threshold == 0.5
    assert f"label at least {MIN_PER_CLASS} of each" in choice.reason


@pytest.fixture
def labelled_kit(data_dir: Path, tmp_path: Path) -> Path:
    """A field team's folder: 10 normal and 10 abnormal recordings of one stethoscope with a REFERENCE.csv."""
    folder = tmp_path / "kit"
    folder.mkdir()
    source = data_dir / "physionet2016" / "training-a"
    rows = [line.split(",") for line in (source / "REFERENCE.csv").read_text().split()]
    picked = [r for r in rows if r[1] == "1"][:10] + [r for r in rows if r[1] == "-1"][:10]
    for name, _ in picked:
        audio = next(source.glob(f"{name}.*"))
        (folder / audio.name).symlink_to(audio)
    (folder / "REFERENCE.csv").write_text("".join(f"{n},{lab}\n" for n, lab in picked))
    return folder


def steth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", *args], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )


@pytest.mark.slow
def test_calibrate_writes_a_threshold_the_classifier_then_decides_at(labelled_kit, tmp_path):
    model = model_ref()
    out = tmp_path / "thresholds"
    # --margin -1: keep the local threshold whatever cross-validation says, so the written file is exercised
    proc = steth("calibrate", str(labelled_kit), "--model", model, "--out", str(out), "--margin", "-1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["adopted"] and report["n_normal"] + report["n_abnormal"] >= 2 * MIN_PER_CLASS
    written = Path(report["written"])
    saved = json.loads(written.read_text())
    assert written.parent == out and saved["threshold"] == pytest.approx(report["threshold"], abs=1e-6)

    plain = steth("classify", str(labelled_kit), "--model", model, "--json")
    local = steth("classify", str(labelled_kit), "--model", model, "--json", "--threshold-dir", str(out))
    assert plain.returncode == 0 and local.returncode == 0, plain.stderr + local.stderr
    before = [json.loads(line) for line in plain.stdout.splitlines()]
    after = [json.loads(line) for line in local.stdout.splitlines()]
    assert all("decision" not in r for r in before)
    assert all(r["decision"]["threshold"] == saved["threshold"] for r in after)
    for b, a in zip(before, after, strict=True):
        assert a["windows"] != b["windows"] or saved["threshold"] == saved["model_threshold"]
        p = a["probabilities"]["abnormal"]
        if a["quality"]["ok"] and p != 0.5:  # centred on the threshold in force (0.5: right at it, rounded)
            assert a["label"] == ("abnormal" if p > 0.5 else "normal")


@pytest.mark.slow
def test_calibrate_keeps_the_models_threshold_when_the_local_one_does_not_gain(labelled_kit, tmp_path):
    out = tmp_path / "thresholds"
    proc = steth("calibrate", str(labelled_kit), "--model", model_ref(), "--out", str(out), "--margin", "1")
    assert proc.returncode == 1, proc.stderr
    assert "nothing written: the device keeps the model's own threshold" in proc.stdout
    assert not out.exists()


@pytest.mark.slow
def test_a_refused_calibration_says_an_earlier_threshold_stays_in_force(labelled_kit, tmp_path):
    out = tmp_path / "thresholds"
    model = model_ref()
    assert steth("calibrate", str(labelled_kit), "--model", model, "--out", str(out), "--margin", "-1").returncode == 0
    proc = steth("calibrate", str(labelled_kit), "--model", model, "--out", str(out), "--margin", "1")
    assert proc.returncode == 1 and "stays in force: remove it" in proc.stdout


def test_too_few_labelled_recordings_print_valid_json(tmp_path, samples_dir):
    proc = steth("calibrate", str(samples_dir), "--model", model_ref(), "--out", str(tmp_path / "t"), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)  # no NaN token: the cross-validation never ran
    assert report["macc_local_cv"] is None and "label at least 8 of each" in report["reason"]


@pytest.mark.slow
def test_calibrate_on_an_empty_folder_is_a_clear_error(tmp_path):
    proc = steth("calibrate", str(tmp_path), "--model", model_ref(), "--out", str(tmp_path / "t"))
    assert proc.returncode == 2
    assert "no labelled recordings" in proc.stderr
