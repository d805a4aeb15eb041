"""The pages in a real browser (Debian's headless Chromium, driven by Playwright), with a real broker,
a real ingest worker and the live Django server. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from dashboard.clinic.models import Result, Review
from device.core import contract
from tests.dashboard.conftest import PASSWORD, SAMPLES, needs_model, result_message
from tests.dashboard.workers import Publisher, Worker
from tests.support.broker import Broker

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
VENDOR = Path(__file__).resolve().parents[2] / "dashboard" / "front" / "static" / "vendor" / "wavesurfer"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh does)")
    assert (VENDOR / "wavesurfer.min.js").exists(), "wavesurfer is not vendored: run scripts/setup.sh (npm ci)"
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop; the ORM calls in these tests are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server):
    # A tablet in landscape: the layout the nurses and physicians use on the ward.
    context = browser.new_context(viewport={"width": 1180, "height": 820}, base_url=live_server.url)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def log_in(page, username: str) -> None:
    page.goto("/")
    assert "/login/" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_a_physician_watches_a_result_arrive_listens_and_reviews_it(
    page, broker, device_a, physician, sample_flac, screenshots
):
    worker = Worker(broker.url, "svc.ingest.browser").start().wait_ready()
    device = Publisher(broker.url)
    try:
        log_in(page, physician.username)
        page.wait_for_selector("#feed")
        page.evaluate("window.__notReloaded = true")

        digest = hashlib.sha256(sample_flac).hexdigest()
        msg = result_message(
            patient_ref="P-LIVE-1",
            heart_rate_bpm=81.0,
            duration_s=9.2,
            sample_rate=2000,
            windows=[
                {"start_s": 0.0, "probabilities": {"normal": 0.3, "abnormal": 0.7}},
                {"start_s": 2.5, "probabilities": {"normal": 0.6, "abnormal": 0.4}},
            ],
            audio={"format": "flac", "sha256": digest, "bytes": len(sample_flac)},
        )
        status = {**contract.EXAMPLE_STATUS, "device_id": device_a.device_id}
        device.publish(contract.status_topic(device_a.device_id), contract.encode("status", status), retain=True)
        device.publish(contract.audio_topic(device_a.device_id, msg["result_id"]), sample_flac)
        device.publish(contract.results_topic(device_a.device_id), contract.encode("result", msg))

        row = page.wait_for_selector(f'tr[data-result="{msg["result_id"]}"]', timeout=20_000)
        assert page.evaluate("window.__notReloaded") is True, "the page reloaded instead of updating"
        assert "abnormal" in row.inner_text() and "P-LIVE-1" in row.inner_text()
        page.wait_for_function(
            "document.querySelector('tr[data-device=clinic-a-pi-01] .state').textContent === 'online'"
        )
        # "Last seen" after a live refresh: the same format as every other time on the page
        page.wait_for_selector("tr[data-device=clinic-a-pi-01] .last-seen time")
        seen = page.inner_text("tr[data-device=clinic-a-pi-01] .last-seen")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", seen), seen
        assert page.inner_text("#count-abnormal") == "1"
        page.screenshot(path=screenshots / "overview-live-feed.png", full_page=True)

        row.query_selector("a").click()
        page.wait_for_selector("#waveform[data-ready=true]")
        canvases = page.locator("#waveform canvas").count()
        assert canvases >= 2, f"expected waveform and spectrogram canvases, found {canvases}"
        assert page.locator("[data-testid=probability-track] rect.win").count() == 2
        assert "81 bpm" in page.inner_text("#heart-rate") and "0" * 64 in page.inner_text("#model")
        assert "Screening support, not a diagnosis" in page.inner_text("body")
        page.screenshot(path=screenshots / "recording-detail.png", full_page=True)

        width = page.evaluate("window.stethPlayer.getWrapper().scrollWidth")
        page.click("#zoom-in")
        page.click("#zoom-in")
        page.wait_for_function(f"() => window.stethPlayer.getWrapper().scrollWidth > {width}")

        page.click("#play")
        page.wait_for_function("() => window.stethPlayer.getCurrentTime() > 0.3", timeout=15_000)
        assert page.get_attribute("#waveform", "data-playing") == "true"
        page.click("#play")
        page.screenshot(path=screenshots / "recording-zoomed-playing.png", full_page=False)

        page.check("input[name=verdict][value=disagree]")
        page.select_option("select[name=label]", "normal")
        page.fill("textarea[name=note]", "Physiological splitting; no murmur on re-listening.")
        page.click("text=Save review")
        page.wait_for_selector("text=Review saved.")
        assert "no murmur on re-listening" in page.inner_text("body")
        review = Review.objects.get()
        assert (review.agrees, review.label, review.reviewer) == (False, "normal", physician)
        page.screenshot(path=screenshots / "recording-reviewed.png", full_page=True)

        page.click("dd >> a:has-text('P-LIVE-1')")
        page.wait_for_selector("ol.timeline li")
        assert "reviewed: normal by dr-house" in page.inner_text("ol.timeline")
        page.screenshot(path=screenshots / "patient-timeline.png", full_page=True)
    finally:
        device.close()
        worker.stop()


@needs_model
def test_a_nurse_uploads_a_recording_and_sees_its_result(page, nurse_a, tmp_path, screenshots):
    log_in(page, nurse_a.username)
    page.goto("/upload/")
    fake = tmp_path / "scan.wav"
    fake.write_bytes(b"%PDF-1.7\n" + b"1 0 obj << >> endobj\n" * 100)
    page.set_input_files("input[name=recording]", str(fake))
    page.click("text=Upload and classify")
    assert "“scan.wav” is not a WAV or FLAC recording" in page.inner_text("#error-recording")
    page.screenshot(path=screenshots / "upload-refused.png", full_page=True)

    page.set_input_files("input[name=recording]", str(SAMPLES / "a0405.flac"))
    page.fill("input[name=patient_ref]", "P-UPLOAD-1")
    page.select_option("select[name=location]", "mitral")
    page.click("text=Upload and classify")
    page.wait_for_url(re.compile(r"/results/[0-9a-f-]{36}/$"))
    page.wait_for_selector("#waveform[data-ready=true]")
    result = Result.objects.get()
    assert result.source == "upload" and result.uploaded_by == nurse_a and result.clinic == nurse_a.profile.clinic
    assert result.label in ("normal", "abnormal", "unsure") and result.recording.format == "flac"
    body = page.inner_text("body")
    assert "classified" in body and result.model_sha256 in body and "Screening support" in body
    page.screenshot(path=screenshots / "upload-result.png", full_page=True)


def test_a_nurse_cannot_reach_admin_pages(page, nurse_a, screenshots):
    log_in(page, nurse_a.username)
    page.wait_for_selector("#feed")
    nav = page.inner_text("header nav")
    assert "Devices" not in nav and "Dead letters" not in nav and "Upload" in nav
    for path in ("/devices/", "/dead-letters/"):
        response = page.goto(path)
        assert response.status == 403 and page.is_visible("#forbidden"), path
    page.screenshot(path=screenshots / "nurse-forbidden.png", full_page=True)
    page.goto("/admin/")
    assert "/admin/login/" in page.url
