from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from dashboard.clinic.models import Device, Recording, Result
from tests.dashboard.conftest import needs_model

pytestmark = pytest.mark.django_db


def test_it_says_clearly_when_the_model_is_missing(settings):
    settings.STETH_UPLOAD_MODEL = "no-such-model"
    with pytest.raises(CommandError, match="demo data needs the shipped model"):
        call_command("demodata")


@needs_model
@pytest.mark.slow
def test_it_fills_the_database_from_the_bundled_recordings_once(settings, tmp_path, monkeypatch, samples_dir):
    settings.MEDIA_ROOT = tmp_path
    monkeypatch.delenv("STETH_DATA_DIR", raising=False)
    password = tmp_path / "password"
    password.write_text("demo-password-for-tests\n")
    call_command("demodata", "--password-file", str(password))
    n = len(list(samples_dir.glob("*.flac")))
    assert Result.objects.count() == n and Recording.objects.count() == n and Device.objects.count() == 3
    assert set(Result.objects.values_list("label", flat=True)) <= {"normal", "abnormal", "unsure"}
    assert User.objects.get(username="nurse-north").check_password("demo-password-for-tests")
    assert Device.objects.filter(state="online").count() == 2
    call_command("demodata", "--password-file", str(password))
    assert Result.objects.count() == n
