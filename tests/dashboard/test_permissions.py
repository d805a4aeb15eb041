"""Who sees what: nurses only their clinic, physicians everything clinical, admins the machinery."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.dashboard.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_clinics(device_a, device_b, make_result, sample_flac):
    return make_result(device_a, audio=sample_flac, patient_ref="P-A"), make_result(device_b, patient_ref="P-B")


def test_a_nurse_sees_only_her_clinics_results(login, nurse_a, two_clinics):
    mine, theirs = two_clinics
    nurse = login(nurse_a)
    feed = nurse.get(reverse("feed-json")).json()
    assert [r["id"] for r in feed["results"]] == [str(mine.result_id)]
    assert [d["device_id"] for d in feed["devices"]] == ["clinic-a-pi-01"]
    listing = nurse.get(reverse("results")).content.decode()
    assert "P-A" in listing and "P-B" not in listing
    assert nurse.get(reverse("result", args=[mine.result_id])).status_code == 200
    assert nurse.get(reverse("result-audio", args=[mine.result_id])).status_code == 200
    for name in ("result", "result-audio", "result-fhir", "result-recording"):
        assert nurse.get(reverse(name, args=[theirs.result_id])).status_code == 404, name
    assert nurse.get(reverse("patient", args=["clinic-b", "P-B"])).status_code == 404
    overview = nurse.get(reverse("overview")).content.decode()
    assert "clinic-b-pi-01" not in overview and "P-B" not in overview


def test_a_nurse_cannot_review_export_or_reach_admin_pages(login, nurse_a, two_clinics):
    mine, _ = two_clinics
    nurse = login(nurse_a)
    assert nurse.post(reverse("review", args=[mine.result_id]), {"verdict": "agree"}).status_code == 403
    forbidden = [reverse("export-csv"), reverse("devices"), reverse("dead-letters")]
    for url in [*forbidden, reverse("device", args=["clinic-a-pi-01"])]:
        assert nurse.get(url).status_code == 403, url
    admin = nurse.get("/admin/")
    assert admin.status_code == 302 and "/admin/login/" in admin["Location"]
    page = nurse.get(reverse("result", args=[mine.result_id])).content.decode()
    assert "Save review" not in page and "Dead letters" not in page


def test_a_nurse_uploads_only_under_her_own_clinic(login, nurse_a, clinic_b):
    page = login(nurse_a).get(reverse("upload")).content.decode()
    assert "Clinic A" in page and "Clinic B" not in page


def test_a_nurse_without_a_clinic_sees_nothing(login, db, device_a, make_result):
    make_result(device_a)
    lost = login(make_user("nurse-x", "nurse"))
    assert lost.get(reverse("feed-json")).json()["results"] == []


def test_a_physician_sees_every_clinic_but_cannot_manage(login, physician, two_clinics):
    doc = login(physician)
    assert len(doc.get(reverse("feed-json")).json()["results"]) == 2
    for result in two_clinics:
        assert doc.get(reverse("result", args=[result.result_id])).status_code == 200
    assert doc.get(reverse("devices")).status_code == 403 and doc.get(reverse("dead-letters")).status_code == 403


def test_an_admin_manages_but_does_not_read_recordings(login, admin_user, two_clinics):
    admin = login(admin_user)
    assert admin.get(reverse("devices")).status_code == 200 and admin.get(reverse("dead-letters")).status_code == 200
    assert admin.get("/admin/").status_code == 200
    overview = admin.get(reverse("overview")).content.decode()
    assert "clinic-b-pi-01" in overview and "Live feed" not in overview
    assert admin.get(reverse("result", args=[two_clinics[0].result_id])).status_code == 403


def test_a_user_without_a_role_gets_nothing(login, db, two_clinics):
    nobody = login(make_user("visitor"))
    for url in (reverse("overview"), reverse("results"), reverse("upload"), reverse("devices")):
        assert nobody.get(url).status_code == 403, url


def test_a_nurse_sees_only_her_clinics_exams_and_cannot_review_them(login, nurse_a, two_clinics):
    mine, theirs = two_clinics
    nurse = login(nurse_a)
    assert nurse.get(reverse("exam", args=[mine.exam_id])).status_code == 200
    assert nurse.get(reverse("exam-fhir", args=[mine.exam_id])).status_code == 200
    for name in ("exam", "exam-fhir"):
        assert nurse.get(reverse(name, args=[theirs.exam_id])).status_code == 404, name
    assert nurse.post(reverse("exam-review", args=[mine.exam_id]), {"verdict": "agree"}).status_code == 403
    overview = nurse.get(reverse("overview")).content.decode()
    assert f'data-exam="{mine.exam_id}"' in overview and f'data-exam="{theirs.exam_id}"' not in overview
    assert 'data-device="clinic-b-pi-01"' not in overview  # nor the other clinic's exams-per-day chart
    assert [e["id"] for e in nurse.get(reverse("feed-json")).json()["worklist"]] == [mine.exam_id]
