# ruff: noqa: RUF012 - migrations use Django's list attributes
"""Exams (results grouped by device and exam_id; a result without one is an exam of its own), exam
reviews, and a clinic's time zone. Results stored before this migration each become an exam of one
recording, summarised as ingest would (the answer is the result's own)."""

from typing import Any

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import dashboard.clinic.models

PRIORITY = {"abnormal": 0, "normal": 1, "unsure": 2}


def exams_for_stored_results(apps: Any, schema_editor: Any) -> None:
    result_model = apps.get_model("clinic", "Result")
    exam_model = apps.get_model("clinic", "Exam")
    pending = result_model.objects.filter(exam__isnull=True).order_by("pk")
    while batch := list(pending.only("pk", "device", "clinic", "patient_ref", "recorded_at", "received_at",
                                     "label", "reviewed")[:2000]):  # fmt: skip
        made = exam_model.objects.bulk_create(
            [
                exam_model(
                    key=f"result/{r.pk}",
                    device_id=r.device_id,
                    clinic_id=r.clinic_id,
                    patient_ref=r.patient_ref,
                    started_at=r.recorded_at,
                    received_at=r.received_at,
                    n_results=1,
                    label=r.label,
                    answer={"label": r.label},
                    reason=f"{r.label}; 1 recording",
                    priority=PRIORITY.get(r.label, 0),
                    reviewed=r.reviewed,
                )
                for r in batch
            ]
        )
        if schema_editor.connection.vendor == "postgresql":  # one statement per batch, not one per result
            schema_editor.execute(
                "UPDATE clinic_result r SET exam_id = e.id FROM clinic_exam e "
                "WHERE e.key = 'result/' || r.result_id::text AND r.exam_id IS NULL AND e.key = ANY(%s)",
                [[e.key for e in made]],
            )
            continue
        exams = dict(exam_model.objects.filter(key__in=[e.key for e in made]).values_list("key", "pk"))
        for r in batch:
            result_model.objects.filter(pk=r.pk).update(exam_id=exams[f"result/{r.pk}"])


class Migration(migrations.Migration):
    dependencies = [
        ("clinic", "0003_result_reviewed"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="clinic",
            name="time_zone",
            field=models.CharField(
                blank=True,
                help_text="IANA name, e.g. Europe/Berlin; empty: the server's TIME_ZONE",
                max_length=64,
                validators=[dashboard.clinic.models.validate_time_zone],
            ),
        ),
        migrations.CreateModel(
            name="Exam",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(max_length=160, unique=True)),
                (
                    "exam_id",
                    models.CharField(
                        blank=True, help_text="the device's exam id (empty: one recording)", max_length=64
                    ),
                ),
                ("patient_ref", models.CharField(blank=True, max_length=64)),
                ("started_at", models.DateTimeField(blank=True, help_text="the first recording's time", null=True)),
                (
                    "received_at",
                    models.DateTimeField(default=django.utils.timezone.now, help_text="when its latest result arrived"),
                ),
                ("n_results", models.IntegerField(default=0)),
                (
                    "label",
                    models.CharField(blank=True, help_text="the exam's answer (device.core.exam)", max_length=32),
                ),
                ("murmur", models.CharField(blank=True, help_text="present, absent, unknown or empty", max_length=16)),
                ("answer", models.JSONField(blank=True, default=dict, help_text="combine_exam's output")),
                (
                    "reason",
                    models.CharField(blank=True, help_text="the answer in words, for the worklist", max_length=300),
                ),
                ("priority", models.SmallIntegerField(default=2)),
                ("reviewed", models.BooleanField(default=False, editable=False)),
                (
                    "clinic",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="exams",
                        to="clinic.clinic",
                    ),
                ),
                (
                    "device",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="exams",
                        to="clinic.device",
                    ),
                ),
            ],
            options={
                "ordering": ("reviewed", "priority", "-received_at"),
            },
        ),
        migrations.AddField(
            model_name="result",
            name="exam",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="results",
                to="clinic.exam",
            ),
        ),
        migrations.CreateModel(
            name="ExamReview",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("agrees", models.BooleanField()),
                (
                    "label",
                    models.CharField(
                        choices=[("normal", "normal"), ("abnormal", "abnormal"), ("inconclusive", "inconclusive")],
                        max_length=16,
                    ),
                ),
                ("note", models.TextField(blank=True, max_length=4000)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "exam",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="exam_reviews", to="clinic.exam"
                    ),
                ),
                (
                    "reviewer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="exam_reviews",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ("-created_at",),
            },
        ),
        migrations.AddIndex(
            model_name="exam",
            index=models.Index(fields=["clinic", "reviewed", "priority", "-received_at"], name="exam_worklist"),
        ),
        migrations.AddIndex(
            model_name="exam",
            index=models.Index(fields=["reviewed", "priority", "-received_at"], name="exam_worklist_all"),
        ),
        migrations.AddIndex(
            model_name="exam",
            index=models.Index(fields=["clinic", "started_at"], name="exam_clinic_started"),
        ),
        migrations.AddIndex(
            model_name="exam",
            index=models.Index(fields=["started_at"], name="exam_started"),
        ),
        migrations.RunPython(exams_for_stored_results, migrations.RunPython.noop),
    ]
