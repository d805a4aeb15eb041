"""Exam page, exam review, worklist order, charts, unsure wording, time format and the exam's FHIR Bundle."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from fhir.resources.R4B.bundle import Bundle

from dashboard.clinic.models import Exam, ExamReview, Review
from tests.dashboard.test_exams import RHYTHM

pytestmark = pytest.mark.django_db

NORMAL = {"normal": 0.9, "abnormal": 0.1}
ABNORMAL = {"normal": 0.2, "abnormal": 0.8}
UNSURE_P = {"normal": 0.11, "abnormal": 0.89}
POOR = {"score": 0.2, "ok": False, "issues": [RHYTHM]}


@pytest.fixture
def doc(login, physician):
    return login(physician)


def four_sites(make_result, device, exam_id="EX-1", patient="P-EX", **at_mitral):
    made = {}
    for site in ("mitral", "aortic", "tricuspid", "pulmonic"):  # arrival order differs from the chest's
        extra = at_mitral if site == "mitral" else {}
        made[site] = make_result(
            device,
            exam_id=exam_id,
            patient_ref=patient,
            site=site,
            label=extra.pop("label", "normal"),
            probabilities=extra.pop("probabilities", NORMAL),
            cycles={"s1": [0.1, 0.9, 1.7], "s2": [0.4, 1.2]},
            **extra,
        )
    return made


def test_the_exam_page_shows_every_site_in_chest_order_with_marks_and_murmur(doc, device_a, make_result, sample_flac):
    made = four_sites(
        make_result,
        device_a,
        label="abnormal",
        probabilities=ABNORMAL,
        murmur={"label": "present", "probability": 0.81},
        audio=sample_flac,
    )
    exam = Exam.objects.get()
    page = doc.get(reverse("exam", args=[exam.pk])).content.decode()
    order = [page.index(f'data-site="{s}"') for s in ("aortic", "pulmonic", "tricuspid", "mitral")]
    assert order == sorted(order)
    assert "Murmur present</strong>, heard at mitral (model: 81% present)" in page
    # the exam is the mean over its four sites ((3 x 0.1 + 0.8) / 4): mitral's finding is outvoted and named
    assert "Normal, model: 72% normal over the usable sites (mitral alone said abnormal" in page
    assert page.count("S1</span> 3") == 1  # only mitral has a recording; the others say none arrived
    assert page.count("No recording received for this site") == 3
    assert f'id="wave-{made["mitral"].result_id}"' in page and "exam.js" in page
    assert "Screening support, not a diagnosis" in page
    assert "Disagree with the exam&#x27;s answer" in page and "same as the exam&#x27;s answer" in page


def test_a_refused_exam_review_comes_back_with_the_typed_note(doc, device_a, make_result):
    four_sites(make_result, device_a, label="unsure", probabilities=UNSURE_P, quality=POOR)
    exam = Exam.objects.get()
    assert exam.label == "normal"  # three usable normal sites; the unsure mitral recording does not count
    note = "Loud S3 on re-listening; please echo."
    response = doc.post(reverse("exam-review", args=[exam.pk]), {"verdict": "disagree", "label": "", "note": note})
    assert response.status_code == 400 and ExamReview.objects.count() == 0
    page = response.content.decode()
    assert "choose your own label" in page
    assert re.search(rf"<textarea[^>]*>\s*{re.escape(note)}</textarea>", page)
    assert re.search(r'<input[^>]*value="disagree"[^>]*checked', page)  # the verdict kept too
    response = doc.post(
        reverse("exam-review", args=[exam.pk]), {"verdict": "disagree", "label": "abnormal", "note": note}
    )
    assert response.status_code == 302
    exam.refresh_from_db()
    assert exam.reviewed and ExamReview.objects.get().note == note


def test_a_refused_result_review_keeps_the_note_too(doc, device_a, make_result):
    result = make_result(device_a)
    response = doc.post(reverse("review", args=[result.result_id]), {"verdict": "disagree", "note": "kept"})
    assert response.status_code == 400 and Review.objects.count() == 0
    assert re.search(r"<textarea[^>]*>\s*kept</textarea>", response.content.decode())


def test_the_worklist_puts_unreviewed_findings_first_then_normal_then_unsure(doc, physician, device_a, make_result):
    now = datetime.now(UTC)

    def exam(exam_id, label, probabilities, minutes_ago, **changes):
        at = (now - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
        make_result(device_a, exam_id=exam_id, label=label, probabilities=probabilities, recorded_at=at, **changes)
        return Exam.objects.get(exam_id=exam_id)

    unsure = exam("unsure", "unsure", UNSURE_P, 1, quality=POOR)
    normal = exam("normal", "normal", NORMAL, 2)
    murmur = exam("murmur", "normal", NORMAL, 3, murmur={"label": "present", "probability": 0.7})
    abnormal = exam("abnormal", "abnormal", ABNORMAL, 4)
    reviewed = exam("reviewed", "abnormal", ABNORMAL, 0)
    ExamReview.objects.create(exam=reviewed, reviewer=physician, agrees=True, label="abnormal")
    page = doc.get(reverse("overview")).content.decode()
    listed = [int(pk) for pk in re.findall(r'data-exam="(\d+)"', page)]
    # findings (abnormal, murmur) newest received first, then normal, then unsure; reviewed exams last
    assert listed == [abnormal.pk, murmur.pk, normal.pk, unsure.pk, reviewed.pk]
    assert "Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal" in page
    assert "murmur heard at" in page


def test_unsure_is_said_in_words_with_the_models_probability_everywhere(doc, device_a, make_result):
    make_result(device_a, patient_ref="P-U", label="unsure", probabilities=UNSURE_P, quality=POOR)
    expected = "Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal"
    pages = {
        "results": doc.get(reverse("results")).content.decode(),
        "patient": doc.get(reverse("patient", args=["clinic-a", "P-U"])).content.decode(),
        "overview": doc.get(reverse("overview")).content.decode(),
    }
    for name, page in pages.items():
        assert expected in page, name
        assert not re.search(r">\s*\d+%\s*<", page), f"a bare percentage on the {name} page"
    assert doc.get(reverse("feed-json")).json()["results"][0]["summary"] == expected


def test_times_have_one_format_in_the_clinics_zone(login, nurse_a, device_a, make_result):
    device_a.clinic.time_zone = "Asia/Kolkata"  # UTC+05:30 all year
    device_a.clinic.save()
    result = make_result(device_a, recorded_at="2026-12-05T23:02:50Z")
    page = login(nurse_a).get(reverse("result", args=[result.result_id])).content.decode()
    assert '<time datetime="2026-12-05T23:02:50+00:00">2026-12-06 04:32</time>' in page
    assert 'data-tz="Asia/Kolkata"' in page and "Times in Asia/Kolkata" in page
    assert not re.search(r"\d{4}-\d{2}-\d{2}\d{2}:\d{2}", page)  # never a glued date and time


def test_a_clinics_time_zone_must_be_one_the_server_knows(clinic_a):
    clinic_a.time_zone = "Mars/Olympus_Mons"
    with pytest.raises(ValidationError, match="not a time zone name"):
        clinic_a.full_clean()
    clinic_a.time_zone = "Europe/Berlin"
    clinic_a.full_clean()


def test_the_patient_page_charts_heart_rate_and_results(doc, device_a, make_result):
    make_result(device_a, patient_ref="P-C", heart_rate_bpm=70.0, recorded_at="2026-11-01T10:00:00Z")
    make_result(device_a, patient_ref="P-C", heart_rate_bpm=95.0, recorded_at="2026-11-20T10:00:00Z")
    make_result(device_a, patient_ref="P-C", heart_rate_bpm=None, label="unsure", probabilities=UNSURE_P, quality=POOR)
    page = doc.get(reverse("patient", args=["clinic-a", "P-C"])).content.decode()
    svg = ET.fromstring(re.search(r'<svg class="chart".*?</svg>', page, re.S).group(0))
    ns = "{http://www.w3.org/2000/svg}"
    points = svg.findall(f"{ns}circle") or svg.findall("circle")
    marks = svg.findall(f"{ns}rect") or svg.findall("rect")
    assert len(points) == 2 and len(marks) == 3  # the unsure recording has no heart rate: strip only
    assert {m.get("class") for m in marks} == {"mark mark-abnormal", "mark mark-unsure"}
    heights = sorted(float(p.get("cy")) for p in points)
    assert heights[0] < heights[1]  # 95 bpm drawn above 70 bpm


def test_the_overview_charts_exams_per_day_by_answer_per_device(doc, device_a, device_b, make_result):
    four_sites(make_result, device_a, exam_id="A1")
    make_result(device_a, exam_id="A2", label="abnormal", probabilities=ABNORMAL)
    make_result(device_b, exam_id="B1", label="normal", probabilities=NORMAL)
    page = doc.get(reverse("overview")).content.decode()
    charts = re.findall(r'<svg class="chart small".*?</svg>', page, re.S)
    by_device = {re.search(r'data-device="([^"]+)"', c).group(1): c for c in charts}
    assert set(by_device) == {"clinic-a-pi-01", "clinic-b-pi-01"}
    bars_a = re.findall(r'class="bar bar-(\w+)"[^>]*data-n="(\d+)"', by_device["clinic-a-pi-01"])
    assert sorted(bars_a) == [("abnormal", "1"), ("normal", "1")]  # two exams today, not five recordings


def test_an_exam_exports_as_a_valid_fhir_bundle_whose_status_follows_the_review(doc, physician, device_a, make_result):
    # every site abnormal, so the exam is too (the mean over its sites); the murmur most likely at mitral
    for site in ("mitral", "aortic", "tricuspid", "pulmonic"):
        p_murmur = 0.8 if site == "mitral" else 0.55
        make_result(device_a, exam_id="EX-1", patient_ref="P-EX", site=site, label="abnormal", probabilities=ABNORMAL,
                    murmur={"label": "present", "probability": p_murmur})  # fmt: skip
    exam = Exam.objects.get()
    url = reverse("exam-fhir", args=[exam.pk])

    def bundle():
        data = doc.get(url).json()
        Bundle.model_validate(data)  # the R4B models of fhir.resources: raises on an invalid resource
        report = data["entry"][0]["resource"]
        observations = {e["fullUrl"]: e["resource"] for e in data["entry"][1:]}
        return report, observations

    report, observations = bundle()
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    assert {r["reference"] for r in report["result"]} == set(observations) and len(observations) == 4
    assert all(o["resourceType"] == "Observation" and o["status"] == "preliminary" for o in observations.values())
    assert report["conclusionCode"][0]["coding"][0]["code"] == "abnormal"
    assert "murmur heard at mitral" in report["conclusion"] and "not a diagnosis" in report["conclusion"]
    assert report["subject"]["identifier"]["value"] == "P-EX"

    ExamReview.objects.create(exam=exam, reviewer=physician, agrees=True, label="abnormal")
    report, observations = bundle()
    assert report["status"] == "final" and report["resultsInterpreter"][0]["display"] == "dr-house"
    assert all(o["status"] == "final" for o in observations.values())
    one = Exam.objects.get().results.first()
    assert doc.get(reverse("result-fhir", args=[one.result_id])).json()["status"] == "final"  # alone too

    ExamReview.objects.create(exam=exam, reviewer=physician, agrees=False, label="normal", note="innocent murmur")
    report, _ = bundle()
    assert report["status"] == "amended" and "innocent murmur" in report["conclusion"]


def test_each_sites_murmur_is_said_with_its_probability_and_the_exams_as_the_mean(doc, device_a, make_result):
    for site, p in (("aortic", 0.1), ("pulmonic", 0.3)):
        make_result(device_a, exam_id="EX-M", patient_ref="P-M", site=site, label="normal", probabilities=NORMAL,
                    murmur={"label": "absent", "probability": p})  # fmt: skip
    make_result(device_a, exam_id="EX-M", patient_ref="P-M", site="mitral", label="unsure", probabilities=UNSURE_P,
                quality=POOR, murmur={"label": "unknown", "probability": 0.9})  # fmt: skip
    page = doc.get(reverse("exam", args=[Exam.objects.get().pk])).content.decode()
    # the exam's murmur is the mean over usable recordings (device/core/exam.py), not a maximum
    assert "No murmur found (model: 20% present, the mean over the usable recordings)." in page
    assert "at most" not in page
    assert "Murmur: absent (model: 10% present)" in page and "Murmur: absent (model: 30% present)" in page
    # an unfit signal's murmur is not an answer: no probability that would read as one
    assert "Murmur: not assessed (poor signal)" in page and "90% present" not in page
    assert "Screening support, not a diagnosis" in page
