"""Refused recordings reach the dashboard: a device's recording that gives no result (empty, unreadable,
too short) is reported through the contract, stored once by ingest, listed per device and counted on the
overview. Silence is not a refusal: it is an *unsure* result saying "silent"."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dashboard.clinic.models import DeadLetter, Device, RefusedRecording, Result
from dashboard.ingest.acks import ack_messages
from dashboard.ingest.handlers import Ingestor
from device.core import contract
from device.core.errors import EmptyAudioError, TooShortError, UnreadableAudioError
from device.edge.refusals import reason_code, refusal_message
from tests.dashboard.workers import Worker, wait_until
from tests.device.daemon_support import DaemonProcess, model_ref, write_config
from tests.support.broker import Broker


def ingestor() -> Ingestor:
    return Ingestor(client_id="svc.ingest.test", auto_register=False, max_audio_bytes=contract.MAX_AUDIO_BYTES)


def refused(device_id: str, **changes: object) -> dict:
    exc = TooShortError("bed-3.flac: 0.50 s is shorter than one 5 s analysis window", "record at least 5 s")
    message = refusal_message(device_id, exc, source="record", recording="/data/bed-3.flac", patient_ref="P-1",
                              site="mitral", duration_s=0.5)  # fmt: skip
    return {**message, **changes}


def test_reason_codes_name_the_error():
    assert reason_code(EmptyAudioError("x")) == "empty"
    assert reason_code(UnreadableAudioError("x")) == "unreadable"
    assert reason_code(TooShortError("x")) == "too_short"
    message = refused("pi-a")
    assert contract.errors("refused", message) == []
    assert message["recording"] == "bed-3.flac"  # the name, never the device's folders


@pytest.mark.django_db
def test_ingest_stores_a_refusal_once_and_acknowledges_it_among_result_ids(device_a):
    message = refused(device_a.device_id)
    topic = contract.refused_topic(device_a.device_id)
    payload = contract.encode("refused", message)
    assert ingestor().handle(topic, payload) == "refused_created"
    assert ingestor().handle(topic, payload) == "refused_duplicate"
    row = RefusedRecording.objects.get()
    assert (row.reason, row.recording, row.patient_ref, row.location, row.clinic) == (
        "too_short", "bed-3.flac", "P-1", "mitral", device_a.clinic)  # fmt: skip
    other = contract.encode("refused", {**message, "reason": "empty"})
    assert ingestor().handle(topic, other) == "dead_conflict"
    assert RefusedRecording.objects.get().reason == "too_short"  # the first is kept
    (ack,) = ack_messages([(topic, payload)], ["refused_duplicate"])
    assert contract.decode("ack", ack[1])["result_ids"] == [message["refusal_id"]]


@pytest.mark.django_db
def test_a_refusal_from_an_unknown_device_or_on_another_devices_topic_is_a_dead_letter(device_a, device_b):
    message = refused(device_a.device_id)
    assert ingestor().handle(contract.refused_topic("stranger"), contract.encode("refused", {
        **message, "device_id": "stranger"})) == "dead_unknown_device"  # fmt: skip
    assert ingestor().handle(contract.refused_topic(device_b.device_id), contract.encode("refused", message)) == (
        "dead_device_mismatch"
    )
    assert ingestor().handle(contract.refused_topic(device_a.device_id), b'{"schema_version": 1}') == "dead_invalid"
    assert RefusedRecording.objects.count() == 0 and DeadLetter.objects.count() == 3


@pytest.mark.django_db
def test_the_refused_page_shows_only_the_devices_a_user_sees(device_a, device_b, nurse_a, admin_user, login):
    for device in (device_a, device_b):
        ingestor().handle(
            contract.refused_topic(device.device_id), contract.encode("refused", refused(device.device_id))
        )
    page = login(admin_user).get("/refused/").content.decode()
    assert device_a.device_id in page and device_b.device_id in page
    page = login(nurse_a).get("/refused/").content.decode()
    assert device_a.device_id in page and device_b.device_id not in page
    page = login(admin_user).get(f"/refused/?device={device_b.device_id}").content.decode()
    assert f'href="?device={device_a.device_id}"' not in page and device_b.device_id in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_refused_recordings_from_a_real_device_appear_on_the_dashboard(tmp_path, samples_dir, admin_user, login):
    """`steth device run` replays a folder with a zero-byte file, a truncated FLAC, a 0.5 s clip, a silent
    recording and a good one, through a real Mosquitto to a real ingest worker: the three refusals are on
    the Refused page and counted on the overview and the Devices page; the silent one is an unsure result."""
    model = model_ref()
    Device.objects.create(device_id="pi-test")
    folder = tmp_path / "recordings"
    folder.mkdir()
    x, rate = sf.read(str(samples_dir / "a0405.flac"), dtype="float32")
    (folder / "empty.flac").write_bytes(b"")
    (folder / "truncated.flac").write_bytes((samples_dir / "a0405.flac").read_bytes()[:3000])
    sf.write(str(folder / "short.wav"), x[: rate // 2], rate, subtype="PCM_16")
    sf.write(str(folder / "silent.wav"), np.zeros(rate * 12, dtype=np.float32), rate, subtype="PCM_16")
    shutil.copy(samples_dir / "a0405.flac", folder / "good.flac")
    broker = Broker(tmp_path / "broker").start()
    worker = Worker(broker.url, "svc.ingest.refused").start().wait_ready()
    audio = f'source = "replay"\nreplay_path = "{folder}"\nreplay_realtime = false\n'
    daemon = DaemonProcess(write_config(tmp_path, broker.url, mode="replay", audio=audio, model=model)).start()
    try:
        wait_until(lambda: RefusedRecording.objects.count() >= 3 and Result.objects.count() >= 2, timeout=180,
                   what=f"three refusals and two results\n{daemon.log[-3000:]}")  # fmt: skip
        time.sleep(1)  # nothing more comes
        reasons = dict(RefusedRecording.objects.values_list("recording", "reason"))
        # a zero-byte file is no WAV or FLAC at all: "unreadable", like a truncated one
        assert reasons == {"empty.flac": "unreadable", "truncated.flac": "unreadable", "short.wav": "too_short"}, (
            reasons
        )
        silent = Result.objects.get(message__quality__issues__icontains="silent")
        assert silent.label == "unsure"
        client = login(admin_user)
        page = client.get("/refused/").content.decode()
        for name in ("empty.flac", "truncated.flac", "short.wav", "too_short", "unreadable"):
            assert name in page
        assert "silent.wav" not in page
        overview = client.get("/").content.decode()
        assert '<strong id="count-refused">3</strong>' in overview
        devices = client.get("/devices/").content.decode()
        assert '<a href="/refused/?device=pi-test">3</a>' in devices
        # the device's outbox empties: ingest acknowledged the refusals like results
        from device.edge.outbox import Outbox

        box = Outbox(tmp_path / "state" / "outbox.sqlite", tmp_path / "run", 1 << 24)
        try:
            wait_until(lambda: box.stats().pending_refused == 0, timeout=60, what="the refusals acknowledged")
            assert box.stats().delivered_refused == 3
        finally:
            box.close()
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        worker.stop()
        broker.stop()


def test_refusal_ids_of_a_replayed_recording_are_stable():
    exc = EmptyAudioError("x")
    a = refusal_message("pi-a", exc, source="replay", recording="f.flac", key="k")
    b = refusal_message("pi-a", exc, source="replay", recording="f.flac", key="k")
    assert a["refusal_id"] == b["refusal_id"] != refusal_message("pi-a", exc, source="replay", recording="f",
                                                                  key=None)["refusal_id"]  # fmt: skip
    assert uuid.UUID(a["refusal_id"])
    assert Path(a["recording"]).name == "f.flac"
