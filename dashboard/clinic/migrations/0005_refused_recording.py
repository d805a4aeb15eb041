# ruff: noqa: RUF012 - migrations use Django's list attributes
"""RefusedRecording: recordings a device could not analyse, reported through the contract (refused.v1)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("clinic", "0004_exams"),
    ]

    operations = [
        migrations.CreateModel(
            name="RefusedRecording",
            fields=[
                ("refusal_id", models.UUIDField(primary_key=True, serialize=False)),
                ("refused_at", models.DateTimeField(help_text="the device's clock when it refused the recording")),
                ("received_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                (
                    "source",
                    models.CharField(
                        help_text="replay (a file), capture (continuous input), record (bedside)", max_length=8
                    ),
                ),
                ("recording", models.CharField(blank=True, max_length=256)),
                ("reason", models.CharField(db_index=True, max_length=32)),
                ("detail", models.TextField(blank=True)),
                ("patient_ref", models.CharField(blank=True, max_length=64)),
                ("location", models.CharField(blank=True, max_length=16)),
                ("exam_id", models.CharField(blank=True, max_length=64)),
                ("duration_s", models.FloatField(blank=True, null=True)),
                ("message", models.JSONField(help_text="the message as received")),
                ("ingested_by", models.CharField(blank=True, max_length=64)),
                (
                    "clinic",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="refusals",
                        to="clinic.clinic",
                    ),
                ),
                (
                    "device",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="refusals", to="clinic.device"
                    ),
                ),
            ],
            options={
                "ordering": ("-received_at",),
                "indexes": [models.Index(fields=["device", "received_at"], name="clinic_refu_device__e52c94_idx")],
            },
        ),
    ]
