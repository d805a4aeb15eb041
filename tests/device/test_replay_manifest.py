"""A replay manifest says whose recording each replayed file is, at which site, in which exam; a demo's
results then arrive as exams, recorded when they were replayed."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from device.core import contract
from device.core.inference import load_model
from device.edge.replay_manifest import Listed, ManifestError, load
from tests.device.daemon_support import DaemonProcess, model_ref, write_config
from tests.device.outbox_support import Subscriber, broker
from tests.device.test_daemon_replay import expected_ids

DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "device" / "samples" / "demo-exams.csv"


def test_the_demo_manifest_lists_every_bundled_recording_as_two_patients_exams(samples_dir):
    listed = load(DEMO_MANIFEST)
    assert set(listed) == {p.name for p in samples_dir.glob("*.flac")}
    exams = {(x.exam_id, x.patient_ref) for x in listed.values()}
    assert len(exams) == 2 and len({p for _, p in exams}) == 2
    for exam, _ in exams:  # within an exam, each site once
        sites = [x.site for x in listed.values() if x.exam_id == exam]
        assert len(sites) == len(set(sites)) >= 3 and "unknown" not in sites


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("a.flac,Jane Doe,mitral,e1", "line 2: patient_ref 'Jane Doe'"),
        ("a.flac,P-1,elbow,e1", "line 2: site 'elbow'"),
        ("a.flac,P-1,mitral,exam one", "line 2: exam_id 'exam one'"),
        ("../a.flac,P-1,mitral,e1", "line 2: file '../a.flac'"),
        ("a.flac,P-1,mitral,e1\na.flac,P-1,aortic,e1", "line 3: a.flac is listed twice"),
    ],
)
def test_a_bad_row_refuses_the_manifest_naming_the_line(tmp_path, row, says):
    path = tmp_path / "m.csv"
    path.write_text(f"file,patient_ref,site,exam_id\n{row}\n")
    with pytest.raises(ManifestError, match=says.replace("(", r"\(").replace(".", r"\.")):
        load(path)


def test_empty_columns_mean_no_patient_site_unknown_and_no_exam(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("file,patient_ref,site,exam_id\nb.wav,,,\n")
    assert load(path) == {"b.wav": Listed(None, "unknown", None)}
    path.write_text("name,patient\nb.wav,P-1\n")
    with pytest.raises(ManifestError, match="the first line must be file,patient_ref,site,exam_id"):
        load(path)


@pytest.mark.slow
def test_the_daemon_replays_a_manifest_as_exams_recorded_when_replayed(samples_dir, tmp_path):
    model = model_ref()
    folder = tmp_path / "replay"
    folder.mkdir()
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp()
    for f in samples_dir.glob("*.flac"):
        shutil.copy(f, folder / f.name)
        os.utime(folder / f.name, (old, old))  # copied long ago: "recorded" must not say 2020
    shutil.copy(DEMO_MANIFEST, folder / "manifest.csv")  # beside the recordings: not itself replayed
    audio = (
        f'source = "replay"\nreplay_path = "{folder}"\nreplay_realtime = false\n'
        f'replay_manifest = "{folder / "manifest.csv"}"\nreplay_recorded_at = "replayed"\n'
    )
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    started = dt.datetime.now(dt.UTC)
    daemon = DaemonProcess(write_config(tmp_path, mosquitto.url, mode="replay", audio=audio, model=model)).start()
    try:
        ids = expected_ids(folder, load_model(model).info.name)
        ids = {rid: path for rid, path in ids.items() if path.suffix == ".flac"}
        assert sub.wait_for(set(ids), timeout=180) == set(), daemon.log[-3000:]
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
    listed = load(DEMO_MANIFEST)
    for rid, path in ids.items():
        result = sub.results[rid]
        assert contract.errors("result", result) == []
        want = listed[path.name]
        assert (result["patient_ref"], result["site"], result["exam_id"]) == (want.patient_ref, want.site, want.exam_id)
        recorded = dt.datetime.fromisoformat(result["recorded_at"].replace("Z", "+00:00"))
        assert started - dt.timedelta(seconds=1) <= recorded <= dt.datetime.now(dt.UTC)
    assert sub.duplicates == 0 and len(sub.results) == 6
