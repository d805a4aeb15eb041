"""Pages and endpoints, as a logged-in physician (permissions by role: test_permissions.py)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import soundfile as sf
from django.urls import reverse
from fhir.resources.R4B.observation import Observation

from dashboard.clinic.models import Result, Review
from tests.dashboard.conftest import needs_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def doc(login, physician):
    return login(physician)


def test_every_page_needs_a_login(client, device_a, make_result):
    result = make_result(device_a)
    urls = [
        reverse("overview"), reverse("feed-json"), reverse("results"), reverse("export-csv"),
        reverse("result", args=[result.result_id]), reverse("result-audio", args=[result.result_id]),
        reverse("result-fhir", args=[result.result_id]), reverse("patient", args=["clinic-a", "P-000123"]),
        reverse("upload"), reverse("devices"), reverse("dead-letters"),
    ]  # fmt: skip
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    assert client.get("/admin/").status_code == 302


def test_the_overview_shows_devices_counts_and_the_feed(doc, device_a, make_result):
    make_result(device_a, label="abnormal")
    make_result(device_a, label="unsure", probabilities={"normal": 0.5, "abnormal": 0.5})
    make_result(device_a, label="normal", probabilities={"normal": 0.9, "abnormal": 0.1})
    page = doc.get(reverse("overview")).content.decode()
    assert "clinic-a-pi-01" in page and "Ward 3 cart" in page
    assert 'id="count-abnormal">1<' in page and 'id="count-unsure">1<' in page
    assert page.count("data-result=") == 3 and "Screening support, not a diagnosis" in page


def test_the_feed_endpoint_returns_what_is_new(doc, device_a, make_result):
    old = make_result(device_a)
    payload = doc.get(reverse("feed-json")).json()
    assert [r["id"] for r in payload["results"]] == [str(old.result_id)]
    since = payload["results"][0]["received_at"]
    new = make_result(device_a, label="normal", probabilities={"normal": 0.8, "abnormal": 0.2})
    payload = doc.get(reverse("feed-json"), {"since": since}).json()
    ids = [r["id"] for r in payload["results"]]
    assert ids[0] == str(new.result_id) and str(old.result_id) in ids  # >= since: the client de-duplicates
    assert payload["counts"] == {"abnormal": 1, "unsure": 0}
    assert payload["devices"][0]["device_id"] == "clinic-a-pi-01"


def test_the_recording_page_shows_model_findings_and_the_notice(doc, device_a, make_result, sample_flac):
    result = make_result(device_a, audio=sample_flac, quality={"score": 0.4, "ok": False, "issues": ["clipping"]})
    page = doc.get(reverse("result", args=[result.result_id])).content.decode()
    expected = ["screening-lstm", "1.0.0", "0" * 64, "73 bpm", "clipping", "Screening support, not a diagnosis"]
    expected += ["Poor signal", 'id="waveform"', "recording-data", "wavesurfer.min.js", "spectrogram.min.js"]
    for text in expected:
        assert text in page, text
    data = json.loads(page.split('id="recording-data" type="application/json">')[1].split("</script>")[0])
    assert data["windows"] == [{"start": 0.0, "p": 0.78}, {"start": 2.5, "p": 0.85}] and data["focus"] == "abnormal"


def test_the_page_says_which_threshold_decided(doc, device_a, make_result):
    decision = {"source": "local", "threshold": 0.31, "model_threshold": 0.534,
                "labelled": {"normal": 28, "abnormal": 12}, "set_at": "2026-11-26T09:00:00Z"}  # fmt: skip
    local = make_result(device_a, decision=decision)
    page = doc.get(reverse("result", args=[local.result_id])).content.decode()
    threshold = page.split('id="threshold">')[1].split("</dd>")[0]
    assert "set locally" in threshold and "0.310 instead of the model's 0.534" in threshold
    assert "28 normal and 12 abnormal" in threshold and "2026-11-26" in threshold
    own = make_result(device_a)
    page = doc.get(reverse("result", args=[own.result_id])).content.decode()
    assert page.split('id="threshold">')[1].split("</dd>")[0] == "the model's own"
    rows = list(csv.DictReader(io.StringIO(b"".join(doc.get(reverse("export-csv")).streaming_content).decode())))
    fhir = doc.get(reverse("result-fhir", args=[local.result_id])).json()
    Observation.model_validate(fhir)
    assert any("threshold set on the device's own 28 normal and 12 abnormal" in n["text"] for n in fhir["note"])
    assert {r["result_id"]: r["local_threshold"] for r in rows} == {
        str(local.result_id): "0.31",
        str(own.result_id): "",
    }


def test_audio_is_served_as_a_playable_wav_and_the_original(doc, device_a, make_result, sample_flac):
    result = make_result(device_a, audio=sample_flac)
    wav = b"".join(doc.get(reverse("result-audio", args=[result.result_id])).streaming_content)
    info = sf.info(io.BytesIO(wav))
    assert info.format == "WAV" and info.samplerate == 8000
    original = doc.get(reverse("result-recording", args=[result.result_id]))
    assert b"".join(original.streaming_content) == sample_flac
    assert "attachment" in original["Content-Disposition"]
    no_audio = make_result(device_a)
    assert doc.get(reverse("result-audio", args=[no_audio.result_id])).status_code == 404


def test_a_physician_reviews_a_result(doc, physician, device_a, make_result):
    result = make_result(device_a)
    url = reverse("review", args=[result.result_id])
    response = doc.post(url, {"verdict": "disagree", "label": "normal", "note": "innocent flow murmur"})
    assert response.status_code == 302
    review = Review.objects.get()
    assert (review.agrees, review.label, review.note, review.reviewer) == (
        False,
        "normal",
        "innocent flow murmur",
        physician,
    )
    page = doc.get(reverse("result", args=[result.result_id])).content.decode()
    assert "innocent flow murmur" in page and "disagrees" in page and "dr-house" in page
    doc.post(url, {"verdict": "agree", "label": "", "note": ""})
    assert Review.objects.latest("created_at").label == "abnormal"


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"verdict": "disagree", "label": ""}, "choose your own label"),
        ({"verdict": "disagree", "label": "abnormal"}, "you disagree, but chose"),
        ({"verdict": "agree", "label": "normal"}, "pick one"),
        ({"verdict": "maybe"}, "verdict"),
    ],
)
def test_an_inconsistent_review_is_refused_with_a_reason(doc, device_a, make_result, form, says):
    result = make_result(device_a)
    response = doc.post(reverse("review", args=[result.result_id]), form, follow=True)
    assert Review.objects.count() == 0 and says in response.content.decode()


def test_the_csv_export_is_filtered_and_safe_in_spreadsheets(doc, physician, device_a, make_result):
    a = make_result(device_a, patient_ref="P-1")
    make_result(device_a, patient_ref="P-2", label="normal", probabilities={"normal": 0.9, "abnormal": 0.1})
    a.add_review(physician, agrees=True, label="abnormal", note='=HYPERLINK("http://evil")')
    response = doc.get(reverse("export-csv"), {"label": "abnormal"})
    assert response["Content-Type"].startswith("text/csv") and "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 1 and rows[0]["result_id"] == str(a.result_id) and rows[0]["patient_ref"] == "P-1"
    assert rows[0]["model_sha256"] == "0" * 64 and rows[0]["review_label"] == "abnormal"
    assert rows[0]["review_note"].startswith("'=HYPERLINK")
    assert rows[0]["answer"] == "Abnormal — model: 82% abnormal" and rows[0]["exam_id"] == ""
    everything = b"".join(doc.get(reverse("export-csv")).streaming_content).decode()
    assert len(list(csv.DictReader(io.StringIO(everything)))) == 2


def test_each_result_exports_as_a_valid_fhir_r4_observation(doc, physician, device_a, make_result):
    result = make_result(device_a)
    response = doc.get(reverse("result-fhir", args=[result.result_id]))
    assert response["Content-Type"] == "application/fhir+json"
    obs = response.json()
    Observation.model_validate(obs)  # raises on a structurally invalid resource
    assert obs["status"] == "preliminary" and obs["id"] == str(result.result_id)
    heart = next(c for c in obs["component"] if c["code"]["coding"][0]["system"] == "http://loinc.org")
    assert heart["code"]["coding"][0]["code"] == "8867-4"
    assert heart["valueQuantity"] == {
        "value": 72.5,
        "unit": "beats/minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    assert obs["device"]["reference"] == "#model" and obs["contained"][0]["resourceType"] == "Device"
    assert obs["contained"][0]["identifier"][0]["value"] == "0" * 64
    assert "screening-lstm 1.0.0" in obs["method"]["text"]
    assert obs["valueCodeableConcept"]["coding"][0]["code"] == "abnormal"
    assert obs["subject"]["identifier"]["value"] == "P-000123" and "not a diagnosis" in obs["note"][0]["text"]
    result.add_review(physician, agrees=False, label="normal", note="")
    reviewed = doc.get(reverse("result-fhir", args=[result.result_id])).json()
    Observation.model_validate(reviewed)
    assert reviewed["status"] == "final" and reviewed["interpretation"][0]["coding"][0]["code"] == "normal"


def test_a_result_without_heart_rate_says_why_in_fhir(doc, device_a, make_result):
    result = make_result(device_a, heart_rate_bpm=None)
    obs = doc.get(reverse("result-fhir", args=[result.result_id])).json()
    Observation.model_validate(obs)
    heart = obs["component"][0]
    assert "valueQuantity" not in heart and heart["dataAbsentReason"]["coding"][0]["code"] == "unknown"


def test_the_patient_timeline_lists_a_patients_results_newest_first(doc, device_a, make_result):
    first = make_result(device_a, patient_ref="P-9", recorded_at="2026-01-01T10:00:00Z")
    second = make_result(device_a, patient_ref="P-9", recorded_at="2026-02-01T10:00:00Z")
    make_result(device_a, patient_ref="P-other")
    page = doc.get(reverse("patient", args=["clinic-a", "P-9"])).content.decode()
    assert page.index(str(second.result_id)) < page.index(str(first.result_id)) and "P-other" not in page
    assert doc.get(reverse("patient", args=["clinic-a", "P-nobody"])).status_code == 404


def test_the_results_list_filters(doc, device_a, make_result):
    make_result(device_a, patient_ref="P-1")
    make_result(device_a, patient_ref="P-2", label="normal", probabilities={"normal": 0.9, "abnormal": 0.1})
    page = doc.get(reverse("results"), {"label": "normal"}).content.decode()
    assert "P-2" in page and "P-1" not in page and "(1 results)" in page
    page = doc.get(reverse("results"), {"review": "awaiting"}).content.decode()
    assert "P-1" in page and "P-2" not in page
    assert "use the pseudonymous" in doc.get(reverse("results"), {"patient_ref": "Jane Doe"}).content.decode()


def test_an_upload_that_is_not_audio_is_refused_clearly(doc, clinic_a, tmp_path):
    pdf = tmp_path / "heart.wav"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n" * 50)
    with pdf.open("rb") as f:
        response = doc.post(reverse("upload"), {"recording": f, "clinic": clinic_a.pk})
    assert response.status_code == 400 and Result.objects.count() == 0
    assert "“heart.wav” is not a WAV or FLAC recording" in response.content.decode()


def test_an_upload_over_the_size_limit_is_refused(doc, clinic_a, settings, tmp_path, sample_flac):
    settings.STETH_MAX_UPLOAD_BYTES = 10_000
    path = tmp_path / "long.flac"
    path.write_bytes(sample_flac)
    with path.open("rb") as f:
        response = doc.post(reverse("upload"), {"recording": f, "clinic": clinic_a.pk})
    assert response.status_code in (400, 413) and Result.objects.count() == 0
    assert "limit" in response.content.decode()


def test_admins_register_devices_and_read_dead_letters(login, admin_user, clinic_a):
    from dashboard.clinic.models import DeadLetter, Device

    admin = login(admin_user)
    response = admin.post(reverse("devices"), {"device_id": "new-pi-9", "name": "Ward 9", "clinic": clinic_a.pk})
    assert response.status_code == 302 and Device.objects.get().clinic == clinic_a
    bad = admin.post(reverse("devices"), {"device_id": "Bad Id!", "name": ""})
    assert bad.status_code == 400 and Device.objects.count() == 1
    letter = DeadLetter.record(
        reason="malformed", topic="steth/v1/devices/x/results", payload=b"{oops", detail="not JSON"
    )
    assert "not JSON" in admin.get(reverse("dead-letters")).content.decode()
    assert "{oops" in admin.get(reverse("dead-letter", args=[letter.pk])).content.decode()


@needs_model
def test_an_upload_is_classified_like_on_a_device(doc, physician, clinic_a, settings, tmp_path):
    from dashboard.clinic.uploads import classifier
    from tests.dashboard.conftest import SAMPLES

    settings.MEDIA_ROOT = tmp_path
    path = SAMPLES / "a0405.flac"
    with path.open("rb") as f:
        response = doc.post(
            reverse("upload"), {"recording": f, "clinic": clinic_a.pk, "patient_ref": "P-7", "location": "aortic"}
        )
    result = Result.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("result", args=[result.result_id])
    expected = classifier(settings.STETH_UPLOAD_MODEL).analyse_file(path)
    assert result.label == expected.label and result.probabilities == pytest.approx(expected.probabilities)
    assert result.model_sha256 == expected.model.sha256 and result.source == "upload"
    assert (result.patient_ref, result.location, result.clinic, result.uploaded_by) == (
        "P-7",
        "aortic",
        clinic_a,
        physician,
    )
    assert result.recording.sha256 and doc.get(reverse("result", args=[result.result_id])).status_code == 200


def test_the_recording_page_says_its_murmur_answer_with_the_models_probability(doc, device_a, make_result):
    result = make_result(device_a, murmur={"label": "present", "probability": 0.83})
    page = doc.get(reverse("result", args=[result.result_id])).content.decode()
    assert 'id="murmur">Murmur: present (model: 83% present)</p>' in page
    assert "Screening support, not a diagnosis" in page
    plain = make_result(device_a)
    assert 'id="murmur"' not in doc.get(reverse("result", args=[plain.result_id])).content.decode()
