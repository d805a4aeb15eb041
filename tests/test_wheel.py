"""The installed package is the product: the wheel holds device, converter and dashboard with the shipped
models, schemas and task definitions, and nothing of research/, tests/ or the experiments' results."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a checkout holds that is not part of the source of the package (and is large or volatile)
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "dist", "artifacts", "var", "__pycache__", "*.egg-info", ".*_cache"
)
PRODUCT = {"device", "converter", "dashboard"}


def _setuptools_recent() -> bool:
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 77  # the build-system requirement


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    src = tmp_path_factory.mktemp("src") / "stethoscope-edge"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    if _setuptools_recent():
        cmd.insert(5, "--no-build-isolation")  # offline when the environment already has the backend
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    if proc.returncode != 0 and "No matching distribution found for setuptools" in proc.stdout + proc.stderr:
        pytest.skip("setuptools>=77 (the build backend) is neither installed nor reachable: " + proc.stderr[-300:])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (built,) = out.glob("stethoscope_edge-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_only_the_product_and_its_data(wheel):
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == PRODUCT, sorted(tops)
    assert not [n for n in names if "/tests/" in n or n.startswith(("research/", "tests/"))]
    # training artefacts never ship; the segmenter's weights (device/models/segmenter.npz) are a shipped model
    shipped_weights = {"device/models/segmenter.npz"}
    assert not [
        n for n in names if "ablations" in n or (n.endswith((".h5", ".npz", ".npy")) and n not in shipped_weights)
    ]
    # experiment modules moved out of converter/
    assert "converter/database_transfer.py" not in names and "converter/local_calibration.py" not in names


def test_the_wheel_ships_the_models_schemas_and_task_definitions(wheel):
    names = set(wheel.namelist())
    for model in ("screening", "sound_type"):
        assert {f"device/models/{model}.tflite", f"device/models/{model}.json"} <= names
        assert f"converter/task_definitions/{model}.toml" in names
    assert {"device/models/segmenter.npz", "device/models/segmenter.json"} <= names
    assert {"device/core/schemas/result.v1.json", "device/core/schemas/result.v2.json"} <= names
    assert "device/core/schemas/status.v1.json" in names and "device/core/schemas/ack.v1.json" in names
    assert "device/samples/a0405.flac" not in names  # the demo's recordings stay in the checkout


def test_the_wheel_declares_the_commands_of_each_package(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[steth.commands]" in text
    assert "train = converter.train:register [train]" in text
    assert "dashboard = dashboard.cli:register [dashboard]" in text
    assert "steth = device.cli:main" in text


def test_the_version_has_one_source(wheel):
    import device

    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    assert f"Version: {device.__version__}\n" in wheel.read(metadata).decode()
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("[")[0]
