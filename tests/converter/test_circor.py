from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from converter import circor
from converter.data_cli import summarise_circor
from device.core.errors import DatasetError


@pytest.fixture(scope="session")
def circor_dir(data_dir: Path) -> Path:
    folder = data_dir / "circor2022"
    if not (folder / "training_data").is_dir():
        pytest.skip(f"CirCor slice not found under {data_dir}")
    return folder


def test_it_loads_the_slice_with_patient_labels_and_spans(circor_dir):
    recs = circor.load_circor2022(circor_dir.parent)  # the data folder or circor2022/ itself
    assert len(recs) == 56
    assert len({r.patient for r in recs}) == 16
    assert Counter(r.site for r in recs) == {"AV": 14, "MV": 15, "PV": 14, "TV": 13}
    first = next(r for r in recs if r.record_id == "50103_AV")
    assert first.murmur == "Absent" and first.outcome == "Normal" and first.murmur_locations == ()
    assert first.spans[0] == circor.Span(0.08025, 0.34025, circor.DIASTOLE)
    assert first.path.suffix == ".flac"
    present = next(r for r in recs if r.patient == "50238")
    assert present.murmur_locations == ("AV", "MV", "PV", "TV") and present.murmur_here
    # every recording has an annotated segmentation
    assert all(r.annotated_s() > 1.0 for r in recs)


def test_it_restricts_to_the_development_list_and_keeps_linked_patients_together(circor_dir, tmp_path):
    root = tmp_path / "cc"
    shutil.copytree(circor_dir, root)
    some = sorted({r.patient for r in circor.load_circor2022(root)})[:3]
    (root / circor.PATIENTS_FILE).write_text("\n".join(some) + "\n")
    assert {r.patient for r in circor.load_circor2022(root)} == set(some)
    assert len({r.patient for r in circor.load_circor2022(root, restrict=False)}) == 16
    # link two patients through Additional ID: they must share a group and a split side
    table = (root / "training_data.csv").read_text().splitlines()
    header, rows = table[0], table[1:]
    a, b = rows[0].split(","), rows[1].split(",")
    a[-1] = b[0] + ".0"
    (root / "training_data.csv").write_text("\n".join([header, ",".join(a), *rows[1:]]) + "\n")
    recs = circor.load_circor2022(root, restrict=False)
    group = {r.patient: r.group for r in recs}
    assert group[a[0]] == group[b[0]]
    for seed in range(5):
        train, test = circor.split_patients(recs, 0.3, seed)
        assert {r.group for r in train}.isdisjoint({r.group for r in test})
        assert (a[0] in {r.patient for r in test}) == (b[0] in {r.patient for r in test})


def test_bad_segmentation_and_missing_folder_are_clear_errors(circor_dir, tmp_path):
    with pytest.raises(DatasetError, match="training_data"):
        circor.load_circor2022(tmp_path)
    bad = tmp_path / "x.tsv"
    bad.write_text("0.1\t0.2\t7\n")
    with pytest.raises(DatasetError, match="unknown state"):
        circor.read_segmentation(bad)


def test_summary_reports_sites_labels_and_annotated_time(circor_dir):
    s = summarise_circor(circor_dir)
    assert s.patients == 16 and sum(s.recordings_per_site.values()) == 56
    assert s.murmur == {"Absent": 8, "Present": 6, "Unknown": 2}
    assert s.outcome == {"Abnormal": 11, "Normal": 5}
    assert 0 < s.annotated_s < s.duration_s
    assert s.annotated_s + s.unannotated_s == pytest.approx(s.duration_s)
