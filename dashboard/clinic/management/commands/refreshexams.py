"""`manage.py refreshexams`: recompute every exam's answer from its results.

After migration 0004 (whose exams for results stored before it carry only the result's label) and
whenever the exam rule in device/core/exam.py changes: ingest computes an exam's answer when a result
arrives, so stored exams keep the answer of the rule they were stored under until this runs.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from dashboard.clinic import exams
from dashboard.clinic.models import Exam


class Command(BaseCommand):
    help = "Recompute every exam's answer, murmur, reason and worklist place from its results."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk", type=int, default=500, help="exams per transaction")

    def handle(self, *args: Any, **opts: Any) -> None:
        done, last = 0, 0
        while True:
            ids = list(Exam.objects.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[: opts["chunk"]])
            if not ids:
                break
            with transaction.atomic():  # short transactions: ingest keeps storing meanwhile
                exams.refresh(ids)
            done, last = done + len(ids), ids[-1]
        self.stdout.write(f"refreshed {done} exam(s)")
