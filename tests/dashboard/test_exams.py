"""Exams: ingest groups results by (device, exam_id), idempotently; each exam's answer and its place on the worklist."""

from __future__ import annotations

import pytest

from dashboard.clinic.models import Exam, ExamReview, Result, Review
from device.core import contract
from tests.dashboard.conftest import result_message

pytestmark = pytest.mark.django_db

TOPIC = contract.results_topic("clinic-a-pi-01")
RHYTHM = "no clear heartbeat rhythm: hold still, reduce noise, place the stethoscope firmly"


def site_result(site: str, label: str, exam_id: str = "EX-1", **changes):
    p = {"normal": 0.9, "abnormal": 0.1} if label == "normal" else {"normal": 0.2, "abnormal": 0.8}
    quality = {"score": 0.9, "ok": True, "issues": []}
    if label == "unsure":
        p = {"normal": 0.11, "abnormal": 0.89}
        quality = {"score": 0.2, "ok": False, "issues": [RHYTHM]}
    return result_message(
        exam_id=exam_id, site=site, patient_ref="P-EX", label=label, probabilities=p, quality=quality, **changes
    )


def encode(messages):
    return [(TOPIC, contract.encode("result", m)) for m in messages]


def test_results_of_one_exam_id_form_one_exam_and_a_replay_adds_nothing(ingestor, device_a):
    sites = [
        site_result("aortic", "normal"),
        site_result("pulmonic", "normal"),
        site_result("tricuspid", "abnormal", murmur={"label": "present", "probability": 0.81}),
        site_result("mitral", "normal"),  # one site with a murmur answer: the same under a max or a mean rule
    ]
    assert ingestor.handle_batch(encode(sites[:2])) == ["result_created"] * 2
    for m in sites[2:]:
        assert ingestor.handle(TOPIC, contract.encode("result", m)) == "result_created"
    # the whole exam again, in a batch and one by one (a device re-sending after a lost ack)
    assert ingestor.handle_batch(encode(sites)) == ["result_duplicate"] * 4
    assert ingestor.handle(TOPIC, contract.encode("result", sites[0])) == "result_duplicate"

    exam = Exam.objects.get()
    assert exam.key == "clinic-a-pi-01/EX-1" and exam.exam_id == "EX-1" and exam.device == device_a
    assert exam.n_results == 4 and Result.objects.filter(exam=exam).count() == 4
    # the screening label is the mean over the four sites: one abnormal site is outvoted ((3 x 0.1 + 0.8) / 4);
    # the murmur it carries still puts the exam among the findings
    assert exam.label == "normal" and exam.murmur == "present"
    assert exam.answer["probabilities"]["abnormal"] == pytest.approx(0.275)
    assert exam.answer["murmur"]["sites"] == ["tricuspid"]
    assert exam.priority == Exam.PRIORITY_FINDING and not exam.reviewed
    assert exam.patient_ref == "P-EX" and exam.clinic == device_a.clinic
    assert "tricuspid alone said abnormal" in exam.reason and "murmur heard at tricuspid" in exam.reason
    assert exam.started_at == min(r.recorded_at for r in Result.objects.all())


def test_the_same_exam_id_from_two_devices_is_two_exams(ingestor, device_a, device_b):
    ingestor.handle(TOPIC, contract.encode("result", site_result("aortic", "normal")))
    other = site_result("aortic", "normal", device_id=device_b.device_id)
    topic_b = contract.results_topic(device_b.device_id)
    assert ingestor.handle(topic_b, contract.encode("result", other)) == "result_created"
    assert sorted(Exam.objects.values_list("key", flat=True)) == ["clinic-a-pi-01/EX-1", "clinic-b-pi-01/EX-1"]


def test_a_result_without_exam_id_is_an_exam_of_its_own(ingestor, device_a):
    a, b = result_message(patient_ref="P-1"), result_message(patient_ref="P-1")
    ingestor.handle_batch(encode([a, b, a]))
    assert sorted(Exam.objects.values_list("key", flat=True)) == sorted(f"result/{m['result_id']}" for m in (a, b))
    assert all(e.n_results == 1 and e.exam_id == "" for e in Exam.objects.all())


def test_an_exam_of_unsure_recordings_says_why_and_what_the_model_leaned_to(ingestor, device_a):
    ingestor.handle_batch(encode([site_result("aortic", "unsure"), site_result("mitral", "unsure")]))
    exam = Exam.objects.get()
    assert exam.label == "unsure" and exam.priority == Exam.PRIORITY_UNSURE
    assert exam.reason.startswith("Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal")
    assert "%" not in exam.reason.replace("89% abnormal", "")


def test_an_exam_is_reviewed_by_its_own_review_or_when_every_result_is(ingestor, device_a, physician):
    ingestor.handle_batch(encode([site_result("aortic", "normal"), site_result("mitral", "normal")]))
    exam = Exam.objects.get()
    assert exam.priority == Exam.PRIORITY_NORMAL and not exam.reviewed
    first, second = Result.objects.order_by("recorded_at")
    first.add_review(physician, agrees=True, label="normal", note="")
    exam.refresh_from_db()
    assert not exam.reviewed  # one of two recordings read
    Review.objects.create(result=second, reviewer=physician, agrees=True, label="normal")
    exam.refresh_from_db()
    assert exam.reviewed
    Review.objects.all().delete()
    exam.refresh_from_db()
    assert not exam.reviewed
    ExamReview.objects.create(exam=exam, reviewer=physician, agrees=False, label="abnormal", note="S3")
    exam.refresh_from_db()
    assert exam.reviewed


def test_results_stored_one_by_one_join_their_exam(make_result, device_a):
    # store_result (uploads, single messages) links the exam in the same transaction as the insert
    result = make_result(device_a, exam_id="EX-9", site="mitral")
    again = make_result(device_a, exam_id="EX-9", site="aortic")
    assert result.exam_id == again.exam_id
    exam = Exam.objects.get()
    assert exam.n_results == 2 and exam.key == "clinic-a-pi-01/EX-9"


def test_a_conflicting_result_leaves_no_exam_with_a_phantom_recording(ingestor, device_a):
    first = site_result("aortic", "normal", exam_id="EX-A")
    ingestor.handle(TOPIC, contract.encode("result", first))
    # the same result id with other content (another exam): a dead letter, never a recording of EX-B
    conflicting = {**first, "exam_id": "EX-B"}
    assert ingestor.handle_batch(encode([conflicting])) == ["dead_conflict"]
    assert ingestor.handle(TOPIC, contract.encode("result", conflicting)) == "dead_conflict"
    counts = dict(Exam.objects.values_list("exam_id", "n_results"))
    assert counts.get("EX-A") == 1 and counts.get("EX-B", 0) == 0


def test_refreshexams_recomputes_stored_answers(ingestor, device_a):
    from django.core.management import call_command

    ingestor.handle_batch(encode([site_result("aortic", "abnormal"), site_result("mitral", "abnormal")]))
    Exam.objects.update(label="normal", answer={"label": "normal"}, reason="stale", priority=Exam.PRIORITY_NORMAL)
    call_command("refreshexams", "--chunk", "1")
    exam = Exam.objects.get()
    assert (exam.label, exam.priority) == ("abnormal", Exam.PRIORITY_FINDING)
    assert exam.reason.startswith("Abnormal at aortic, mitral, model: 80% abnormal over the usable sites")


def test_a_second_models_results_do_not_change_the_exams_answer(ingestor, device_a):
    screening = [site_result("aortic", "normal"), site_result("mitral", "normal")]
    # the same recordings through a sound-type model: its labels are not screening answers
    sound = [
        {
            **site_result(s, "normal"),
            "task": "sound_type",
            "label": "murmur",
            "probabilities": {"murmur": 0.9, "normal": 0.1},
        }
        for s in ("aortic", "mitral")
    ]
    ingestor.handle_batch(encode(screening + sound))
    exam = Exam.objects.get()
    assert exam.n_results == 4 and exam.label == "normal" and exam.priority == Exam.PRIORITY_NORMAL
    assert exam.reason.endswith("2 recordings (aortic, mitral)")


def test_a_normal_exam_names_the_sites_to_record_again(ingestor, device_a):
    ingestor.handle_batch(encode([site_result("aortic", "normal"), site_result("tricuspid", "unsure")]))
    reason = Exam.objects.get().reason
    assert reason.startswith(
        "Normal, model: 90% normal over the usable sites; unsure at tricuspid (poor signal: re-record)"
    )
