"""Exams, the worklist and the phone layout in a real browser (Debian's headless Chromium via Playwright),
at a desktop width and at 390 px (a phone). Screenshots go to artifacts/screenshots/ (gitignored)."""

from __future__ import annotations

import re

import pytest

from dashboard.clinic.models import Exam, ExamReview
from tests.dashboard.test_browser import browser as browser  # noqa: PLC0414 - the module-scoped fixture, reused
from tests.dashboard.test_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 860}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 2,
    },
}
RHYTHM = "no clear heartbeat rhythm: hold still, reduce noise, place the stethoscope firmly"
UNSURE_TEXT = "Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal"
CYCLES = {"s1": [0.3, 1.1, 1.9, 2.7], "s2": [0.6, 1.4, 2.2]}


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser, live_server):
    context = browser.new_context(base_url=live_server.url, **VIEWPORTS[request.param])
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.width_name = request.param
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def no_sideways_scroll(page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways at {width[1]} px: {width[0]} px wide"


def small_tap_targets(page) -> list[str]:
    """Buttons, form controls, navigation and worklist links under 44 px (inline text links excepted)."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('button, input:not([type=hidden]):not([type=radio]), '
              + 'select, textarea, header a, .exam-link, summary, .button'))
            .filter(el => el.offsetParent !== null)
            .map(el => [el, el.getBoundingClientRect()])
            .filter(([el, r]) => r.height < 44 || r.width < 44)
            .map(([el, r]) => el.outerHTML.slice(0, 80) + ' ' + Math.round(r.width) + 'x' + Math.round(r.height))"""
    )


def make_exam(make_result, device, sample_flac, exam_id="EX-B1", patient="P-EXAM"):
    sites = {
        "aortic": {"label": "normal", "probabilities": {"normal": 0.86, "abnormal": 0.14}},
        "pulmonic": {"label": "normal", "probabilities": {"normal": 0.8, "abnormal": 0.2}},
        "tricuspid": {
            "label": "unsure",
            "probabilities": {"normal": 0.11, "abnormal": 0.89},
            "quality": {"score": 0.2, "ok": False, "issues": [RHYTHM]},
        },
        "mitral": {
            "label": "abnormal",
            "probabilities": {"normal": 0.08, "abnormal": 0.92},
            "murmur": {"label": "present", "probability": 0.83},
        },
    }
    for site, fields in sites.items():
        make_result(device, audio=sample_flac, exam_id=exam_id, site=site, patient_ref=patient, cycles=CYCLES, **fields)
    return Exam.objects.get(exam_id=exam_id)


def test_the_exam_page_shows_each_site_with_marks_and_plays_one_at_a_time(
    page, physician, device_a, make_result, sample_flac, screenshots
):
    exam = make_exam(make_result, device_a, sample_flac)
    log_in(page, physician.username)
    page.wait_for_selector("#worklist")
    page.goto(f"/exams/{exam.pk}/")
    for i in range(4):
        page.wait_for_selector(f'.site-wave[data-index="{i}"][data-ready=true]')
    sites = page.eval_on_selector_all(".site", "els => els.map(e => e.dataset.site)")
    assert sites == ["aortic", "pulmonic", "tricuspid", "mitral"]
    marks = page.evaluate(
        "() => window.stethExamPlayers.map(p => p.getWrapper().querySelectorAll('line.mark-s1, line.mark-s2').length)"
    )
    assert marks == [7, 7, 7, 7]
    assert "Murmur present, heard at mitral (model: 83% present)" in page.inner_text("#exam-murmur")
    assert UNSURE_TEXT in page.inner_text('.site[data-site="tricuspid"]')
    # mean over the usable sites (0.14, 0.2, 0.92): normal, with the one abnormal site named
    assert "Normal, model: 58% normal over the usable sites (mitral alone said abnormal" in page.inner_text(
        "#exam-answer"
    )
    if page.width_name == "phone":  # stacked: each site as wide as the screen allows
        boxes = page.eval_on_selector_all(".site", "els => els.map(e => e.getBoundingClientRect().left)")
        assert len(set(round(x) for x in boxes)) == 1
    else:  # side by side
        tops = page.eval_on_selector_all(".site", "els => els.map(e => Math.round(e.getBoundingClientRect().top))")
        assert len(set(tops)) < 4
    no_sideways_scroll(page)
    assert small_tap_targets(page) == []
    page.screenshot(path=screenshots / f"exam-{page.width_name}.png", full_page=True)

    page.click('.site-play[data-index="3"]')
    page.wait_for_function("() => window.stethExamPlayers[3].getCurrentTime() > 0.2", timeout=15_000)
    page.click('.site-play[data-index="0"]')
    page.wait_for_function("() => window.stethExamPlayers[0].isPlaying() && !window.stethExamPlayers[3].isPlaying()")
    page.click('.site-play[data-index="0"]')

    # a review refused for its missing label comes back with the note as typed
    note = "Pansystolic murmur at the apex on re-listening."
    page.check("#exam-review-form input[name=verdict][value=disagree]")
    page.fill("#exam-review-form textarea[name=note]", note)
    page.click("#exam-review-form button[type=submit]")
    error = page.wait_for_selector("#exam-review-form #review-error")  # beside the form, not only at the top
    assert "choose your own label" in error.inner_text()
    assert page.input_value("#exam-review-form textarea[name=note]") == note
    assert page.is_checked("#exam-review-form input[name=verdict][value=disagree]")
    page.screenshot(path=screenshots / f"exam-review-refused-{page.width_name}.png", full_page=True)
    # the exam says normal (its one abnormal site outvoted): the physician, hearing the murmur, says abnormal
    page.select_option("#exam-review-form select[name=label]", "abnormal")
    page.click("#exam-review-form button[type=submit]")
    page.wait_for_selector("text=Review saved.")
    review = ExamReview.objects.get()
    assert (review.agrees, review.label, review.note) == (False, "abnormal", note)


def test_the_worklist_orders_exams_and_says_why_on_any_width(
    page, physician, device_a, make_result, sample_flac, screenshots
):
    done = make_exam(make_result, device_a, sample_flac, exam_id="EX-DONE", patient="P-DONE")
    ExamReview.objects.create(exam=done, reviewer=physician, agrees=True, label="abnormal")
    unsure = make_result(
        device_a,
        exam_id="EX-U",
        patient_ref="P-U",
        label="unsure",
        probabilities={"normal": 0.11, "abnormal": 0.89},
        quality={"score": 0.2, "ok": False, "issues": [RHYTHM]},
    )
    normal = make_result(
        device_a, exam_id="EX-N", patient_ref="P-N", label="normal", probabilities={"normal": 0.9, "abnormal": 0.1}
    )
    finding = make_exam(make_result, device_a, sample_flac, exam_id="EX-F", patient="P-F")
    log_in(page, physician.username)
    page.wait_for_selector("#worklist")
    order = page.eval_on_selector_all("#worklist li", "els => els.map(e => Number(e.dataset.exam))")
    assert order == [finding.pk, normal.exam_id, unsure.exam_id, done.pk]
    items = page.eval_on_selector_all("#worklist li", "els => els.map(e => e.innerText)")
    assert "murmur heard at mitral" in items[0] and "to review" in items[0]
    assert UNSURE_TEXT in items[2] and "reviewed" in items[3]
    assert page.locator("svg[data-chart=exams-per-day] rect.bar").count() >= 2
    no_sideways_scroll(page)
    assert small_tap_targets(page) == []
    page.screenshot(path=screenshots / f"worklist-{page.width_name}.png", full_page=True)

    # a result arriving while the page is open: same time format as the server's, in the clinic's zone
    server_times = page.eval_on_selector_all("#feed time", "els => els.map(e => e.textContent)")
    page.evaluate("window.__notReloaded = true")
    live_result = make_result(device_a, patient_ref="P-LIVE", label="unsure",
                              probabilities={"normal": 0.11, "abnormal": 0.89},
                              quality={"score": 0.2, "ok": False, "issues": [RHYTHM]})  # fmt: skip
    page.wait_for_selector("#feed tr.new", timeout=15_000)
    # the worklist follows without a reload: the new unsure exam first among the unsure ones
    page.wait_for_function("document.querySelectorAll('#worklist li[data-exam]').length === 5")
    order = page.eval_on_selector_all("#worklist li", "els => els.map(e => Number(e.dataset.exam))")
    assert order == [finding.pk, normal.exam_id, live_result.exam_id, unsure.exam_id, done.pk]
    assert page.evaluate("window.__notReloaded") is True
    assert re.search(r"Patient P-LIVE · \d{4}-\d{2}-\d{2} \d{2}:\d{2} · clinic-a-pi-01", page.inner_text("#worklist"))
    live = page.inner_text("#feed tr.new time")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", live), live
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", t) for t in server_times), server_times
    assert UNSURE_TEXT in page.inner_text("#feed tr.new")
    no_sideways_scroll(page)
    page.screenshot(path=screenshots / f"overview-live-{page.width_name}.png", full_page=True)


def test_the_recording_page_banner_never_covers_the_findings_and_frequencies_stay_readable(
    page, physician, device_a, make_result, sample_flac, screenshots
):
    result = make_result(
        device_a,
        audio=sample_flac,
        patient_ref="P-R",
        label="unsure",
        probabilities={"normal": 0.11, "abnormal": 0.89},
        quality={"score": 0.2, "ok": False, "issues": [RHYTHM]},
    )
    log_in(page, physician.username)
    page.wait_for_selector("#worklist")
    page.goto(f"/results/{result.result_id}/")
    page.wait_for_selector("#waveform[data-ready=true]")
    assert page.inner_text("#answer") == UNSURE_TEXT
    advice = page.inner_text("#advice")
    assert advice.lower().count("record again") == 1, advice
    for block in ("start", "center", "end"):
        findings = "document.evaluate(\"//h2[text()='Findings']\", document).iterateNext()"
        page.evaluate(f"{findings}.scrollIntoView({{block: '{block}'}})")
        overlap = page.evaluate(
            """() => {
              const h = document.evaluate("//h2[text()='Findings']", document).iterateNext().getBoundingClientRect();
              const b = document.getElementById('notice').getBoundingClientRect();
              return !(b.bottom <= h.top || b.top >= h.bottom) && b.bottom > 0 && b.top < window.innerHeight;
            }"""
        )
        assert not overlap, f"the banner covers the Findings heading (scrolled to {block})"
    page.evaluate("window.scrollTo(0, 0)")

    def axis_labels():
        return page.evaluate(
            """() => {
              const box = document.getElementById('waveform').getBoundingClientRect();
              return Array.from(document.querySelectorAll('[data-testid=frequency-axis] span')).map(s => {
                const r = s.getBoundingClientRect();
                const bg = getComputedStyle(s).backgroundColor;
                return {text: s.textContent, inside: r.left >= box.left && r.right <= box.right && r.top >= box.top
                        && r.bottom <= box.bottom, height: r.height, bg: bg};
              });
            }"""
        )

    # the frequency axis is drawn once the spectrogram is (after the waveform): wait for it
    page.wait_for_selector("[data-testid=frequency-axis] span", state="attached", timeout=30_000)
    labels = axis_labels()
    assert [item["text"] for item in labels] == ["1000 Hz", "750 Hz", "500 Hz", "250 Hz", "0 Hz"]
    assert all(item["inside"] and item["height"] >= 12 and item["bg"] != "rgba(0, 0, 0, 0)" for item in labels), labels
    page.click("#zoom-in")
    page.click("#zoom-in")
    page.evaluate("window.stethPlayer.setScrollTime(3)")
    page.wait_for_timeout(300)
    assert [item["text"] for item in axis_labels() if item["inside"]] == [
        "1000 Hz",
        "750 Hz",
        "500 Hz",
        "250 Hz",
        "0 Hz",
    ]
    no_sideways_scroll(page)
    assert small_tap_targets(page) == []
    page.screenshot(path=screenshots / f"recording-zoomed-{page.width_name}.png", full_page=True)


def test_lists_become_cards_on_a_phone(page, physician, device_a, make_result, screenshots):
    for i in range(3):
        make_result(device_a, patient_ref=f"P-LIST-{i}", heart_rate_bpm=70.0 + 10 * i,
                    recorded_at=f"2026-11-0{i + 1}T10:00:00Z")  # fmt: skip
    make_result(device_a, patient_ref="P-LIST-0", label="unsure", probabilities={"normal": 0.11, "abnormal": 0.89},
                quality={"score": 0.2, "ok": False, "issues": [RHYTHM]})  # fmt: skip
    log_in(page, physician.username)
    page.wait_for_selector("#worklist")
    for path, name in (("/results/", "results"), ("/patients/clinic-a/P-LIST-0/", "patient")):
        page.goto(path)
        assert UNSURE_TEXT in page.inner_text("main")
        # every percentage names what it is the probability of ("89% abnormal"), none stands alone
        assert not re.search(r"\d+%(?!\s[a-z])", page.inner_text("main")), f"a bare percentage on {path}"
        no_sideways_scroll(page)
        assert small_tap_targets(page) == []
        page.screenshot(path=screenshots / f"{name}-{page.width_name}.png", full_page=True)
    assert page.locator("svg[data-chart=heart-rate] circle").count() == 2


def test_the_admin_pages_fit_a_phone_too(page, admin_user, device_a, screenshots):
    from dashboard.clinic.models import DeadLetter

    DeadLetter.record(reason="invalid", topic="steth/v1/devices/clinic-a-pi-01/results/" + "x" * 80,
                      payload=b'{"schema_version": 1}', detail="result: 'label' is a required property " * 4,
                      device_id="clinic-a-pi-01")  # fmt: skip
    log_in(page, admin_user.username)
    page.wait_for_selector("#devices")
    for path, name in (("/devices/", "devices"), ("/dead-letters/", "dead-letters")):
        page.goto(path)
        no_sideways_scroll(page)
        assert small_tap_targets(page) == []
        assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}|never", page.inner_text("main"))
        page.screenshot(path=screenshots / f"{name}-{page.width_name}.png", full_page=True)
