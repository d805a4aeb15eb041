"""`manage.py registerdevice <id> [--clinic SLUG] [--name TEXT]`: make a device known (provisioning)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.clinic.models import Clinic, Device


class Command(BaseCommand):
    help = "Register a device so ingest accepts its messages (idempotent: updates name and clinic)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id")
        parser.add_argument("--clinic", help="slug of the clinic it belongs to (created if new)")
        parser.add_argument("--clinic-name", help="name for a new clinic (default: the slug)")
        parser.add_argument("--name", default="", help="where it is, e.g. 'Ward 3 cart'")

    def handle(self, *args: Any, **opts: Any) -> None:
        clinic = None
        if opts["clinic"]:
            clinic, _ = Clinic.objects.get_or_create(
                slug=opts["clinic"], defaults={"name": opts["clinic_name"] or opts["clinic"]}
            )
        device = Device.objects.filter(device_id=opts["device_id"]).first() or Device(device_id=opts["device_id"])
        device.clinic = clinic or device.clinic
        device.name = opts["name"] or device.name
        device.auto_registered = False
        try:
            device.full_clean()
        except ValidationError as exc:
            raise CommandError(f"device {opts['device_id']!r}: {'; '.join(exc.messages)}") from exc
        device.save()
        self.stdout.write(f"registered {device.device_id} (clinic: {device.clinic or '-'})")
