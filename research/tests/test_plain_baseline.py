"""The plain-baseline comparison on synthetic run folders: the nested thresholds are steth ensemble's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converter import datasets as ds
from converter.ensemble import nested_cv
from converter.tasks import get_task
from research.plain_baseline import compare as cp


def _oof_file(path: Path, keys: list[str], y: list[int], db: list[str], fold: list[int], scores: dict) -> Path:
    path.write_text(
        json.dumps(
            {
                "labels": ["normal", "abnormal"],
                "records": keys,
                "y": y,
                "database": db,
                "fold": fold,
                "probabilities": {a: np.stack([1 - s, s], 1).tolist() for a, s in scores.items()},
            }
        )
    )
    return path


def _physionet(n: int, seed: int) -> tuple[list[str], list[int], list[str], list[int]]:
    rng = np.random.default_rng(seed)
    db = [("training-a", "training-b", "training-e")[i % 3] for i in range(n)]
    keys = [f"physionet2016/{d}/r{i:04d}" for i, d in enumerate(db)]
    return keys, [int(rng.random() < 0.3) for _ in range(n)], db, [i % 5 for i in range(n)]


def _scores(y: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ya = np.array(y, dtype=float)
    return np.clip(0.3 + 0.3 * ya + rng.normal(0, 0.2, len(ya)), 0.01, 0.99)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    """A plain run (two archs, PhysioNet only) and a recipe run (PhysioNet + CirCor, with its comparator)."""
    keys, y, db, fold = _physionet(300, 0)
    plain = tmp_path / "plain"
    plain.mkdir()
    _oof_file(plain / "oof.json", keys, y, db, fold, {"lstm": _scores(y, 1), "conv_lstm": _scores(y, 2)})
    (plain / "report.json").write_text(json.dumps({"seconds": 12.5}))
    # the recipe's folds differ (shifted by one); CirCor recordings added, scored high (false alarms)
    rkeys = keys + [f"circor2022/training_data/5{i:04d}_AV" for i in range(100)]
    ry = y + [int(i % 4 == 0) for i in range(100)]
    rdb = db + ["training_data"] * 100
    rfold = [(f + 1) % 5 for f in fold] + [i % 5 for i in range(100)]
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    for name, seed in (("oof.json", 3), ("oof_comparator.json", 4)):
        s = _scores(ry, seed)
        s[300:] = np.clip(s[300:] + 0.3, 0, 0.99)
        _oof_file(recipe / name, rkeys, ry, rdb, rfold, {"conv_lstm": s})
    (recipe / "report.json").write_text(json.dumps({"seconds": 99.0}))
    return plain, recipe


def test_it_scores_each_fold_at_the_threshold_pooled_over_the_other_folds(runs):
    plain, _ = runs
    o = cp.load_oof(plain / "oof.json")["lstm"]
    res = cp.nested(o)
    for entry in res["folds"]:
        other = o.fold != entry["fold"]
        assert entry["threshold"] == cp.pooled_threshold(o.y[other], o.s[other], o.strata[other])
    # changing fold 0's scores moves the other folds' thresholds, never its own
    shifted = cp.Oof(o.keys, o.y, np.where(o.fold == 0, o.s * 0.5, o.s), o.strata, o.fold)
    again = cp.nested(shifted)
    assert again["thresholds"][0] == res["thresholds"][0]
    assert again["thresholds"][1:] != res["thresholds"][1:]


def test_it_reproduces_steth_ensembles_nested_figures_on_physionet(runs):
    _, recipe = runs
    (o,) = cp.load_oof(recipe / "oof.json").values()
    task = get_task("screening")
    recs = [
        ds.Recording(k.split("/")[0], k.split("/")[1], k.split("/")[2], Path("/nonexistent"), label)
        for k, label in zip(o.keys, ["abnormal" if v else "normal" for v in o.y], strict=True)
    ]
    recs = [
        r
        if r.dataset == ds.PHYSIONET
        else ds.Recording(r.dataset, r.subset, r.record_id, r.path, "present", group=r.record_id)
        for r in recs
    ]
    probs = np.stack([1 - o.s, o.s], 1)
    want = nested_cv(task, recs, o.y, probs, o.strata, o.fold)["means"]
    got = cp.nested(o, "all")["means"]
    for scope in cp.SCOPES:
        for f in cp.FIGURES:
            assert got[scope][f] == pytest.approx(want[f"physionet2016/{scope}"][f], abs=1e-12)


def test_the_ceiling_is_never_below_the_nested_figure(runs):
    plain, _ = runs
    for o in cp.load_oof(plain / "oof.json").values():
        res = cp.nested(o)
        for e in res["folds"]:
            assert e["ceiling_macc"] >= e["all"]["macc"]
        # and it is each fold's best: no threshold on a grid does better
        here = o.fold == 0
        grid = max(cp.binary_scores(o.y[here], o.s[here], t)["macc"] for t in np.linspace(0, 1, 1001))
        assert res["folds"][0]["ceiling_macc"] >= grid - 1e-12


def test_the_physionet_pool_ignores_the_other_sources(runs):
    _, recipe = runs
    (o,) = cp.load_oof(recipe / "oof.json").values()
    moved = cp.Oof(o.keys, o.y, np.where(o.physionet, o.s, 0.01), o.strata, o.fold)
    assert cp.nested(moved, "physionet")["thresholds"] == cp.nested(o, "physionet")["thresholds"]
    assert cp.nested(moved, "all")["thresholds"] != cp.nested(o, "all")["thresholds"]


def test_it_checks_the_development_recordings_and_says_the_folds_differ(runs):
    plain, recipe = runs
    res = cp.compare([plain], [recipe])
    check = res["dev_check"]["runs"]
    assert check[str(recipe)]["same_recordings"] and check[str(recipe)]["fold_agreement_with_reference"] == 1.0
    # relabelled folds are the same partition; a recording moved to another fold is not
    (o,) = cp.load_oof(recipe / "oof.json").values()
    _, folds = cp.physionet_dev_set(o)
    moved = dict(folds)
    first = next(iter(moved))
    moved[first] = (moved[first] + 1) % 5
    assert cp.fold_agreement(folds, moved) < 1.0
    assert res["seconds"] == {str(plain): 12.5, str(recipe): 99.0}


def test_it_prints_one_row_per_model_and_a_mean(runs, capsys, tmp_path):
    plain, recipe = runs
    assert cp.main(["--plain", str(plain), "--recipe", str(recipe), "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert "| plain lstm | plain | physionet |" in out
    assert "| **recipe average** | **mean of 1**" in out
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    # 2 plain archs + 3 recipe models x 2 threshold pools
    assert len(rows) == 8


def test_a_variant_run_is_named_by_its_settings_and_kept_apart(runs, tmp_path):
    plain, _ = runs
    variant = tmp_path / "variant"
    variant.mkdir()
    (variant / "oof.json").write_text((plain / "oof.json").read_text())
    config = {"features": {"cmvn": False}, "settings": {"seed": 3, "epochs": 16, "masking": 0.1}}
    (variant / "report.json").write_text(json.dumps({"seconds": 1.0, "config": config}))
    models = {r["model"] for r in cp.compare([plain, variant], [])["rows"]}
    assert models == {
        "plain lstm",
        "plain conv_lstm",
        "plain lstm [features.cmvn=False, masking=0.1]",
        "plain conv_lstm [features.cmvn=False, masking=0.1]",
    }


def test_database_auc_covers_physionet_databases_only(runs):
    _, recipe = runs
    (o,) = cp.load_oof(recipe / "oof.json").values()
    # training-a ranked perfectly, the others as they were
    a = o.strata == "training-a"
    perfect = cp.Oof(o.keys, o.y, np.where(a, o.y * 0.5 + 0.25, o.s), o.strata, o.fold)
    aucs = cp.database_auc(perfect)
    assert set(aucs) == {"training-a", "training-b", "training-e"}
    assert aucs["training-a"] == 1.0
    b = o.physionet & (o.strata == "training-b")
    assert aucs["training-b"] == cp.roc_auc(o.y[b], o.s[b])


def test_the_database_prior_comes_from_the_other_folds_only(runs):
    plain, _ = runs
    o = cp.load_oof(plain / "oof.json")["lstm"]
    here = o.fold == 2
    flipped = cp.Oof(o.keys, np.where(here, 1 - o.y, o.y), o.s, o.strata, o.fold)
    assert np.array_equal(cp.with_database_prior(o, 2), cp.with_database_prior(flipped, 2))
    assert not np.array_equal(cp.with_database_prior(o, 1), cp.with_database_prior(flipped, 1))


def test_the_prior_moves_the_odds_by_the_databases_prevalence(runs):
    plain, _ = runs
    o = cp.load_oof(plain / "oof.json")["lstm"]
    alone = cp.with_database_prior(o, 0, prior_only=True)
    both = cp.with_database_prior(o, 0)
    for db in ("training-a", "training-e"):
        m = o.strata == db
        train = m & (o.fold != 0)
        prevalence = (o.y[train].sum() + 1) / (train.sum() + 2)
        assert np.allclose(alone[m], prevalence)
        odds = both[m] / (1 - both[m])
        assert np.allclose(odds, o.s[m] / (1 - o.s[m]) * prevalence / (1 - prevalence))


def test_the_prior_table_has_a_row_for_the_prior_alone(runs, capsys):
    plain, recipe = runs
    assert cp.main(["--plain", str(plain), "--recipe", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "| database prior alone | 2 " in out
    assert "| recipe average x database prior | 1 " in out
