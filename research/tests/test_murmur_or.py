"""The murmur-OR study (research/murmur_or) on synthetic run folders: OR per recording and per patient,
the recordings without a murmur score left out, and the rule's verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research.murmur_or import study


def _runs(tmp_path: Path) -> tuple[Path, Path]:
    # PhysioNet: an abnormal S misses and M catches; a normal M calls present; one without a murmur score.
    # CirCor: patient 1 Present (two murmur sites, S low, M high), patient 2 Absent (S low, M low).
    rows = [
        ("physionet2016/training-a/a0001", 1, 0.9, 0.1),
        ("physionet2016/training-a/a0002", 1, 0.2, 0.8),
        ("physionet2016/training-a/a0003", 0, 0.1, 0.9),
        ("physionet2016/training-e/e0001", 0, 0.1, 0.1),
        ("physionet2016/training-e/e0002", 0, 0.1, None),
        ("circor2022/training_data/50001_AV", 1, 0.3, 0.9),
        ("circor2022/training_data/50001_MV", 1, 0.4, 0.7),
        ("circor2022/training_data/50002_AV", 0, 0.2, 0.1),
    ]
    run = tmp_path / "screening"
    (run / "ensemble").mkdir(parents=True)
    oof = {
        "labels": ["normal", "abnormal"],
        "records": [r[0] for r in rows],
        "y": [r[1] for r in rows],
        "probabilities": {"conv_lstm": [[1 - r[2], r[2]] for r in rows]},
    }
    for name in ("oof.json", "oof_comparator.json"):
        (run / name).write_text(json.dumps(oof))
    (run / "ensemble" / "report.json").write_text(json.dumps({"threshold": study.SHIPPED_THRESHOLD}))
    (run / "report.json").write_text(json.dumps({"task": "screening"}))
    (run / "split.json").write_text(json.dumps({"test": ["circor2022/training_data/59999_AV"]}))
    murmur = tmp_path / "murmur"
    murmur.mkdir()
    m = {
        "rule": "mean",
        "threshold": 0.5,
        "circor": {r[0]: r[3] for r in rows if r[0].startswith("circor")} | {"circor2022/training_data/50001_TV": 0.1},
        "physionet": {r[0]: r[3] for r in rows if r[0].startswith("physionet") and r[3] is not None},
        "unscored": ["physionet2016/training-e/e0002"],
    }
    (murmur / "oof.json").write_text(json.dumps(m))
    (murmur / "split.json").write_text(json.dumps({"test": [], "physionet_test": []}))
    return run, murmur / "oof.json"


def test_or_per_recording_and_per_patient(tmp_path: Path) -> None:
    r = study.study(*_runs(tmp_path))
    assert r["counts"]["physionet_recordings"] == 4 and r["counts"]["physionet_without_murmur_score"] == 1
    pn = r["physionet"]["all"]
    assert (pn["S"]["sensitivity"], pn["S"]["specificity"]) == (0.5, 1.0)
    assert (pn["S+M"]["sensitivity"], pn["S+M"]["specificity"]) == (1.0, 0.5)
    assert pn["or_changes"] == {"normals_newly_abnormal": 1, "abnormals_newly_caught": 1}
    assert r["physionet"]["not_e"]["S"]["n"] == 3
    c = r["circor"]["patient"]
    assert r["circor"]["n_patients"] == 2 and c["S"]["macc"] == 0.5 and c["S+M"]["macc"] == 1.0
    # the murmur's other site (TV, not in the screening OOF) counts only in the all-sites comparison
    assert r["circor"]["patient_m_all_sites"]["recordings"] == 4
    assert r["verdict"]["checks"] == {"a_circor_patient": True, "b_physionet_all": True, "b_physionet_not_e": False}
    assert r["verdict"]["adopt_or_rule"] is False


def test_a_test_recording_in_a_scope_stops_the_study(tmp_path: Path) -> None:
    run, oof = _runs(tmp_path)
    (run / "split.json").write_text(json.dumps({"test": ["circor2022/training_data/50002_AV"]}))
    with pytest.raises(AssertionError, match="test recording"):
        study.study(run, oof)
