"""The durable outbox: persistence, idempotence, the size cap, corruption and a full disk."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from device.core import contract
from device.core.errors import ContractError
from device.edge.outbox import Entry, Outbox, OutboxFullError
from tests.device.outbox_support import make_result

MIB = 1024 * 1024


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "state" / "outbox.sqlite", tmp_path / "ram" / "audio"


def open_outbox(paths: tuple[Path, Path], max_bytes: int = 8 * MIB) -> Outbox:
    return Outbox(paths[0], paths[1], max_bytes)


def test_it_keeps_results_across_reopen_in_order(paths):
    results = [make_result() for _ in range(5)]
    with open_outbox(paths) as box:
        report = box.add([Entry(r) for r in results])
        assert report.result_ids == [r["result_id"] for r in results]
        assert box.stats().pending_results == 5
    with open_outbox(paths) as box:
        pending = box.pending(limit=10)
        assert [p.result_id for p in pending] == [r["result_id"] for r in results]
        assert json.loads(pending[0].payload) == results[0]
        assert pending[0].topic == contract.results_topic("pi-test")
        db = sqlite3.connect(paths[0])
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()


def test_it_stores_a_result_once_however_often_it_is_added(paths):
    result = make_result()
    with open_outbox(paths) as box:
        first = box.add([Entry(result)])
        again = box.add([Entry(result)])
        assert first.result_ids == [result["result_id"]] and first.duplicates == []
        assert again.result_ids == [] and again.duplicates == [result["result_id"]]
        assert box.stats().pending_results == 1


def test_it_refuses_a_result_that_breaks_the_contract_and_stores_nothing(paths):
    with open_outbox(paths) as box:
        bad = make_result(label="")
        with pytest.raises(ContractError, match="label"):
            box.add([Entry(make_result()), Entry(bad)])
        assert box.stats().pending_results == 0


def test_ack_removes_a_message_and_counts_it_delivered(paths):
    with open_outbox(paths) as box:
        box.add([Entry(make_result()), Entry(make_result())])
        first, second = box.pending(limit=10)
        assert box.ack(first) is True
        assert box.ack(first) is False  # already gone: a second ack is harmless
        assert [p.seq for p in box.pending(limit=10)] == [second.seq]
        assert [p.seq for p in box.pending(limit=10, exclude=[second.seq])] == []
        stats = box.stats()
        assert stats.pending_results == 1 and stats.delivered_results == 1


def test_audio_waits_in_the_ram_folder_and_goes_after_results(paths):
    with open_outbox(paths) as box:
        with_audio = make_result()
        box.add([Entry(with_audio, flac=b"fLaC" + b"\0" * 1000)])
        box.add([Entry(make_result())])
        kinds = [p.kind for p in box.pending(limit=10)]
        assert kinds == ["result", "result", "audio"]
        audio = box.pending(limit=10)[-1]
        assert audio.topic == contract.audio_topic("pi-test", with_audio["result_id"])
        assert audio.payload.startswith(b"fLaC")
        assert (paths[1] / f"{with_audio['result_id']}.flac").exists()
        # nothing of the audio went into the SQLite file on the "SD card"
        assert b"fLaC" not in paths[0].read_bytes() + Path(str(paths[0]) + "-wal").read_bytes()
        box.ack(audio)
        assert not (paths[1] / f"{with_audio['result_id']}.flac").exists()


def test_over_the_cap_audio_is_shed_before_any_result(paths, caplog):
    with open_outbox(paths, max_bytes=1 * MIB) as box:
        ids = []
        for _ in range(4):
            result = make_result()
            ids.append(result["result_id"])
            report = box.add([Entry(result, flac=os.urandom(300 * 1024))])
            assert report.dropped_results == []
        stats = box.stats()
        assert stats.pending_results == 4  # every result kept
        assert stats.pending_audio < 4 and stats.dropped_audio == 4 - stats.pending_audio
        assert stats.bytes <= 1 * MIB
        assert box.result_ids() == ids
        waiting_audio = {p.result_id for p in box.pending(limit=10) if p.kind == "audio"}
        assert waiting_audio == set(ids[-stats.pending_audio :])  # the oldest audio went first
        assert len(list(paths[1].glob("*.flac"))) == stats.pending_audio


def test_a_result_dropped_for_space_is_logged_as_error_and_counted(paths, caplog):
    big = "x" * 180  # longest allowed issue text: a fat but valid result
    with open_outbox(paths, max_bytes=1 * MIB) as box:
        first_ids = []
        caplog.set_level(logging.ERROR, logger="device.edge.outbox")
        for _ in range(400):
            result = make_result(quality={"score": 0.5, "ok": False, "issues": [big] * 16})
            result["windows"] = [
                {"start_s": i * 2.5, "probabilities": {"normal": 0.5, "abnormal": 0.5}} for i in range(40)
            ]
            first_ids.append(result["result_id"])
            box.add([Entry(result)])
        stats = box.stats()
        assert stats.dropped_results > 0
        assert stats.bytes <= 1 * MIB
        assert stats.pending_results + stats.dropped_results == 400
        kept = box.result_ids()
        assert kept == first_ids[-len(kept) :]  # the oldest went, the newest stayed
        dropped_logs = [r for r in caplog.records if r.levelno == logging.ERROR and "RESULT DROPPED" in r.message]
        assert len(dropped_logs) == stats.dropped_results
        assert first_ids[0] in dropped_logs[0].message


def test_it_remembers_which_recordings_are_done(paths):
    with open_outbox(paths) as box:
        box.add([Entry(make_result())], source_key="file-a#0")
        box.note_failure("file-b#0", "too short")
    with open_outbox(paths) as box:
        assert box.source_done("file-a#0") and box.source_done("file-b#0")
        assert not box.source_done("file-c#0")


def test_a_corrupt_outbox_is_set_aside_and_a_fresh_one_works(paths, caplog):
    with open_outbox(paths) as box:
        box.add([Entry(make_result())])
    paths[0].write_bytes(b"this is not a database at all" * 200)
    caplog.set_level(logging.CRITICAL, logger="device.edge.outbox")
    with open_outbox(paths) as box:
        assert box.recovered_from is not None and box.recovered_from.exists()
        assert box.recovered_from.name.startswith("outbox.sqlite.corrupt-")
        assert any("OUTBOX CORRUPT" in r.message for r in caplog.records)
        box.add([Entry(make_result())])
        assert box.stats().pending_results == 1


def test_a_damaged_outbox_is_salvaged_where_it_can_be_read(paths, caplog):
    results = [make_result() for _ in range(30)]
    with open_outbox(paths) as box:
        box.add([Entry(r) for r in results])
    # damage the index b-tree pages at the end of the file, keep the table readable
    data = bytearray(paths[0].read_bytes())
    page = 4096
    for pgno in range(len(data) // page - 1, len(data) // page):
        data[pgno * page + 8 : pgno * page + 200] = b"\xff" * 192
    paths[0].write_bytes(bytes(data))
    with open_outbox(paths) as box:
        if box.recovered_from is None:
            pytest.skip("the damage happened to miss every page integrity_check reads")
        salvaged = set(box.result_ids())
        assert salvaged <= {r["result_id"] for r in results}
        assert box.salvaged == len(salvaged)


def test_a_full_disk_is_a_clear_error_and_loses_nothing_already_stored(paths):
    with open_outbox(paths, max_bytes=64 * MIB) as box:
        stored = [make_result() for _ in range(3)]
        box.add([Entry(r) for r in stored])
        # SQLite's own page limit gives exactly the SQLITE_FULL a full disk gives
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        box._db.execute(f"PRAGMA max_page_count = {pages}")
        big = make_result(quality={"score": 0.5, "ok": False, "issues": ["x" * 200] * 16})
        big["windows"] = [{"start_s": i * 2.5, "probabilities": {"normal": 0.5, "abnormal": 0.5}} for i in range(400)]
        with pytest.raises(OutboxFullError, match="full") as excinfo:
            box.add([Entry(big)])
        assert big["result_id"] in str(excinfo.value) and "NOT stored" in str(excinfo.value)
        assert box.result_ids() == [r["result_id"] for r in stored]
    with open_outbox(paths) as box:
        assert box.result_ids() == [r["result_id"] for r in stored]


def test_a_really_full_filesystem_is_survived(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], check=False, capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the page-limit test covers SQLITE_FULL")
    try:
        box = Outbox(mnt / "outbox.sqlite", tmp_path / "audio", 64 * MIB)
        stored = []
        with pytest.raises(OutboxFullError):
            for _ in range(10_000):
                result = make_result(quality={"score": 0.5, "ok": False, "issues": ["y" * 200] * 16})
                box.add([Entry(result)])
                stored.append(result["result_id"])
        assert len(stored) > 10
        assert box.result_ids() == stored
        box.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


WRITER = textwrap.dedent(
    """
    import sys
    from device.edge.outbox import Entry, Outbox
    from tests.device.outbox_support import make_result
    box = Outbox(sys.argv[1], sys.argv[2], 64 * 1024 * 1024)
    while True:
        r = make_result()
        box.add([Entry(r, flac=b"fLaC" + bytes(2000))])
        print(r["result_id"], flush=True)
    """
)


@pytest.mark.slow
def test_every_acknowledged_write_survives_kill_9_of_the_writer(paths):
    repo = Path(__file__).resolve().parents[2]
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(paths[0]), str(paths[1])],
            stdout=subprocess.PIPE,
            text=True,
            cwd=repo,
        )
        confirmed = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(confirmed) < 40 + 20 * round_ and time.monotonic() < deadline:
            confirmed.append(proc.stdout.readline().strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with open_outbox(paths, max_bytes=64 * MIB) as box:
            assert box.recovered_from is None  # integrity_check passed
            stored = set(box.result_ids())
            assert set(confirmed) <= stored
            # every stored result still has its audio (no half-written pair)
            stats = box.stats()
            assert stats.pending_audio == stats.pending_results


def test_a_connection_notices_when_another_process_replaced_the_file(paths):
    first = open_outbox(paths)
    assert not first.replaced()
    paths[0].rename(paths[0].with_name("outbox.sqlite.corrupt-x"))  # what a set-aside does...
    second = open_outbox(paths)  # ...before starting a fresh file
    assert first.replaced() and not second.replaced()
    first.close()
    second.close()


def test_young_audio_files_of_another_writer_are_spared(paths):
    paths[1].mkdir(parents=True)
    young = paths[1] / "0b7f3c1e-8a53-4f7e-9d1c-2f6a4b5c6d7e.flac"
    young.write_bytes(b"fLaC")  # another process is about to commit its row
    old = paths[1] / "1b7f3c1e-8a53-4f7e-9d1c-2f6a4b5c6d7e.flac"
    old.write_bytes(b"fLaC")
    os.utime(old, (time.time() - 3600, time.time() - 3600))  # left behind by a crash long ago
    open_outbox(paths).close()
    assert young.exists() and not old.exists()


def test_only_so_many_recordings_are_read_into_memory_at_once(paths):
    with open_outbox(paths) as box:
        for _ in range(5):
            box.add([Entry(make_result(), flac=b"fLaC" + bytes(5000))])
        kinds = [p.kind for p in box.pending(limit=10, max_audio=2)]
        assert kinds == ["result"] * 5 + ["audio"] * 2


# -- end-to-end acknowledgements: sent on PUBACK, deleted on ingest's ack ---------------------------------


def age_sends(path: Path, seconds: float) -> None:
    """Pretend the broker's PUBACKs came ``seconds`` earlier (another connection, as another process)."""
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE messages SET sent_at = sent_at - ? WHERE sent_at IS NOT NULL", (seconds,))
    db.close()


def test_a_message_the_broker_took_stays_sent_across_reopen_until_its_timeout(paths):
    result = make_result()
    with open_outbox(paths) as box:
        box.add([Entry(result)])
        (item,) = box.pending(limit=10, ack_timeout_s=60, max_resend=10)
        assert item.attempts == 0
        assert box.mark_sent([item]) == 1
        assert box.pending(limit=10, ack_timeout_s=60, max_resend=10) == []  # waits for the ack
    with open_outbox(paths) as box:
        stats = box.stats()
        assert (stats.pending_results, stats.awaiting_ack, stats.delivered_results) == (1, 1, 0)
        assert stats.for_status()["awaiting_ack"] == 1
        assert box.pending(limit=10, ack_timeout_s=60, max_resend=10) == []
        # acks from the broker (delivery_ack = "broker") send whatever is there
        assert [p.result_id for p in box.pending(limit=10)] == [result["result_id"]]
    age_sends(paths[0], 61)
    with open_outbox(paths) as box:
        (again,) = box.pending(limit=10, ack_timeout_s=60, max_resend=10)
        assert (again.result_id, again.attempts) == (result["result_id"], 1)
        box.mark_sent([again])
        assert box.pending(limit=10, ack_timeout_s=60, max_resend=10) == []
        db = sqlite3.connect(paths[0])
        assert db.execute("SELECT attempts FROM messages").fetchone()[0] == 2
        db.close()


def test_an_ack_deletes_what_it_names_and_repeats_or_strangers_are_harmless(paths):
    kept, acked = make_result(), make_result()
    with open_outbox(paths) as box:
        box.add([Entry(kept), Entry(acked, flac=b"fLaC" + bytes(100))])
        box.mark_sent(box.pending(limit=10))
        done = box.confirm([acked["result_id"]], [])
        assert (done.results, done.audio, len(done.seqs)) == (1, 0, 1)
        assert box.confirm([acked["result_id"]], []).seqs == []  # the same ack again
        assert box.confirm([make_result()["result_id"]], [kept["result_id"]]).seqs == []  # ids it never held
        assert box.result_ids() == [kept["result_id"]]
        audio_file = paths[1] / f"{acked['result_id']}.flac"
        assert audio_file.exists()  # the recording has its own ack
        assert box.confirm([], [acked["result_id"]]).audio == 1
        assert not audio_file.exists()
        stats = box.stats()
        assert (stats.pending_results, stats.pending_audio, stats.awaiting_ack) == (1, 0, 1)
        assert (stats.delivered_results, stats.delivered_audio) == (1, 1)


def test_re_sends_are_bounded_and_new_results_go_first(paths):
    with open_outbox(paths) as box:
        box.add([Entry(make_result()) for _ in range(50)])
        box.mark_sent(box.pending(limit=100))
        fresh = make_result()
        box.add([Entry(fresh)])
    age_sends(paths[0], 3600)  # a long ingest outage: 50 unacknowledged
    with open_outbox(paths) as box:
        items = box.pending(limit=10, ack_timeout_s=60, max_resend=3)
        assert [p.attempts for p in items].count(1) == 3  # only three re-sends at a time
        assert fresh["result_id"] in [p.result_id for p in items]
        assert len(box.pending(limit=100, ack_timeout_s=60, max_resend=0)) == 1  # only the new one


def test_a_clock_set_back_does_not_strand_a_sent_message(paths):
    with open_outbox(paths) as box:
        box.add([Entry(make_result())])
        box.mark_sent(box.pending(limit=10))
    age_sends(paths[0], -86400)  # PUBACK "tomorrow": the clock was wrong then (a Pi without RTC)
    with open_outbox(paths) as box:
        assert len(box.pending(limit=10, ack_timeout_s=60, max_resend=10)) == 1


def test_a_version_1_outbox_is_upgraded_and_its_messages_count_as_not_sent(paths):
    paths[0].parent.mkdir(parents=True)
    db = sqlite3.connect(paths[0])
    db.executescript(
        """
        CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, result_id TEXT NOT NULL,
            topic TEXT NOT NULL, payload BLOB, bytes INTEGER NOT NULL, created_at REAL NOT NULL,
            UNIQUE (kind, result_id));
        PRAGMA user_version = 1;
        """
    )
    result = make_result()
    payload = contract.encode("result", result)
    db.execute(
        "INSERT INTO messages (kind, result_id, topic, payload, bytes, created_at) VALUES ('result', ?, ?, ?, ?, 0)",
        (result["result_id"], contract.results_topic("pi-test"), payload, len(payload)),
    )
    db.commit()
    db.close()
    with open_outbox(paths) as box:
        (item,) = box.pending(limit=10, ack_timeout_s=60, max_resend=0)
        assert (item.result_id, item.attempts) == (result["result_id"], 0)
    with open_outbox(paths) as box:  # and opening it again changes nothing
        assert box.stats().pending_results == 1
    db = sqlite3.connect(paths[0])
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3  # through 2 (acks) to 3 (refused recordings)
    db.close()


def test_over_the_cap_results_the_broker_took_are_shed_before_unsent_ones(paths, caplog):
    big = {"score": 0.5, "ok": False, "issues": ["z" * 200] * 16}  # all of one size: one dropped per add
    with open_outbox(paths, max_bytes=1 * MIB) as box:
        unsent = make_result(quality=big)
        box.add([Entry(unsent)])
        sent = make_result(quality=big)
        box.add([Entry(sent)])
        box.mark_sent([p for p in box.pending(limit=10) if p.result_id == sent["result_id"]])
        with caplog.at_level(logging.ERROR, logger="device.edge.outbox"):
            while box.stats().dropped_results == 0:
                box.add([Entry(make_result(quality=big))])
        assert sent["result_id"] not in box.result_ids() and unsent["result_id"] in box.result_ids()
        assert "ingest never acknowledged it" in caplog.text


def test_a_refused_recording_is_stored_once_sent_with_results_and_removed_by_an_ack_naming_it(paths):
    from device.core.errors import TooShortError
    from device.edge.refusals import refusal_message

    refusal = refusal_message("pi-test", TooShortError("x.wav: 0.50 s is too short"), source="replay",
                              recording="/r/x.wav", key="/r/x.wav|1|2#0")  # fmt: skip
    with open_outbox(paths) as box:
        result = make_result()
        box.add([Entry(result)])
        assert box.add_refusal(refusal, source_key="/r/x.wav|1|2#0") is True
        assert box.add_refusal(refusal, source_key="/r/x.wav|1|2#0") is False  # the same refusal again
        assert box.source_done("/r/x.wav|1|2#0")
        items = box.pending(limit=10)
        assert [(p.kind, p.result_id) for p in items] == [("result", result["result_id"]),
                                                           ("refused", refusal["refusal_id"])]  # fmt: skip
        assert items[1].topic == contract.refused_topic("pi-test")
        assert contract.decode("refused", items[1].payload) == refusal
        box.mark_sent(items)
        assert box.stats().pending_refused == 1 and box.stats().awaiting_ack == 2
        done = box.confirm([refusal["refusal_id"], result["result_id"]], [])  # one id space
        assert len(done.seqs) == 2 and done.results == 1
        stats = box.stats()
        assert (stats.pending_refused, stats.delivered_refused, stats.delivered_results) == (0, 1, 1)
    with pytest.raises(ContractError), open_outbox(paths) as box:
        box.add_refusal({**refusal, "reason": "Not A Code"})


def test_a_version_2_outbox_is_upgraded_keeping_what_it_holds(paths):
    paths[0].parent.mkdir(parents=True)
    db = sqlite3.connect(paths[0])
    db.executescript(
        """
        CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('result', 'audio')), result_id TEXT NOT NULL,
            topic TEXT NOT NULL, payload BLOB, bytes INTEGER NOT NULL, created_at REAL NOT NULL,
            sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0, UNIQUE (kind, result_id));
        PRAGMA user_version = 2;
        """
    )
    result = make_result()
    payload = contract.encode("result", result)
    db.execute(
        "INSERT INTO messages (kind, result_id, topic, payload, bytes, created_at, sent_at, attempts) "
        "VALUES ('result', ?, ?, ?, ?, 0, 5.0, 1)",
        (result["result_id"], contract.results_topic("pi-test"), payload, len(payload)),
    )
    db.commit()
    db.close()
    with open_outbox(paths) as box:
        stats = box.stats()
        assert (stats.pending_results, stats.awaiting_ack) == (1, 1)  # still sent, awaiting its ack
        from device.core.errors import EmptyAudioError
        from device.edge.refusals import refusal_message

        assert box.add_refusal(refusal_message("pi-test", EmptyAudioError("e"), source="capture", recording="mic"))
        new = make_result()
        box.add([Entry(new)])
        # numbering carries on after the copy; the sent one waits for its ack
        assert [p.seq for p in box.pending(limit=10, ack_timeout_s=60, max_resend=0)] == [2, 3]
