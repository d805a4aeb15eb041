"""Tasks are data (converter/task_definitions/*.toml): what they hold, and how a broken one is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converter import datasets as ds
from converter.tasks import TASKS, Task, get_task, load_task, task_of_model, task_of_run
from device.core.errors import ConfigError
from device.core.inference import available_models, models_dir


def _rec(dataset: str, label: str | None) -> ds.Recording:
    return ds.Recording(dataset, "set_a", "x", Path("x.wav"), label)


def test_each_shipped_model_was_trained_with_its_tasks_features():
    for name in available_models():
        meta = json.loads((models_dir() / f"{name}.json").read_text())
        task = task_of_model(meta)
        assert task.params.fingerprint() == meta["feature_params_fingerprint"]
        assert list(task.labels) == meta["labels"] and task.positive == meta["positive_label"]
        assert list(task.unsure_labels) == meta.get("unsure_labels", [])


def test_a_task_maps_each_data_sets_labels_and_leaves_out_the_rest():
    screening, sound = TASKS["screening"], TASKS["sound_type"]
    assert screening.label_of(_rec(ds.PASCAL, "extrastole")) == "abnormal"
    assert screening.label_of(_rec(ds.PASCAL, "artifact")) is None
    assert sound.label_of(_rec(ds.PASCAL, "extrahls")) == "extra"
    assert sound.label_of(_rec(ds.PHYSIONET, "abnormal")) is None
    kept = screening.relabel([_rec(ds.PASCAL, "murmur"), _rec(ds.PASCAL, "artifact"), _rec(ds.PASCAL, None)])
    assert [r.label for r in kept] == ["abnormal"]


def test_a_definition_round_trips_through_a_run_report():
    for task in TASKS.values():
        assert Task.from_dict(task.to_dict()) == task
        assert task_of_run({"task": task.name, "task_definition": task.to_dict()}) == task
        assert task_of_run({"task": task.name}) == task  # runs made before definitions were carried


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"positive": "maybe"}, "positive label 'maybe' is not a label"),
        ({"train_on": ["circor"]}, "unknown data set 'circor'"),
        ({"label_map": {"pascal2011": {"normal": "fine"}}}, "maps to 'fine', not a label"),
        ({"features": {"window_seconds": 2}}, "unknown FeatureParams keys"),
    ],
)
def test_a_broken_definition_is_refused_with_what_is_wrong(tmp_path, change, says):
    data = {**TASKS["sound_type"].to_dict(), "name": "broken", **change}
    with pytest.raises(ConfigError, match=says):
        Task.from_dict(data)


def test_a_task_is_named_or_given_as_a_file(tmp_path):
    assert get_task("screening") is TASKS["screening"]
    path = tmp_path / "t.toml"
    path.write_text(
        'name = "t"\nlabels = ["a", "b"]\ntrain_on = ["pascal2011"]\n[label_map.pascal2011]\nnormal = "a"\n'
    )
    assert load_task(path).labels == ("a", "b") and get_task(str(path)).name == "t"
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_task("nope")
    path.write_text("name = ")
    with pytest.raises(ConfigError, match="not a readable task definition"):
        get_task(str(path))
