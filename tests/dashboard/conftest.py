"""Dashboard tests: Django configured here (only when these tests are collected), real objects as fixtures."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.dashboard.settings")

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.test import Client  # noqa: E402

from dashboard.clinic.models import Clinic, Device, Profile  # noqa: E402
from dashboard.ingest.handlers import Ingestor  # noqa: E402
from device.core import contract  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "device" / "samples"
ARTIFACTS = REPO / "artifacts" / "screenshots"
PASSWORD = "a-long-test-password-1"
INGESTOR_ID = "test-worker"  # the client id the ``ingestor`` fixture stores results under


def make_user(username: str, *roles: str, clinic: Clinic | None = None) -> User:
    user = User.objects.create_user(username, password=PASSWORD)
    # get_or_create: a transactional test's flush also empties the groups the migration made
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    if "admin" in roles:
        user.is_staff = user.is_superuser = True
        user.save()
    Profile.objects.create(user=user, clinic=clinic)
    return user


def result_message(device_id: str = "clinic-a-pi-01", **changes: Any) -> dict[str, Any]:
    """A valid result (contract v1) with a fresh id; keyword arguments replace fields."""
    msg = copy.deepcopy(contract.EXAMPLE_RESULT)
    msg.update(
        result_id=str(uuid.uuid4()),
        device_id=device_id,
        recorded_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )
    msg.update(changes)
    contract.validate("result", msg)
    return msg


@pytest.fixture
def ingestor(settings: Any, tmp_path: Path) -> Ingestor:
    """The ingest worker's message handling, without the broker; audio stored under ``tmp_path``."""
    settings.MEDIA_ROOT = tmp_path
    return Ingestor(client_id=INGESTOR_ID, auto_register=False, max_audio_bytes=contract.MAX_AUDIO_BYTES)


@pytest.fixture
def clinic_a(db: Any) -> Clinic:
    return Clinic.objects.create(slug="clinic-a", name="Clinic A")


@pytest.fixture
def clinic_b(db: Any) -> Clinic:
    return Clinic.objects.create(slug="clinic-b", name="Clinic B")


@pytest.fixture
def device_a(clinic_a: Clinic) -> Device:
    return Device.objects.create(device_id="clinic-a-pi-01", clinic=clinic_a, name="Ward 3 cart")


@pytest.fixture
def device_b(clinic_b: Clinic) -> Device:
    return Device.objects.create(device_id="clinic-b-pi-01", clinic=clinic_b)


@pytest.fixture
def physician(db: Any) -> User:
    return make_user("dr-house", "physician")


@pytest.fixture
def nurse_a(clinic_a: Clinic) -> User:
    return make_user("nurse-a", "nurse", clinic=clinic_a)


@pytest.fixture
def nurse_b(clinic_b: Clinic) -> User:
    return make_user("nurse-b", "nurse", clinic=clinic_b)


@pytest.fixture
def admin_user(db: Any) -> User:
    return make_user("admin", "admin")


@pytest.fixture
def login() -> Callable[[User], Client]:
    def _login(user: User) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return _login


@pytest.fixture(scope="session")
def sample_flac() -> bytes:
    return (SAMPLES / "a0405.flac").read_bytes()


@pytest.fixture
def screenshots() -> Iterator[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield ARTIFACTS


def _model_available() -> bool:
    # STETH_UPLOAD_MODEL may name a .tflite (with its .json) instead of a shipped model
    chosen = os.environ.get("STETH_UPLOAD_MODEL", "")
    if chosen.endswith(".tflite"):
        return Path(chosen).exists()
    return any((REPO / "device" / "models").glob("*.tflite"))


needs_model = pytest.mark.skipif(
    not _model_available(),
    reason="no shipped model in device/models yet (the integrator's converter run puts it there)",
)


@pytest.fixture
def make_result(settings: Any, tmp_path: Path) -> Callable[..., Any]:
    """Store a result as ingest would (with its recording when ``audio`` is given)."""
    from dashboard.clinic.recordings import save_recording
    from dashboard.clinic.records import store_result

    settings.MEDIA_ROOT = tmp_path / "media"

    def _make(device: Device, audio: bytes | None = None, **changes: Any) -> Any:
        msg = result_message(device.device_id, **changes)
        result = store_result(msg, device=device, clinic=device.clinic).result
        if audio is not None:
            save_recording(result.result_id, audio, fmt="flac", device_id=device.device_id)
        return result

    return _make
