"""scripts/demo.sh as a new user runs it: output piped (`| tee demo.log`), then Ctrl-C. Every part it
started must be gone; its results arrive as two patients' exams by site, "recorded" when replayed; a
fresh run replays only the bundled recordings. Takes about 2-3 minutes (the first results wait for
ingest's ack timeout, issue 13)."""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.broker import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
UP_S = 240  # start-up and the six results on a busy 2-core machine
STOP_S = 90  # the demo's own patience: up to 10 s per part, four parts, and the device's drain


def marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker``: everything the demo started, whatever its session."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker.encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def sessions(pids: list[int]) -> set[int]:
    out = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            out.add(os.getsid(pid))
    return out


def demo_env(tmp_path: Path, marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STETH_", "DJANGO_", "DATABASE_", "DEMO_"))}
    env.update(
        DEMO_DIR=str(tmp_path / "demo"),
        DEMO_VENV=str(Path(sys.executable).parent.parent),  # the installed environment running the tests
        DEMO_HTTP_PORT=str(free_port()),
        DEMO_MQTT_TLS_PORT=str(free_port()),
        DEMO_MQTT_PORT=str(free_port()),
        PYTHONPATH=str(REPO),  # this checkout's code, whichever checkout the environment was installed from
        STETH_DEMO_TEST=marker.split("=", 1)[1],
    )
    return env


def test_ctrl_c_on_a_piped_demo_stops_everything_it_started(tmp_path):
    if not Path(sys.executable).with_name("steth").exists():
        pytest.skip("the steth command is not installed in this environment")
    marker = f"STETH_DEMO_TEST={uuid.uuid4().hex}"
    demo = tmp_path / "demo"
    # a recording left in the replay folder by an earlier run: a fresh run must not replay it
    (demo / "replay").mkdir(parents=True)
    (demo / "replay" / "left-from-before.flac").write_bytes((REPO / "device" / "samples" / "a0405.flac").read_bytes())
    started = time.time()
    # As in a terminal: `bash scripts/demo.sh | tee demo.log` is one foreground process group; Ctrl-C is
    # SIGINT to that whole group (here the group of a new session, so the test's own group is spared).
    shell = subprocess.Popen(
        ["bash", "-c", "bash scripts/demo.sh --no-setup | cat"],
        cwd=REPO,
        env=demo_env(tmp_path, marker),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # a shell started with SIGINT ignored could never trap it (e.g. pytest run as a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - one syscall
    )
    lines: list[str] = []
    try:
        assert shell.stdout is not None
        deadline = time.monotonic() + UP_S
        for line in shell.stdout:
            lines.append(line)
            if "demo: 6 result(s) on the dashboard" in line or time.monotonic() > deadline:
                break
        out = "".join(lines)
        assert "demo: 6 result(s) on the dashboard" in out, out[-3000:]
        parts = marked(marker)
        # broker, dashboard, ingest and device, each in a session of its own, besides the demo's
        assert len(sessions(parts) - {shell.pid}) >= 4, (parts, out[-2000:])
        os.killpg(shell.pid, signal.SIGINT)  # Ctrl-C: cat (tee) dies at once, then the script writes on
        shell.wait(STOP_S)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
        left = marked(marker)
        for pid in left:  # never leave them running after a failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == [], f"still running after Ctrl-C: {left}\n{out[-2000:]}"

    # a nurse's and a physician's login, printed
    assert re.search(r"physician +user: demo +password: \S+", out), out
    assert re.search(r"nurse +user: nurse +password: \S+", out), out
    # the bundled recordings only, as two patients' exams by site, recorded when they were replayed
    db = sqlite3.connect(demo / "dashboard" / "dashboard.sqlite3")
    rows = db.execute("SELECT patient_ref, location, recorded_at, message FROM clinic_result").fetchall()
    db.close()
    assert len(rows) == 6
    exams = {(p, json.loads(m).get("exam_id")) for p, _, _, m in rows}
    assert exams == {("P-DEMO-01", "demo-exam-01"), ("P-DEMO-02", "demo-exam-02")}
    assert all(site in ("aortic", "pulmonic", "tricuspid", "mitral") for _, site, _, _ in rows)
    for _, _, recorded, _ in rows:
        at = calendar.timegm(time.strptime(recorded[:19], "%Y-%m-%d %H:%M:%S"))  # stored in UTC
        assert at >= started - 1, f"recorded {recorded}: the file's time, not when it was replayed"
    assert not (demo / "replay" / "left-from-before.flac").exists()
