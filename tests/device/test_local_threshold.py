"""A decision threshold set on the kit's own recordings (device/core/local_threshold.py), through the real model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from device.core import contract
from device.core.errors import ModelError
from device.core.inference import load_model
from device.core.local_threshold import LocalThreshold, load, path_for
from device.edge.config import check_files, parse


def _local(clf, threshold: float, **changes) -> LocalThreshold:
    base = LocalThreshold(
        model_name=clf.info.name,
        model_version=clf.info.version,
        model_sha256=clf.info.sha256,
        threshold=threshold,
        model_threshold=clf.model_threshold,
        labelled={"normal": 25, "abnormal": 15},
        macc_model=0.55,
        macc_local_cv=0.66,
        set_at="2026-11-26T09:00:00Z",
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def plain():
    return load_model()


def test_a_folder_without_a_file_for_the_model_leaves_its_own_threshold(plain, tmp_path):
    clf = load_model(threshold_dir=tmp_path)
    assert clf.local is None and clf.threshold == plain.threshold


def test_a_threshold_folder_that_does_not_exist_is_an_error_not_the_models_threshold(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(threshold_dir=tmp_path / "tresholds")


def test_the_local_threshold_decides_and_every_result_says_so(plain, samples_dir, tmp_path):
    normal = plain.analyse_file(samples_dir / "a0405.flac")
    assert normal.score is not None and normal.decision is None
    # a threshold just below this recording's score turns the same recording abnormal
    _local(plain, normal.score * 0.9).write(tmp_path)
    clf = load_model(threshold_dir=tmp_path)
    local = clf.analyse_file(samples_dir / "a0405.flac")
    assert local.score == pytest.approx(normal.score)
    assert local.quality.ok and local.probabilities["abnormal"] > 0.5 and local.label == "abnormal"
    assert local.decision == {
        "source": "local",
        "threshold": pytest.approx(normal.score * 0.9),
        "model_threshold": plain.model_threshold,
        "labelled": {"normal": 25, "abnormal": 15},
        "set_at": "2026-11-26T09:00:00Z",
    }
    message = local.to_result_message("pi-test")
    assert contract.errors("result", message) == []
    assert message["decision"]["threshold"] == local.decision["threshold"]
    assert local.to_json("a0405.flac")["decision"] == local.decision
    # at the model's own threshold the message is what it always was: no decision field
    assert "decision" not in normal.to_result_message("pi-test")


def test_the_contract_refuses_a_malformed_decision(plain, samples_dir, tmp_path):
    _local(plain, 0.4).write(tmp_path)
    message = load_model(threshold_dir=tmp_path).analyse_file(samples_dir / "d0016.flac").to_result_message("pi-1")
    assert contract.errors("result", message) == []
    message["decision"]["threshold"] = 1.5
    assert contract.errors("result", message)
    message["decision"]["threshold"] = 0.4
    del message["decision"]["set_at"]
    assert contract.errors("result", message)


def test_a_threshold_set_for_another_model_stops_the_kit_with_what_to_do(plain, tmp_path):
    _local(plain, 0.4, model_sha256="0" * 64, model_version="0.1.0").write(tmp_path)
    with pytest.raises(ModelError) as caught:
        load_model(threshold_dir=tmp_path)
    assert "not for the installed model" in caught.value.message
    assert "steth calibrate" in caught.value.hint


@pytest.mark.parametrize(
    ("content", "says"),
    [("{not json", "cannot read it"), ('{"model_name": "screening"}', "incomplete"), ("[]", "incomplete")],
)
def test_a_damaged_threshold_file_is_a_clear_error(plain, tmp_path, content, says):
    path_for(tmp_path, plain.info.name).write_text(content)
    with pytest.raises(ModelError, match=says):
        load(tmp_path, plain.info.name, plain.info.sha256)


def test_a_threshold_outside_0_1_is_refused(plain, tmp_path):
    _local(plain, 1.2).write(tmp_path)
    with pytest.raises(ModelError, match="not between 0 and 1"):
        load(tmp_path, plain.info.name, plain.info.sha256)


def test_writing_replaces_the_file_whole(plain, tmp_path):
    first = _local(plain, 0.3).write(tmp_path)
    second = _local(plain, 0.35).write(tmp_path)
    assert first == second and json.loads(second.read_text())["threshold"] == 0.35
    assert [p.name for p in tmp_path.iterdir()] == [second.name]  # no temporary file left behind


def test_the_configuration_names_the_folder_and_checks_it_exists(tmp_path):
    config = parse(
        {
            "device_id": "pi-1",
            "broker": {"url": "mqtt://127.0.0.1:1883"},
            "models": {"threshold_dir": str(tmp_path / "none")},
        }
    )
    assert config.models.threshold_dir == Path(tmp_path / "none")
    assert any("models.threshold_dir" in p and "does not exist" in p for p in check_files(config))


def test_validate_config_finds_a_threshold_the_device_would_refuse(plain, tmp_path):
    config = parse(
        {"device_id": "pi-1", "broker": {"url": "mqtt://127.0.0.1:1883"}, "models": {"threshold_dir": str(tmp_path)}}
    )
    assert [p for p in check_files(config) if "threshold" in p] == []  # no file: the model's own threshold
    _local(plain, 0.4).write(tmp_path)
    assert [p for p in check_files(config) if "threshold" in p] == []
    _local(plain, 0.4, model_sha256="f" * 64).write(tmp_path)
    found = [p for p in check_files(config) if "threshold" in p]
    assert len(found) == 1 and "not for the installed model" in found[0] and "steth calibrate" in found[0]


@pytest.mark.slow
def test_the_device_service_refuses_to_start_with_a_threshold_for_another_model(plain, samples_dir, tmp_path):
    import subprocess
    import sys

    from tests.device.daemon_support import REPO, write_config

    thresholds = tmp_path / "thresholds"
    _local(plain, 0.4, model_sha256="e" * 64, model_version="0.2.0").write(thresholds)
    audio = f'source = "replay"\nreplay_path = "{samples_dir}"\nreplay_realtime = false\n'
    models = f'[models]\nrun = ["screening"]\nthreshold_dir = "{thresholds}"\n'
    config = write_config(tmp_path, "mqtt://127.0.0.1:9", mode="replay", audio=audio, extra=models)
    proc = subprocess.run(
        [sys.executable, "-m", "device", "device", "run", "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "set for screening 0.2.0" in proc.stderr and "not for the installed model" in proc.stderr
    assert "steth calibrate" in proc.stderr
