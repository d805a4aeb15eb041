"""`steth evaluate` says when the recordings it scores trained the model (the sidecar lists them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from converter.datasets import Recording
from converter.evaluate import caveat, trained_on
from device.cli import main
from device.core.inference import models_dir


def rec(stem: str) -> Recording:
    return Recording("physionet2016", "training-a", stem, Path(f"{stem}.wav"), "normal")


def test_it_counts_only_the_listed_recordings():
    meta = {"training_recordings": ["a0001", "a0002"]}
    recs = [rec("a0001"), rec("a0003")]
    assert [r.record_id for r in trained_on(meta, recs)] == ["a0001"]
    assert caveat(meta, recs).startswith("CAVEAT: 1 of 2 recordings")
    assert caveat(meta, [rec("a0003")]) is None
    assert "does not list its training recordings" in caveat({}, recs)


def test_the_shipped_screening_model_warns_on_the_bundled_samples(samples_dir, capsys):
    # most bundled samples come from the PhysioNet recordings 0.4.0 trained on
    meta = json.loads((models_dir() / "screening.json").read_text())
    used = sorted(p.stem for p in samples_dir.glob("*.flac") if p.stem in set(meta["training_recordings"]))
    assert used, "the bundled samples are PhysioNet training recordings"
    assert main(["evaluate", str(samples_dir), "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["trained_on"] == len(used)
    assert f"CAVEAT: {len(used)} of 6" in out.err


def test_no_caveat_when_none_of_the_recordings_trained_it(samples_dir, tmp_path, capsys):
    held_out = tmp_path / "held"
    held_out.mkdir()
    meta = json.loads((models_dir() / "screening.json").read_text())
    listed = set(meta["training_recordings"])
    rows = [line for line in (samples_dir / "REFERENCE.csv").read_text().split() if line.split(",")[0] not in listed]
    assert rows, "some bundled samples are from 0.4.0's held-out split"
    for row in rows:
        shutil.copy(samples_dir / f"{row.split(',')[0]}.flac", held_out)
    (held_out / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", str(held_out)]) == 0
    assert "CAVEAT" not in capsys.readouterr().out
