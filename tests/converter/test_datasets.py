from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from converter import datasets as ds
from converter.data_cli import summarise
from device.core.errors import DatasetError


def test_physionet_counts_match_the_data_readme(data_dir):
    recs = ds.load_physionet2016(data_dir)
    assert Counter(r.label for r in recs) == {"normal": 2181, "abnormal": 569}
    per_folder = Counter(r.subset for r in recs)
    assert per_folder == {
        "training-a": 349,
        "training-b": 420,
        "training-c": 21,
        "training-d": 45,
        "training-e": 1821,
        "training-f": 94,
    }


def test_pascal_counts_match_the_data_readme(data_dir):
    recs = ds.load_pascal2011(data_dir, include_unlabelled=True)
    a = Counter(r.label for r in recs if r.subset == "set_a")
    b = Counter(r.label for r in recs if r.subset == "set_b")
    assert a == {"normal": 31, "murmur": 34, "extrahls": 19, "artifact": 40, None: 52}
    assert b == {"normal": 320, "murmur": 95, "extrastole": 46, None: 195}
    subs = Counter(r.sublabel for r in recs if r.sublabel)
    assert subs == {"noisynormal": 120, "noisymurmur": 29}


def test_summary_reports_counts_durations_and_rates(data_dir):
    table = summarise(data_dir)
    a = table[("physionet2016", "training-a")]
    assert a.labels == {"abnormal": 254, "normal": 95} and set(a.rates) == {2000} and not a.unreadable
    set_a = table[("pascal2011", "set_a")]
    assert set(set_a.rates) == {44100} and len(set_a.unlabelled) == 52
    assert table[("physionet2016", "training-e")].duration_s > 600 * 60


def test_it_reads_the_public_wav_layout(tmp_path, samples_dir):
    folder = tmp_path / "training-z"
    folder.mkdir()
    for stem in ("a0296", "a0405"):
        x, rate = sf.read(samples_dir / f"{stem}.flac")
        sf.write(folder / f"{stem}.wav", x, rate)
    (folder / "REFERENCE.csv").write_text("a0296,1\na0405,-1\n")
    recs = ds.load_physionet2016(tmp_path)
    assert [(r.record_id, r.label, r.path.suffix) for r in recs] == [
        ("a0296", "abnormal", ".wav"),
        ("a0405", "normal", ".wav"),
    ]


def test_it_reads_pascal_labels_from_wav_names_without_the_csv(tmp_path):
    for sub, name in (
        ("set_a", "murmur__201108222231"),
        ("set_b", "Btraining_normal_noisynormal_101_1305030823364_A"),
    ):
        (tmp_path / sub).mkdir(exist_ok=True)
        sf.write(tmp_path / sub / f"{name}.wav", np.zeros(100), 4000)
    labels = sorted((r.label, r.sublabel, r.group) for r in ds.load_pascal2011(tmp_path))
    assert labels == [("murmur", "", "set_a:murmur__201108222231"), ("normal", "noisynormal", "set_b:p101")]


def test_a_bad_reference_line_is_reported_with_its_place(tmp_path, samples_dir):
    folder = tmp_path / "training-z"
    folder.mkdir()
    shutil.copy(samples_dir / "a0296.flac", folder)
    (folder / "REFERENCE.csv").write_text("a0296,maybe\n")
    with pytest.raises(DatasetError, match=r"REFERENCE.csv:1"):
        ds.load_physionet2016(tmp_path)


def test_missing_data_folder_says_how_to_set_it(monkeypatch, tmp_path):
    monkeypatch.delenv(ds.DATA_ENV, raising=False)
    with pytest.raises(DatasetError, match="STETH_DATA_DIR"):
        ds.resolve_data_dir(None)
    with pytest.raises(DatasetError, match="does not exist"):
        ds.resolve_data_dir(tmp_path / "absent")


def test_folds_keep_blocks_together_and_balance_every_stratum(data_dir):
    recs = ds.load_physionet2016(data_dir)
    folds = ds.split_folds(recs, 5, seed=1)
    by_group: dict[str, set[int]] = {}
    for r, f in zip(recs, folds, strict=True):
        by_group.setdefault(r.group, set()).add(f)
    assert all(len(s) == 1 for s in by_group.values())
    for subset in ("training-a", "training-e"):
        for label in ("normal", "abnormal"):
            counts = Counter(f for r, f in zip(recs, folds, strict=True) if (r.subset, r.label) == (subset, label))
            assert max(counts.values()) - min(counts.values()) <= ds.MAX_BLOCK, (subset, label, counts)
    assert folds == ds.split_folds(recs, 5, seed=1)  # deterministic


def test_train_test_split_is_disjoint_by_group(data_dir):
    recs = ds.load_physionet2016(data_dir)
    train, test = ds.train_test_split(recs, 0.2, seed=0)
    assert len(train) + len(test) == len(recs)
    assert not {r.group for r in train} & {r.group for r in test}
    assert 0.15 < len(test) / len(recs) < 0.25
