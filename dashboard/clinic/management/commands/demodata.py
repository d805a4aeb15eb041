"""`manage.py demodata`: clinics, devices, users and realistic results from real recordings.

Each recording (the bundled device/samples, and some of STETH_DATA_DIR when set) is classified with
the shipped model through device.core.inference, exactly as on a device, and stored with its audio. Result
ids derive from the file, so running it again changes nothing. Needs the shipped model.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from dashboard.clinic import exams
from dashboard.clinic.models import LOCATIONS, Clinic, Device, Profile, Result
from dashboard.clinic.recordings import save_recording
from dashboard.clinic.records import store_result
from dashboard.clinic.uploads import classifier
from device import __version__
from device.core.audio_io import encode_flac, read_audio
from device.core.errors import AudioError, StethError
from device.core.messages import result_message

SAMPLES = Path(__file__).resolve().parents[4] / "device" / "samples"
NAMESPACE = uuid.UUID("6f1c3a52-6c1e-4d8e-9a57-1d1f0b2f6e10")
CLINICS = {"north-clinic": "North Clinic", "river-clinic": "River Clinic"}
DEVICES = {"north-pi-01": "north-clinic", "north-pi-02": "north-clinic", "river-pi-01": "river-clinic"}
USERS = {  # username: (roles, clinic)
    "nurse-north": (("nurse",), "north-clinic"),
    "nurse-river": (("nurse",), "river-clinic"),
    "physician": (("physician",), None),
    "admin": (("admin",), None),
}


class Command(BaseCommand):
    help = "Fill the database with demo clinics, devices, users and results classified from real recordings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data-dir", help="also use recordings from here (default: $STETH_DATA_DIR)")
        parser.add_argument("--limit", type=int, default=24, help="recordings taken from the data folder")
        parser.add_argument("--password-file", help="password for the demo users (default: a random one, printed)")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            clf = classifier(settings.STETH_UPLOAD_MODEL)
        except StethError as exc:
            raise CommandError(f"demo data needs the shipped model: {exc}") from exc
        files = sorted(SAMPLES.glob("*.flac"))
        data_dir = opts["data_dir"] or os.environ.get("STETH_DATA_DIR")
        if data_dir:
            found = sorted(p for p in Path(data_dir).rglob("*") if p.suffix.lower() in (".wav", ".flac"))
            step = max(1, len(found) // max(opts["limit"], 1))
            files += found[::step][: opts["limit"]]
        password = (
            Path(opts["password_file"]).read_text().strip() if opts["password_file"] else secrets.token_urlsafe(12)
        )
        with transaction.atomic():
            clinics = {
                slug: Clinic.objects.get_or_create(slug=slug, defaults={"name": name})[0]
                for slug, name in CLINICS.items()
            }
            devices = self._devices(clinics, clf)
            physician = self._users(clinics, password)
        rng = random.Random(7)
        made = 0
        for i, path in enumerate(files):
            device = devices[list(DEVICES)[i % len(DEVICES)]]
            try:
                made += self._result(path, device, clf, physician, rng, i)
            except AudioError as exc:
                self.stderr.write(f"skipped {path.name}: {exc}")
        self.stdout.write(
            f"demo data: {made} new results from {len(files)} recordings ({Result.objects.count()} in all)"
        )
        if not opts["password_file"]:
            self.stdout.write(f"demo users {', '.join(USERS)} with password: {password}")

    def _devices(self, clinics: dict[str, Clinic], clf: Any) -> dict[str, Device]:
        out = {}
        now = timezone.now()
        for n, (device_id, clinic) in enumerate(DEVICES.items()):
            device, _ = Device.objects.get_or_create(
                device_id=device_id, defaults={"clinic": clinics[clinic], "name": f"Ward {n + 1} cart"}
            )
            state = "offline" if n == len(DEVICES) - 1 else "online"
            status = {
                "schema_version": 1,
                "device_id": device_id,
                "state": state,
                "software_version": __version__,
                "models": [{"name": clf.info.name, "version": clf.info.version, "sha256": clf.info.sha256}],
                "at": (now - timedelta(minutes=30 * n)).isoformat(),
            }
            device.apply_status(status, now - timedelta(minutes=30 * n))
            out[device_id] = device
        return out

    def _users(self, clinics: dict[str, Clinic], password: str) -> User:
        for username, (roles, clinic) in USERS.items():
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_staff = user.is_superuser = "admin" in roles
            user.save()
            user.groups.set(Group.objects.filter(name__in=roles))
            Profile.objects.update_or_create(user=user, defaults={"clinic": clinics[clinic] if clinic else None})
        return User.objects.get(username="physician")

    def _result(self, path: Path, device: Device, clf: Any, physician: User, rng: random.Random, i: int) -> int:
        result_id = uuid.uuid5(NAMESPACE, path.name)
        if Result.objects.filter(pk=result_id).exists():
            return 0
        audio = read_audio(path)
        analysis = clf.analyse(audio)
        flac = path.read_bytes() if path.suffix.lower() == ".flac" else encode_flac(audio.samples, audio.sample_rate)
        recorded = timezone.now() - timedelta(hours=rng.uniform(0.2, 24 * 7))
        message = result_message(
            analysis,
            device.device_id,
            result_id=str(result_id),
            recorded_at=recorded,
            patient_ref=f"P-{1000 + i // 2:06d}",  # two recordings per patient: a short history
            site=rng.choice(LOCATIONS),
            audio={"format": "flac", "sha256": hashlib.sha256(flac).hexdigest(), "bytes": len(flac)},
            software_version=__version__,
        )
        with transaction.atomic():
            stored = store_result(message, device=device, clinic=device.clinic, ingested_by="demodata")
            Result.objects.filter(pk=result_id).update(received_at=recorded + timedelta(seconds=rng.uniform(1, 90)))
            exams.refresh([stored.result.exam_id])  # the exam's times follow the back-dated result
            save_recording(result_id, flac, fmt="flac", device_id=device.device_id)
            if analysis.label == "abnormal" and i % 3 == 0:
                note = "Systolic murmur on listening; refer to cardiology."
                stored.result.add_review(physician, agrees=True, label="abnormal", note=note)
        return 1
