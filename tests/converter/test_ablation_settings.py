"""`steth ablate --set`: which settings can vary, how they reach a run, how variants are told apart."""

from __future__ import annotations

import json

import pytest

from converter import ablation
from converter.tasks import TASKS
from converter.train import RunConfig
from device.core.errors import ConfigError


def test_overrides_reach_the_run_training_and_feature_settings():
    o = ablation.parse_overrides(["augment_copies=2", "learning_rate=0.001", "features.kind=logmel"])
    assert o == {"augment_copies": 2, "learning_rate": 0.001, "features.kind": "logmel"}
    cfg = ablation.configure(RunConfig(), 0.3, o)
    assert cfg.augment_copies == 2
    assert cfg.settings.learning_rate == 0.001 and cfg.settings.domain_adversarial == 0.3
    assert cfg.settings.seed == ablation.SPLIT_SEED
    params = cfg.params(TASKS["screening"])
    assert params.kind == "logmel" and params.n_mels == TASKS["screening"].params.n_mels
    assert ablation.result_name(0.3, 1, o) == "da0.3-augment_copies2-features.kindlogmel-learning_rate0.001-seed1.json"
    # a FeatureParams flag that also takes a word: the word is validated by FeatureParams itself
    assert ablation.parse_overrides(["features.cmvn=mean", "features.cmvn=0"]) == {"features.cmvn": False}
    assert ablation.parse_overrides(["features.cmvn=mean"]) == {"features.cmvn": "mean"}
    assert ablation.result_name(0.3, 1) == "da0.3-seed1.json"  # the names results had before --set


def test_steth_train_takes_the_same_settings_and_keeps_its_own_seed_and_database_head():
    from converter.trainer import TrainSettings

    cfg = RunConfig(settings=TrainSettings(seed=7, domain_adversarial=0.3))
    o = ablation.parse_overrides(["features.cmvn=recording-mean", "database_scale=training-e=0.5"])
    trained = ablation.with_overrides(cfg, o)
    assert trained.features == {"cmvn": "recording-mean"}
    assert trained.settings.database_scale == "training-e=0.5"
    assert (trained.settings.seed, trained.settings.domain_adversarial) == (7, 0.3)


def test_steth_train_refuses_a_mistyped_setting_before_training(capsys):
    from device.cli import main

    assert main(["train", "--set", "features.cmvm=mean"]) == 2
    assert "--set 'features.cmvm=mean': not a setting that can be varied" in capsys.readouterr().err


@pytest.mark.parametrize(
    "item",
    [
        "nope=1",
        "seed=3",
        "test_fraction=0.3",  # would move held-out recordings into development data
        "augment_copies",
        "epochs=x",
        "features.kind=wav",
        "features.cmvn=maybe",
        "features.n_mfcc=0",
    ],
)
def test_a_bad_setting_is_refused_before_any_training(item):
    with pytest.raises(ConfigError, match="--set"):
        ablation.parse_overrides([item])


def test_the_summary_keeps_variants_apart_and_reads_results_from_before_set(tmp_path):
    def result(value: float, seed: int, overrides: dict, lodo: float) -> dict:
        r = {"domain_adversarial": value, "seed": seed, "arch": "conv_lstm", "lodo_macc": {"training-a": lodo}}
        r.update({"cv_all_macc": lodo, "lodo_mean_macc": lodo})
        if overrides:
            r.update(overrides=overrides, variant=ablation.variant_name(value, overrides))
        return r

    runs = [
        (0.3, 0, {}, 0.6),
        (0.3, 1, {}, 0.5),
        (0.3, 0, {"augment_copies": 2}, 0.7),
        (0.3, 1, {"augment_copies": 2}, 0.8),
    ]
    for value, seed, o, lodo in runs:
        (tmp_path / ablation.result_name(value, seed, o)).write_text(json.dumps(result(value, seed, o, lodo)))
    summary = ablation.summarise(tmp_path)
    rows = {v["variant"]: v for v in summary["variants"]}
    assert list(rows) == ["da0.3", "da0.3-augment_copies2"]
    assert rows["da0.3"]["lodo_mean_macc"]["mean"] == pytest.approx(0.55)
    assert rows["da0.3-augment_copies2"]["lodo_mean_macc"]["mean"] == pytest.approx(0.75)
    lines = ablation.table(summary)
    assert any(line.startswith("| 0.3, augment_copies 2 | 2 |") for line in lines), lines
