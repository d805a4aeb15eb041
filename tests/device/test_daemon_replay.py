"""The daemon analysing real recordings (replay mode) and delivering every result exactly once.

Runs the shipped screening model (or $STETH_TEST_MODEL) through `steth device run` as a real process,
against a real Mosquitto, on the bundled PhysioNet recordings.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.core import contract
from device.core.inference import load_model
from device.edge.analyser import result_id_for
from device.edge.outbox import Outbox
from tests.device.daemon_support import DaemonProcess, model_ref, write_config
from tests.device.outbox_support import Subscriber, broker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> str:
    return model_ref()


def replay_config(tmp: Path, url: str, folder: Path, model: str, **kwargs) -> Path:
    audio = f'source = "replay"\nreplay_path = "{folder}"\nreplay_realtime = false\n' + kwargs.pop("audio", "")
    return write_config(tmp, url, mode="replay", audio=audio, model=model, **kwargs)


def expected_ids(folder: Path, model_name: str, segments: int = 1) -> dict[str, Path]:
    """The result id each recording must get (derived from the file and the model: never a second one)."""
    out = {}
    for path in sorted(folder.iterdir()):
        st = path.stat()
        for i in range(segments):
            key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}#{i}"
            out[result_id_for("pi-test", key, model_name)] = path
    return out


def test_replaying_real_recordings_delivers_one_valid_result_each(samples_dir, tmp_path, model):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for f in samples_dir.glob("*.flac"):
        shutil.copy(f, folder / f.name)
    clf = load_model(model)
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    daemon = DaemonProcess(replay_config(tmp_path, mosquitto.url, folder, model)).start()
    try:
        ids = expected_ids(folder, clf.info.name)
        assert len(ids) == 6
        assert sub.wait_for(set(ids), timeout=120) == set(), daemon.log[-3000:]
        assert sub.invalid == []
        for rid, path in ids.items():
            result = sub.results[rid]
            assert contract.errors("result", result) == []
            assert result["label"] == clf.analyse_file(path).label  # what `steth classify` says
            assert result["model"]["sha256"] == clf.info.sha256
            assert result["sample_rate"] == 2000 and 9 < result["duration_s"] < 17
        status = sub.status[-1]
        assert status["state"] == "online" and status["models"][0]["sha256"] == clf.info.sha256
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
    assert sub.duplicates == 0


def test_kill_9_mid_stream_and_restart_gives_every_recording_one_result(samples_dir, tmp_path, model):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for copy in range(20):  # 120 recordings: enough that the kill lands mid-stream
        for f in samples_dir.glob("*.flac"):
            shutil.copy(f, folder / f"{copy:02d}-{f.name}")
    clf = load_model(model)
    ids = expected_ids(folder, clf.info.name)
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    config = replay_config(tmp_path, mosquitto.url, folder, model, outbox="max_inflight = 1")
    daemon = DaemonProcess(config).start()
    try:
        assert sub.wait_until(lambda s: len(s.results) >= 5, timeout=120), daemon.log[-3000:]
        daemon.kill9()  # mid-analysis and mid-delivery
        before = len(sub.results)
        assert before < len(ids), "everything was done before the kill; nothing was interrupted"
        mosquitto.stop()  # and the broker goes away too, then comes back while the daemon restarts
        daemon.start()
        time.sleep(2)
        mosquitto.start()
        assert sub.wait_for(set(ids), timeout=180) == set(), daemon.log[-3000:]
        time.sleep(1)  # let anything extra arrive before counting
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
    assert set(sub.results) == set(ids)  # no second, different result for any recording
    assert sub.invalid == []
    print(f"\nkill -9 after {before}/{len(ids)} results; MQTT-level duplicates: {sub.duplicates}")
    # A message may arrive twice (same result_id, which receivers de-duplicate) only if it was in flight
    # at the kill or sent and still awaiting the subscriber's ack then: the restarted daemon says how
    # many those were. (Over the broker restart the broker may also hand the subscriber again what it
    # had not seen acknowledged.) Anything beyond that would be the daemon re-sending settled results.
    awaiting = [int(n) for n in re.findall(r"(\d+) of them sent and awaiting ingest's ack", daemon.log)]
    assert sub.duplicates <= max(awaiting, default=0) + 1, (sub.duplicates, awaiting)
    with Outbox(tmp_path / "state" / "outbox.sqlite", tmp_path / "run" / "outbox-audio", 1 << 30) as box:
        assert box.stats().pending_results == 0


def write_bad_inputs(folder: Path, samples_dir: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    x, rate = sf.read(str(samples_dir / "a0405.flac"), dtype="float32")
    files = {
        "corrupt": folder / "corrupt.wav",
        "silent": folder / "silent.wav",
        "short": folder / "short.wav",
        "stereo48k": folder / "stereo48k.wav",
        "hour": folder / "hour.flac",
        "good": folder / "good.flac",
    }
    files["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    sf.write(str(files["silent"]), np.zeros(rate * 12, dtype=np.float32), rate, subtype="PCM_16")
    sf.write(str(files["short"]), x[: rate // 2], rate, subtype="PCM_16")
    from scipy import signal

    up = signal.resample_poly(x, 24, 1).astype(np.float32)
    sf.write(str(files["stereo48k"]), np.stack([up, 0.8 * up], axis=1), 48000, subtype="PCM_16")
    hour = np.tile(x, int(np.ceil(3600 * rate / len(x))))[: 3600 * rate]
    with sf.SoundFile(str(files["hour"]), "w", rate, 1, subtype="PCM_16", format="FLAC") as f:
        for start in range(0, len(hour), rate * 600):  # written in pieces: the test itself stays small
            f.write(hour[start : start + rate * 600])
    shutil.copy(samples_dir / "a0405.flac", files["good"])
    return files


def test_bad_inputs_get_clear_errors_or_unsure_and_the_daemon_keeps_going(samples_dir, tmp_path, model):
    folder = tmp_path / "recordings"
    files = write_bad_inputs(folder, samples_dir)
    clf = load_model(model)
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    daemon = DaemonProcess(replay_config(tmp_path, mosquitto.url, folder, model)).start()

    def rid(name: str, segment: int = 0) -> str:
        st = files[name].stat()
        return result_id_for(
            "pi-test", f"{files[name].resolve()}|{st.st_size}|{st.st_mtime_ns}#{segment}", clf.info.name
        )

    hour_ids = {rid("hour", i) for i in range(12)}  # 300 s segments
    peak = 0
    try:
        wanted = {rid("silent"), rid("stereo48k"), rid("good")} | hour_ids
        deadline = time.monotonic() + 300
        while sub.wait_for(wanted, timeout=0.5) and time.monotonic() < deadline:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log[-3000:]
            peak = max(peak, daemon.peak_rss_kib())
        assert sub.wait_for(wanted, timeout=1) == set(), daemon.log[-3000:]
        peak = max(peak, daemon.peak_rss_kib())
        log = daemon.log
        assert f"recording not analysed: {files['corrupt']}: not a readable WAV or FLAC" in log
        assert f"recording not analysed: {files['short']}: 0.50 s is shorter than the 2 s minimum" in log
        silent = sub.results[rid("silent")]
        assert silent["label"] == "unsure" and not silent["quality"]["ok"] and silent["quality"]["issues"]
        stereo = sub.results[rid("stereo48k")]
        assert stereo["sample_rate"] == 48000 and stereo["label"] in contract.SCREENING_LABELS
        hour = [sub.results[i] for i in hour_ids]
        assert sorted(round(r["duration_s"]) for r in hour) == [300] * 12
        assert all(contract.errors("result", r) == [] for r in hour)
        assert sub.results[rid("good")]["label"] == clf.analyse_file(files["good"]).label
        assert daemon.proc is not None and daemon.proc.poll() is None  # still running
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
    print(f"\npeak RSS of the daemon through the bad inputs and the 1-hour file: {peak / 1024:.0f} MiB")
    # Bounded: the whole hour at once would need several hundred MiB more (window stack + STFT).
    assert peak < 700 * 1024


def test_sigterm_mid_file_stores_what_is_done_and_a_restart_finishes_it(samples_dir, tmp_path, model):
    folder = tmp_path / "recordings"
    files = write_bad_inputs(folder, samples_dir)
    for name in ("corrupt", "silent", "short", "stereo48k", "good"):
        files[name].unlink()
    clf = load_model(model)
    st = files["hour"].stat()
    base = f"{files['hour'].resolve()}|{st.st_size}|{st.st_mtime_ns}"
    ids = [result_id_for("pi-test", f"{base}#{i}", clf.info.name) for i in range(60)]  # 60 s segments
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    config = replay_config(tmp_path, mosquitto.url, folder, model, audio="max_segment_s = 60\n")
    daemon = DaemonProcess(config).start()
    try:
        assert sub.wait_until(lambda s: len(s.results) >= 5, timeout=120), daemon.log[-3000:]
        assert daemon.terminate() == 0  # mid-file
        done_before = len(sub.results)
        assert done_before < 60, "the whole file was done before SIGTERM"
        daemon.start()
        assert sub.wait_for(set(ids), timeout=180) == set(), daemon.log[-3000:]
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
    assert set(sub.results) == set(ids) and sub.duplicates == 0
    assert daemon.log.count("signal SIGTERM: stopping") == 2 and "Traceback" not in daemon.log


def test_audio_is_uploaded_as_flac_matching_the_result(samples_dir, tmp_path, model):
    import hashlib
    import io

    from device.core.audio_io import read_audio

    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in ("a0405.flac", "d0016.flac"):
        shutil.copy(samples_dir / name, folder / name)
    ram = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    transient = ram / f"steth-test-{tmp_path.name}"
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port, topics=(contract.ALL_RESULTS, contract.ALL_STATUS, contract.ALL_AUDIO))
    config = replay_config(tmp_path, mosquitto.url, folder, model, audio="send_audio = true\n", transient=transient)
    daemon = DaemonProcess(config).start()
    try:
        ids = expected_ids(folder, load_model(model).info.name)
        assert sub.wait_until(lambda s: set(ids) <= set(s.audio), timeout=120), daemon.log[-3000:]
        for rid, path in ids.items():
            meta = sub.results[rid]["audio"]
            flac = sub.audio[rid]
            assert meta["format"] == "flac" and meta["bytes"] == len(flac)
            assert meta["sha256"] == hashlib.sha256(flac).hexdigest()
            np.testing.assert_array_equal(read_audio(io.BytesIO(flac)).samples, read_audio(path).samples)
        # uploaded, then gone from RAM: the file goes when the device gets the ack the subscriber sends on
        # receipt, a moment after the subscriber has the audio (one CI run stopped the daemon in between)
        leftover = lambda: list((transient / "outbox-audio").glob("*.flac"))  # noqa: E731
        deadline = time.monotonic() + 30
        while leftover() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not leftover()
        assert daemon.terminate() == 0
        assert "not tmpfs" not in daemon.log or ram == tmp_path
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
        shutil.rmtree(transient, ignore_errors=True)


def test_the_start_path_imports_neither_librosa_nor_tensorflow(tmp_path, model):
    import subprocess
    import sys

    config = write_config(tmp_path, "mqtt://127.0.0.1:9", model=model)
    code = (
        "import sys, time\n"
        "t = time.monotonic()\n"
        "from device.edge.config import load\nfrom device.edge.daemon import Daemon\n"
        f"d = Daemon(load({str(config)!r}))\nd.start()\n"
        "print(round(time.monotonic() - t, 2), 'librosa' in sys.modules, 'tensorflow' in sys.modules)\n"
        "d.stop()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seconds, librosa, tensorflow = proc.stdout.split()
    print(f"\ndaemon start (deliver mode, model loaded): {seconds} s")
    assert (librosa, tensorflow) == ("False", "False")
