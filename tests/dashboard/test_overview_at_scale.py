"""The overview and the live feed with many devices and reviewed results (what bench_dashboard.py measures)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard.clinic.models import Device
from dashboard.front.views.feed import OVERVIEW_DEVICES

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(clinic_a):
    """OVERVIEW_DEVICES + 10 devices: most online, three offline, one that never reported."""
    now = timezone.now()
    devices = [
        Device(device_id=f"pi-{i:03d}", clinic=clinic_a, state="online", last_seen=now - timedelta(seconds=i))
        for i in range(OVERVIEW_DEVICES + 6)
    ]
    devices += [
        Device(device_id=f"down-{i}", clinic=clinic_a, state="offline", last_seen=now - timedelta(days=i + 1))
        for i in range(3)
    ]
    devices.append(Device(device_id="fresh-1", clinic=clinic_a))
    Device.objects.bulk_create(devices)
    return devices


def test_the_overview_lists_devices_needing_attention_first_and_counts_the_rest(login, physician, fleet):
    page = login(physician).get(reverse("overview")).content.decode()
    listed = [chunk.split('"', 1)[0] for chunk in page.split('data-device="')[1:]]
    assert len(listed) == OVERVIEW_DEVICES
    assert listed[:4] == ["down-2", "down-1", "down-0", "fresh-1"]  # offline (longest first), then never reported
    assert "pi-000" not in listed  # the most recently seen online devices are the ones left out
    assert f"{OVERVIEW_DEVICES} of {len(fleet)} devices shown" in page
    assert f"{OVERVIEW_DEVICES + 6} online, 3 offline, 1 never reported" in page


def test_the_feed_reports_the_listed_devices_and_which_results_are_reviewed(login, physician, fleet, make_result):
    device = Device.objects.get(device_id="down-0")
    reviewed = make_result(device, label="abnormal")
    reviewed.add_review(physician, agrees=True, label="abnormal", note="")
    waiting = make_result(device, label="abnormal")
    payload = login(physician).get(reverse("feed-json")).json()
    assert [d["device_id"] for d in payload["devices"]][:3] == ["down-2", "down-1", "down-0"]
    assert len(payload["devices"]) == OVERVIEW_DEVICES
    flags = {r["id"]: r["reviewed"] for r in payload["results"]}
    assert flags == {str(reviewed.result_id): True, str(waiting.result_id): False}
    assert payload["counts"] == {"abnormal": 1, "unsure": 0}


def test_a_small_clinic_sees_all_its_devices_and_no_summary(login, physician, device_a):
    page = login(physician).get(reverse("overview")).content.decode()
    assert 'data-device="clinic-a-pi-01"' in page and "devices shown" not in page


def test_the_reviewed_flag_follows_the_reviews_however_they_change(physician, device_a, make_result):
    from dashboard.clinic.models import Result, Review

    first, second = make_result(device_a, label="abnormal"), make_result(device_a, label="unsure")
    flag = lambda r: Result.objects.get(pk=r.result_id).reviewed  # noqa: E731
    assert not flag(first) and not flag(second)
    review = first.add_review(physician, agrees=True, label="abnormal", note="")
    assert flag(first) and not flag(second)
    review.result = second  # moved to another result (the admin can)
    review.save()
    assert not flag(first) and flag(second)
    Review.objects.filter(pk=review.pk).delete()  # a bulk delete (the admin's action) also sends the signals
    assert not flag(second)
    for _ in range(2):
        second.add_review(physician, agrees=False, label="normal", note="")
    Review.objects.filter(result=second).first().delete()
    assert flag(second)  # one review left


def test_the_migration_marks_results_reviewed_before_it(physician, device_a, make_result):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from dashboard.clinic.models import Result, Review

    reviewed, waiting = make_result(device_a, label="abnormal"), make_result(device_a, label="abnormal")
    Review.objects.create(result=reviewed, reviewer=physician, agrees=True, label="abnormal")
    Result.objects.update(reviewed=False)  # as rows were before the column existed
    executor = MigrationExecutor(connection)
    migration = executor.loader.get_migration("clinic", "0003_result_reviewed")
    migration.operations[1].code(executor.loader.project_state(("clinic", "0003_result_reviewed")).apps, None)
    assert Result.objects.get(pk=reviewed.pk).reviewed and not Result.objects.get(pk=waiting.pk).reviewed


def test_the_results_list_stops_counting_at_the_cap(login, physician, device_a, make_result, monkeypatch):
    from dashboard.front.views import results

    monkeypatch.setattr(results, "COUNT_CAP", 3)
    monkeypatch.setattr(results, "PAGE_SIZE", 2)
    for _ in range(5):
        make_result(device_a)
    page = login(physician).get(reverse("results")).content.decode()
    assert "over 3 results: narrow the filters" in page
    assert page.count("<tr>") == 1 + 2  # the header and one page of two rows
    monkeypatch.setattr(results, "COUNT_CAP", 100)
    page = login(physician).get(reverse("results")).content.decode()
    assert "page 1 of 3 (5 results)" in page


@pytest.mark.parametrize("page", ["feed", "results", "patient"])
def test_lists_make_as_many_queries_for_ten_results_as_for_two(login, physician, device_a, make_result, page):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = login(physician)
    url = {
        "feed": reverse("feed-json"),
        "results": reverse("results"),
        "patient": reverse("patient", args=["clinic-a", "P-000123"]),
    }[page]

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured.captured_queries)

    for _ in range(2):
        make_result(device_a, label="abnormal").add_review(physician, agrees=True, label="abnormal", note="")
    few = queries()
    for _ in range(8):
        make_result(device_a, label="abnormal").add_review(physician, agrees=True, label="abnormal", note="")
    assert queries() == few  # nothing loaded row by row (a deferred field read in a template would be)
