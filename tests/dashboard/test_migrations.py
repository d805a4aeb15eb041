"""Migration 0004 gives results stored before exams existed an exam each, which refreshexams completes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from device.core import contract

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BEFORE, AFTER = [("clinic", "0003_result_reviewed")], [("clinic", "0004_exams")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_stored_results_each_get_an_exam_and_refreshexams_gives_it_the_exam_rule():
    apps = migrate(BEFORE)
    try:
        clinic = apps.get_model("clinic", "Clinic").objects.create(slug="old", name="Old clinic")
        device = apps.get_model("clinic", "Device").objects.create(device_id="old-pi", clinic=clinic)
        result_model = apps.get_model("clinic", "Result")
        ids = [uuid.uuid4() for _ in range(3)]
        for n, (rid, label) in enumerate(zip(ids, ("abnormal", "normal", "unsure"), strict=True)):
            message = {**contract.EXAMPLE_RESULT, "result_id": str(rid), "device_id": "old-pi", "label": label}
            result_model.objects.create(
                result_id=rid, device=device, clinic=clinic, recorded_at=datetime(2026, 11, 1, 10, n, tzinfo=UTC),
                patient_ref="P-OLD", location="mitral", duration_s=15.0, sample_rate=4000, task="screening",
                model_name="m", model_version="1", model_sha256="0" * 64, label=label,
                probabilities=message["probabilities"], windows=[], quality_score=0.9, quality_ok=label != "unsure",
                quality_issues=[] if label != "unsure" else ["noise bursts: record again"], message=message,
            )  # fmt: skip
        apps = migrate(AFTER)
        exams = {e.key: e for e in apps.get_model("clinic", "Exam").objects.all()}
        assert set(exams) == {f"result/{rid}" for rid in ids}
        linked = dict(apps.get_model("clinic", "Result").objects.values_list("result_id", "exam_id"))
        assert {linked[rid] for rid in ids} == {e.pk for e in exams.values()}
        assert [exams[f"result/{rid}"].priority for rid in ids] == [0, 1, 2]
    finally:
        migrate(migrate_latest())
    from dashboard.clinic.models import Exam

    call_command("refreshexams")
    unsure = Exam.objects.get(key=f"result/{ids[2]}")
    assert unsure.reason.startswith("Unsure — poor signal: noise bursts") and unsure.n_results == 1


def migrate_latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()
