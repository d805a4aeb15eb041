"""Fixtures shared by every test package: the bundled samples and the full data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "device" / "samples"


def _data_dir() -> Path | None:
    raw = os.environ.get("STETH_DATA_DIR")
    if raw and Path(raw).is_dir():
        return Path(raw)
    default = REPO.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def sample_labels() -> dict[str, str]:
    rows = (line.split(",") for line in (SAMPLES / "REFERENCE.csv").read_text().split())
    return {name: ("abnormal" if flag == "1" else "normal") for name, flag in rows}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The full data sets; tests that need them are skipped, with the reason, where they are absent."""
    found = _data_dir()
    if found is None:
        pytest.skip(
            "full heart-sound data sets not found: set STETH_DATA_DIR to the folder holding "
            "physionet2016/ and pascal2011/ (see README, 'Data')"
        )
    return found


@pytest.fixture
def mqtt_broker(tmp_path):
    """A fresh anonymous Mosquitto on a free loopback port; stopped after the test."""
    from tests.support.broker import Broker

    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()
