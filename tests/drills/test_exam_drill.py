"""An exam recorded at the bedside (`steth record --sites`, into the device's outbox) while the system is
under faults: every site's result must reach PostgreSQL exactly once, with its exam id and site, like
any single recording; an exam stopped with Ctrl-C keeps, and delivers once, the sites it had recorded.

Light form only (CI): one device, two ingest workers; the broker restarted, the device daemon killed
with SIGKILL, the device's link cut and stalled, an ingest worker killed, the database link cut, all
while the nurse is recording.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.drills.system import REPO, STETH, System, create_database, psql

pytestmark = [pytest.mark.drill, pytest.mark.slow, pytest.mark.timeout(1200)]

SAMPLES = REPO / "device" / "samples"
SITES = "aortic,pulmonic,tricuspid,mitral"
DEVICE = "drill-pi-1"


@pytest.fixture
def system(tmp_path):
    if not any((REPO / "device" / "models").glob("*.tflite")):
        pytest.skip("no shipped model in device/models")
    database = create_database("steth_exam_drill")
    if database is None:
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is needed (bash scripts/services.sh)")
    s = System(tmp_path, database, devices=1, workers=2)
    try:
        yield s.start()
    finally:
        s.close()


def bedside_exam(s: System, exam_id: str, answers: list[str]) -> subprocess.Popen[str]:
    """The nurse's exam on the device: its configuration, its outbox, recordings replayed per site."""
    config = s.root / "bundles" / DEVICE / "device.toml"
    files = [SAMPLES / name for name in ("a0405.flac", "a0296.flac", "d0016.flac", "e00008.flac")]
    replay = [arg for f in files for arg in ("--replay", str(f))]
    args = [*STETH, "record", "--patient", "P-DRILL-1", "--sites", SITES, "--seconds", "5", "--countdown", "0",
            "--exam-id", exam_id, "--config", str(config), "--json", *replay]  # fmt: skip
    script = s.root / f"{exam_id}.answers"  # the nurse's answers, one a line (stdin)
    script.write_text("".join(a + "\n" for a in answers))
    with script.open() as stdin:
        # Ctrl-C as at a terminal: a test run started as a background job (`pytest ... &`) has SIGINT ignored,
        # and an ignored signal stays ignored in every child, so the nurse's Ctrl-C would never arrive
        return subprocess.Popen(args, cwd=REPO, env=s.devices[DEVICE].env, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509  # fmt: skip


def stored_of(s: System, exam_id: str) -> list[tuple[str, str]]:
    """(result_id, site) of every row of the exam in PostgreSQL, duplicates included."""
    rows = psql(s.database, f"SELECT result_id, location FROM clinic_result WHERE message->>'exam_id' = '{exam_id}'")
    return [tuple(line.split("|")) for line in rows.splitlines()]  # type: ignore[misc]


def wait_stored(s: System, exam_id: str, want: int, timeout: float) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    rows = stored_of(s, exam_id)
    while len(rows) < want and time.monotonic() < deadline:
        s.wait(1.0)  # supervises: a part that exited is started again, as systemd would
        rows = stored_of(s, exam_id)
    return rows


def test_an_exam_under_faults_arrives_exactly_once_site_by_site(system, record_figures):
    s: System = system
    # aortic asked for again (two attempts), the three other sites once: five results. After each attempt
    # "n" goes on to the next site whether the signal was good or poor (a 5 s clip can be judged poor, and
    # Enter would then record it again)
    exam = bedside_exam(s, "drill-exam-1", ["", "r", "n", "", "n", "", "n", "", "n"])
    s.wait(4)
    s.restart_broker()
    s.devices[DEVICE].kill9()  # the daemon delivering the exam's first results
    s.count("device_killed_9")
    s.wait(2)  # supervise() starts it again
    s.cut_device_link(6)
    s.kill_worker(0)
    s.stall_device_link(6)
    out, err = exam.communicate(timeout=240)
    assert exam.returncode == 0, err[-3000:]
    data = json.loads(out)
    ids = {r["result_id"]: r["site"] for r in data["results"]}
    assert sorted(ids.values()) == ["aortic", "aortic", "mitral", "pulmonic", "tricuspid"]
    assert all(r["stored"] for r in data["results"])
    s.cut_database(5)
    rows = wait_stored(s, "drill-exam-1", len(ids), 240)
    figures = {
        "exam_results": len(ids),
        "delivered": len({rid for rid, _ in rows} & set(ids)),
        "rows": len(rows),
        "strangers": len({rid for rid, _ in rows} - set(ids)),
        "faults": dict(s.faults),
    }
    record_figures("exam-light", figures)
    assert sorted(rows) == sorted(ids.items()), figures  # each result once, with its site, none lost
    assert data["exam"]["sites"]["aortic"]["attempts"] == 2


def test_an_exam_stopped_with_ctrl_c_delivers_the_sites_it_recorded_once(system):
    s: System = system
    exam = bedside_exam(s, "drill-exam-2", [""] * 9)
    assert exam.stderr is not None
    printed: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the nurse stops it while the third site is being recorded
        line = exam.stderr.readline()
        printed.append(line)
        if line.startswith("Pulmonic "):
            break
    assert printed[-1].startswith("Pulmonic "), "".join(printed)[-3000:]
    exam.send_signal(signal.SIGINT)
    _, err = exam.communicate(timeout=60)
    assert exam.returncode == 130, err[-3000:]
    assert "Exam stopped: the sites recorded so far are kept." in err
    s.restart_broker()
    rows = wait_stored(s, "drill-exam-2", 2, 180)
    s.wait(5)  # time for a duplicate, had there been one
    rows = stored_of(s, "drill-exam-2")
    assert sorted(site for _, site in rows) == ["aortic", "pulmonic"], rows
    assert len({rid for rid, _ in rows}) == 2
