"""Training, conversion and parity on a tiny real slice (the bundled recordings), in seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converter import convert as conv
from converter import models
from converter.tasks import TASKS
from converter.train import RunConfig, run
from converter.trainer import TrainSettings
from device.core.inference import Classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, samples_dir) -> Path:
    """The six bundled PhysioNet recordings laid out as two databases, with a few WAV copies."""
    root = tmp_path_factory.mktemp("data") / "physionet2016"
    refs = dict(line.split(",") for line in (samples_dir / "REFERENCE.csv").read_text().split())
    for db in ("training-a", "training-d", "training-e"):
        folder = root / db
        folder.mkdir(parents=True)
        rows = []
        for stem, flag in refs.items():
            if stem[0] == db[-1]:
                shutil.copy(samples_dir / f"{stem}.flac", folder)
                rows.append(f"{stem},{flag}")
        (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    return root.parent


PHYSIONET_ONLY = """# the screening recipe on PhysioNet alone: the tiny slice holds no CirCor or PASCAL
name = "screening"
labels = ["normal", "abnormal"]
positive = "abnormal"
train_on = ["physionet2016"]
domain_adversarial = 0.3
[features]
{features}
[label_map.physionet2016]
normal = "normal"
abnormal = "abnormal"
"""


@pytest.fixture(scope="module")
def physionet_task(tiny_data) -> str:
    features = TASKS["screening"].to_dict()["features"]
    path = tiny_data / "screening-physionet.toml"
    path.write_text(PHYSIONET_ONLY.format(features="\n".join(f"{k} = {json.dumps(v)}" for k, v in features.items())))
    return str(path)


@pytest.fixture(scope="module")
def tiny_run(tiny_data, physionet_task, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(
        task=physionet_task,
        archs=("lstm", "conv_lstm"),
        folds=2,
        test_fraction=0.5,
        augment_copies=1,
        lodo=True,
        jobs=2,  # the command's default: trainings in two worker processes
        # the shipped screening setting: a database head behind gradient reversal, dropped on saving
        settings=TrainSettings(epochs=2, windows_per_epoch=64, batch_size=16, domain_adversarial=0.3),
    )
    run(tiny_data, out, cfg)
    return out


def test_training_writes_a_complete_run(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["chosen_arch"] in ("lstm", "conv_lstm")
    assert {c["arch"] for c in report["cv"]} == {"lstm", "conv_lstm"}
    assert sorted(c["fold"] for c in report["cv"] if c["arch"] == "lstm") == [0, 1]
    assert {r["held_out_db"] for r in report["lodo"]} <= {"training-a", "training-d", "training-e"}
    # a routine run (no --score-test) leaves the held-out split unseen and says so (issue 23)
    assert report["test"] is None and report["n_test"] > 0
    assert report["test_split"]["scored"] is False and "--score-test" in report["test_split"]["why"]
    assert (tiny_run / "boxplot.png").stat().st_size > 10_000
    assert (tiny_run / "model.h5").exists()
    saved = models.keras().models.load_model(tiny_run / "model.h5", compile=False)
    assert [o.name.split("/")[0] for o in saved.outputs] == ["probabilities"], "the database head must not ship"
    assert report["config"]["settings"]["domain_adversarial"] == 0.3
    split = json.loads((tiny_run / "split.json").read_text())
    assert not set(split["dev"]) & set(split["test"])
    folds_csv = (tiny_run / "folds.csv").read_text().splitlines()
    assert folds_csv[0].startswith("arch,fold,scope") and len(folds_csv) > 4
    choice = report["threshold_choice"]
    assert report["threshold"] in (choice["validation_threshold"], choice["pooled_threshold"])
    assert len(choice["transfer_check"]["per_fold"]) == 2
    oof = json.loads((tiny_run / "oof.json").read_text())
    assert oof["records"] == split["dev"] and set(oof["probabilities"]) == {"lstm", "conv_lstm"}
    # every development recording scored once, out of fold: probabilities that sum to one
    assert all(abs(sum(p) - 1) < 1e-3 for p in oof["probabilities"]["lstm"])


def test_with_score_test_the_final_model_is_scored_on_the_held_out_split(tiny_data, physionet_task, tmp_path):
    cfg = RunConfig(
        task=physionet_task,
        archs=("lstm",),
        folds=2,
        test_fraction=0.5,
        lodo=False,
        jobs=1,
        score_test=True,
        settings=TrainSettings(epochs=1, windows_per_epoch=32, batch_size=16),
    )
    report = run(tiny_data, tmp_path, cfg)
    assert report["test_split"]["scored"] is True
    for key in ("sensitivity", "specificity", "macc", "accuracy", "auc"):
        assert key in report["test"]["all"]
    assert json.loads((tmp_path / "report.json").read_text())["test"]["all"]["n"] > 0


def test_conversion_gives_an_int8_model_close_to_the_float_one(tiny_run, tiny_data, tmp_path):
    try:
        meta = conv.convert(tiny_run, tiny_data, "tiny", "0.0.1", tmp_path)
    except conv.ParityError as exc:
        # A model trained for seconds sits near its threshold, so a single flip can fail the 99% rule;
        # the check must then refuse loudly and write nothing, which is what we assert instead.
        assert "int8 model refused" in str(exc)
        assert not (tmp_path / "tiny.tflite").exists()
        return
    tflite = tmp_path / "tiny.tflite"
    assert tflite.exists() and meta["sha256"] == conv.sha256_file(tflite)
    assert meta["parity"]["max_probability_difference"] < 0.1
    clf = Classifier(tflite, json.loads((tmp_path / "tiny.json").read_text()))
    assert clf._in["dtype"] == np.int8
    # Tensor names were stripped (a third of an unrolled model's file); the device needs none.
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model(str(tflite)).subgraphs[0]
    assert len(graph.tensors) > 50 and not any(t.name for t in graph.tensors)


def test_the_parity_check_refuses_a_model_that_disagrees(tiny_run, tiny_data, tmp_path, monkeypatch):
    # An int8 model that says the opposite of the float one must never be shipped.
    real = Classifier.predict_windows
    monkeypatch.setattr(Classifier, "predict_windows", lambda self, f: 1 - real(self, f))
    with pytest.raises(conv.ParityError, match="agree on"):
        conv.convert(tiny_run, tiny_data, "flipped", "0.0.1", tmp_path)
    assert not (tmp_path / "flipped.tflite").exists()


def test_conversion_ships_the_feature_settings_the_run_was_trained_with(tiny_run, tiny_data, tmp_path):
    # `steth train --set features.cmvn=recording-mean` trains with other settings than the task's
    # defaults; the sidecar must carry the run's, or the device would compute features the model never saw.
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    report = json.loads((run / "report.json").read_text())
    assert report["feature_params"]["cmvn"] != "recording-mean"  # the task's default is another mode
    report["feature_params"]["cmvn"] = "recording-mean"  # same input shape, other features
    (run / "report.json").write_text(json.dumps(report))
    # a model trained for seconds may miss the parity rule; allow_shortfall writes it even so
    conv.convert(run, tiny_data, "tiny", "0.0.1", tmp_path / "out", allow_shortfall=True)
    meta = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert meta["feature_params"]["cmvn"] == "recording-mean"
    clf = Classifier(tmp_path / "out" / "tiny.tflite", meta)
    assert clf.params.cmvn == "recording-mean"

    del report["feature_params"]
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(conv.ModelError, match="names no FeatureParams"):
        conv.convert(run, tiny_data, "tiny2", "0.0.1", tmp_path / "out")


def test_gradient_reversal_is_identity_forward_and_negated_backward():
    import tensorflow as tf

    layer = models.GradientReversal(0.3)
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.3, -0.6, -0.9]], rtol=1e-6)


def test_the_label_branch_has_the_plain_models_weights_so_conversion_can_copy_them():
    two_headed = models.build("conv_lstm", (201, 16), 2, domains=5)
    assert [o.shape[-1] for o in two_headed.outputs] == [2, 5]
    branch = models.label_branch(two_headed)
    plain = models.build("conv_lstm", (201, 16), 2, batch_size=1, unroll=True)
    assert [w.shape for w in branch.get_weights()] == [w.shape for w in plain.get_weights()]
    plain.set_weights(branch.get_weights())
    x = np.random.default_rng(0).standard_normal((1, 201, 16)).astype(np.float32)
    np.testing.assert_allclose(plain(x).numpy(), branch(x).numpy(), atol=1e-5)


def test_the_database_head_can_read_the_convolutional_features_and_the_label_branch_stays_the_same():
    import tensorflow as tf

    two_headed = models.build("conv_lstm", (201, 16), 2, domains=5, domain_from="conv")
    head = two_headed.get_layer("domain_hidden")
    assert head.input.shape[-1] == 32  # the conv front end's channels, not the LSTM's 48 units
    x = tf.constant(np.random.default_rng(1).standard_normal((4, 201, 16)).astype(np.float32))
    with tf.GradientTape() as tape:
        _, domain = two_headed(x)
        loss = tf.reduce_sum(domain)
    weights = two_headed.trainable_weights
    grads = dict(zip([w.name for w in weights], tape.gradient(loss, weights), strict=True))
    rnn = [g for name, g in grads.items() if name.startswith("rnn")]
    assert rnn and all(g is None for g in rnn)  # the LSTM is not on the head's path
    assert any(g is not None for name, g in grads.items() if name.startswith("conv1"))
    branch = models.label_branch(two_headed)
    plain = models.build("conv_lstm", (201, 16), 2)
    assert [w.shape for w in branch.get_weights()] == [w.shape for w in plain.get_weights()]
    with pytest.raises(ValueError, match="conv_lstm"):
        models.build("lstm", (201, 16), 2, domains=5, domain_from="conv")


def test_ablation_compares_settings_over_seeds_and_resumes(tiny_data, physionet_task, tmp_path, capsys):
    from device.cli import build_parser

    out = tmp_path / "ablation"
    argv = ["ablate", str(tiny_data), "--task", physionet_task, "--out", str(out), "--folds", "2", "--epochs", "1"]
    argv += ["--windows-per-epoch", "32", "--jobs", "1", "--seeds", "0,1", "--domain-adversarial", "0,0.3"]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert sorted(p.name for p in out.glob("da*.json")) == [
        "da0-seed0.json",
        "da0-seed1.json",
        "da0.3-seed0.json",
        "da0.3-seed1.json",
    ]
    first = json.loads((out / "da0.3-seed1.json").read_text())
    assert len(first["cv"]) == 2 and first["lodo_macc"], first
    # every left-out database's recording scores, for research.local_calibration
    for db, lodo in first["lodo_scores"].items():
        assert len(lodo["records"]) == len(lodo["labels"]) == len(lodo["scores"]) > 0, db
        assert all(r.split("/")[1] == db for r in lodo["records"]) and 0 <= lodo["threshold"] <= 1
    assert len(first["threshold_check"]["per_fold"]) == 2 and "cv_all_macc_pooled_threshold" in first
    # every development recording's out-of-fold score, once, from the fold that did not train on it
    cv = first["cv_scores"]
    n = len(cv["records"])
    assert n == len(set(cv["records"])) == len(cv["labels"]) == len(cv["folds"]) == len(cv["scores"]) > 0
    assert sorted(set(cv["folds"])) == [0, 1]
    assert all(0 <= s <= 1 for s in cv["scores"])
    assert all(r.split("/")[1] == d for r, d in zip(cv["records"], cv["databases"], strict=True))
    for f, fold in enumerate(first["cv"]):  # the fold's own metrics were computed on these scores
        assert sum(1 for k in cv["folds"] if k == f) == fold["all"]["n"]
    summary = json.loads((out / "summary.json").read_text())
    assert [v["domain_adversarial"] for v in summary["variants"]] == [0.0, 0.3]
    assert all(v["seeds"] == [0, 1] and "lodo_mean_macc" in v for v in summary["variants"])
    table = capsys.readouterr().out
    assert "| none | 2 |" in table and "| 0.3 | 2 |" in table
    # a rerun finds every result done and trains nothing
    stamp = (out / "da0-seed0.json").stat().st_mtime_ns
    assert args.func(args) == 0
    assert (out / "da0-seed0.json").stat().st_mtime_ns == stamp


def test_averaging_the_last_epochs_trains_a_working_model(monkeypatch):
    # synthetic windows: two databases, the label in the first coefficient's mean
    from converter import trainer
    from converter.featurestore import FeatureSet
    from converter.metrics import roc_auc

    added: list[list[np.ndarray]] = []  # what fit hands the average: a spy, the average itself is real
    real_add = trainer.WeightAverage.add

    def spy(self, weights):
        added.append([np.array(w) for w in weights])
        real_add(self, weights)

    monkeypatch.setattr(trainer.WeightAverage, "add", spy)
    rng = np.random.default_rng(0)
    n = 60
    y = (np.arange(n) // 2) % 2  # both labels among the even (training) and the odd (validation) records
    strata = np.array(["training-a"] * 30 + ["training-b"] * 30)
    feats = rng.normal(size=(n, 51, 16)).astype(np.float32)
    feats[:, :, 0] += 1.5 * y[:, None]
    fs = FeatureSet(feats, np.arange(n, dtype=np.int32), [], [])
    settings = TrainSettings(epochs=3, windows_per_epoch=256, batch_size=32, average_last=2, domain_adversarial=0.3)
    model, val_probs, history = trainer.fit(
        "conv_lstm", train_sets=[fs], eval_set=fs, y=y, strata=strata, fit_records=np.arange(0, n, 2),
        val_records=np.arange(1, n, 2), n_classes=2, settings=settings,
    )  # fmt: skip
    assert len(history) == 3 and len(added) == 2, "the last two of three epochs are averaged"
    assert not all(np.array_equal(a, b) for a, b in zip(*added, strict=True)), "two different epochs"
    for shipped, first, second in zip(model.get_weights(), *added, strict=True):
        np.testing.assert_allclose(shipped, (first + second) / 2, rtol=1e-6, atol=1e-7)
    assert val_probs.shape == (30, 2) and np.all(np.isfinite(val_probs))
    assert roc_auc(y[1::2], val_probs[:, 1]) > 0.8  # the averaged weights still learned the label


def test_an_ensemble_graph_averages_its_members_and_rebuilds_with_a_fixed_batch_for_conversion():
    members = [models.build("conv_lstm", (201, 16), 2) for _ in range(2)]
    avg = models.build_ensemble("conv_lstm", (201, 16), 2, 2)
    for i, m in enumerate(members):
        avg.get_layer(f"member{i}").set_weights(m.get_weights())
    x = np.random.default_rng(2).standard_normal((3, 201, 16)).astype(np.float32)
    want = np.mean([m(x).numpy() for m in members], axis=0)
    np.testing.assert_allclose(avg(x).numpy(), want, atol=1e-5)
    # the converter finds the members from the name alone and copies the weights into a fixed-batch graph
    assert models.parse_ensemble(avg.name) == ("conv_lstm", 2) and models.parse_ensemble("conv_lstm") is None
    fixed = models.build_ensemble("conv_lstm", (201, 16), 2, 2, batch_size=1, unroll=True)
    fixed.set_weights(avg.get_weights())
    np.testing.assert_allclose(fixed(x[:1]).numpy(), want[:1], atol=1e-5)


def test_a_clipped_cell_keeps_the_lstm_state_bounded_and_survives_saving_and_conversion_rebuild(tmp_path):
    plain = models.build("conv_lstm", (201, 16), 2)
    clipped = models.build("conv_lstm", (201, 16), 2, cell_clip=0.5)
    assert models.cell_clip_of(plain) == 0.0 and models.cell_clip_of(clipped) == 0.5
    assert [w.shape for w in clipped.get_weights()] == [w.shape for w in plain.get_weights()]
    clipped.set_weights([w * 20 for w in plain.get_weights()])  # large weights drive the state far out
    x = np.random.default_rng(3).standard_normal((2, 201, 16)).astype(np.float32)
    front = models.keras().Model(clipped.input, clipped.get_layer("pool").output)
    rnn = clipped.get_layer("rnn")
    _, _, c = models.keras().layers.RNN(rnn.cell, return_state=True)(front(x))
    assert float(np.abs(c.numpy()).max()) <= 0.5 + 1e-6
    clipped.save(tmp_path / "m.h5")
    loaded = models.keras().models.load_model(tmp_path / "m.h5", compile=False)
    assert models.cell_clip_of(loaded) == 0.5
    fixed = models.build(loaded.name, (201, 16), 2, batch_size=1, unroll=True, cell_clip=models.cell_clip_of(loaded))
    fixed.set_weights(loaded.get_weights())
    np.testing.assert_allclose(fixed(x[:1]).numpy(), clipped(x[:1]).numpy(), atol=1e-5)


def test_weight_decay_on_the_lstm_adds_a_training_loss_and_leaves_the_converted_graph_the_same():
    decayed = models.build("conv_lstm", (201, 16), 2, lstm_l2=1e-4)
    plain = models.build("conv_lstm", (201, 16), 2)
    assert len(decayed.losses) == 2 and len(plain.losses) == 0  # the input and recurrent kernels
    fixed = models.build("conv_lstm", (201, 16), 2, batch_size=1, unroll=True)
    fixed.set_weights(decayed.get_weights())
    x = np.random.default_rng(4).standard_normal((1, 201, 16)).astype(np.float32)
    np.testing.assert_allclose(fixed(x).numpy(), decayed(x).numpy(), atol=1e-5)
