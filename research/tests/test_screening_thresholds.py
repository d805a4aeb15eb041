"""The nested threshold study of session 14 on a synthetic run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from research import screening_thresholds as st


def _run(tmp_path: Path, circor_shift: float) -> Path:
    """Five folds of PhysioNet (two databases), CirCor patients with 1-3 sites, PASCAL; the comparator
    like the candidate but with CirCor's scores shifted up (false alarms on CirCor)."""
    rng = np.random.default_rng(0)
    keys, y, db, fold = [], [], [], []
    for i in range(300):
        d = ("training-a", "training-e")[i % 2]
        keys.append(f"physionet2016/{d}/a{i:04d}")
        db.append(d)
        y.append(int(rng.random() < 0.3))
        fold.append(i % 5)
    for p in range(100):
        lab = int(rng.random() < 0.3)
        for site in ("AV", "MV", "PV")[: int(rng.integers(1, 4))]:
            keys.append(f"circor2022/{50000 + p}_{site}")
            db.append("training_data")
            y.append(lab)
            fold.append(p % 5)
    ya = np.array(y)
    circor = np.array([k.startswith("circor") for k in keys])
    for name, shift in (("oof.json", 0.0), ("oof_comparator.json", circor_shift)):
        s = np.clip(0.3 + 0.3 * ya + rng.normal(0, 0.15, len(ya)) + shift * circor, 0.01, 0.99)
        (tmp_path / name).write_text(
            json.dumps(
                {
                    "labels": ["normal", "abnormal"],
                    "records": keys,
                    "y": y,
                    "database": db,
                    "fold": fold,
                    "probabilities": {"conv_lstm": np.stack([1 - s, s], 1).tolist()},
                }
            )
        )
    cv = [{"fold": f, "threshold": 0.45} for f in range(5)]
    report = {"chosen_arch": "conv_lstm", "cv": cv, "comparator": {"trained_without": "circor2022", "cv": cv}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    return tmp_path


def test_patients_are_scored_by_the_mean_of_their_recordings(tmp_path):
    o = st.load_oof(_run(tmp_path, 0.0) / "oof.json", [0.45] * 5)
    yp, sp = st.patients(o, np.ones(len(o.y), bool))
    assert len(yp) == 100
    first = o.patient == "50000"
    assert sp[0] == np.mean(o.s[first]) and yp[0] == o.y[first][0]


def test_t2_maximises_the_mean_of_physionet_and_circor_patient_macc(tmp_path):
    o = st.load_oof(_run(tmp_path, 0.0) / "oof.json", [0.45] * 5)
    m = o.fold != 0
    thr = st.headline_threshold(o, m)

    def objective(t: float) -> float:
        yp, sp = st.patients(o, m)
        ph = m & o.physionet
        return (st.binary_scores(o.y[ph], o.s[ph], t)["macc"] + st.binary_scores(yp, sp, t)["macc"]) / 2

    assert objective(thr) >= max(objective(t) for t in np.linspace(0, 1, 501)) - 1e-12


def test_the_rule_prints_its_decision_and_writes_every_figure(tmp_path, capsys):
    run = _run(tmp_path, 0.25)
    assert st.main([str(run), "--json", str(run / "out.json")]) == 0
    out = json.loads((run / "out.json").read_text())
    # the comparator's CirCor false alarms cost it per-patient MAcc: c holds; nothing else differs
    assert out["decision"] == {
        "a_physionet_all": True,
        "b_physionet_not_e": True,
        "c_circor_patient": True,
        "ship_cv": True,
    }
    assert set(out["results"]["candidate (all sources)"]) >= {"T0", "T1", "T2", "on_all_oof"}
    assert "| T2 | candidate (all sources) |" in capsys.readouterr().out
