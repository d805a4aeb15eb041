# ruff: noqa: RUF012 - migrations use Django's list attributes
"""Result.reviewed (kept by Review's signals) and a partial index of the results awaiting review.

The overview and the live feed count what awaits review on every page load and every poll; with a
million results that count joined every result with the reviews (seconds). It now reads the partial
index, whose size is the backlog (tests/benchmarks/bench_dashboard.py, BENCHMARKS.md).
"""

from typing import Any

from django.db import migrations, models


def mark_reviewed(apps: Any, schema_editor: Any) -> None:
    result = apps.get_model("clinic", "Result")
    review = apps.get_model("clinic", "Review")
    result.objects.filter(models.Exists(review.objects.filter(result=models.OuterRef("pk")))).update(reviewed=True)


def vacuum_often(apps: Any, schema_editor: Any) -> None:
    """PostgreSQL: vacuum after 1 % new or changed rows (default 20 %), so the visibility map stays current
    and counting the partial index needs no visit to the rows of recent results."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE clinic_result SET (autovacuum_vacuum_insert_scale_factor = 0.01, "
            "autovacuum_vacuum_scale_factor = 0.02)"
        )


def vacuum_default(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE clinic_result RESET (autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [("clinic", "0002_roles")]

    operations = [
        migrations.AddField(
            model_name="result",
            name="reviewed",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunPython(mark_reviewed, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="result",
            index=models.Index(
                condition=models.Q(("label__in", ("abnormal", "unsure")), ("reviewed", False)),
                fields=["clinic", "label"],
                name="result_awaiting_review",
            ),
        ),
        migrations.RunPython(vacuum_often, vacuum_default),
    ]
