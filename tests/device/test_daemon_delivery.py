"""`steth device run` as a real process against a real Mosquitto: kill -9, SIGTERM, systemd notify, outages.

These use the daemon's ``deliver`` mode with results already in the outbox (as `steth record` leaves
them), so they prove delivery on its own; tests/device/test_daemon_replay.py adds the analysis.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from device.edge.outbox import Entry, Outbox
from tests.device.daemon_support import DaemonProcess, NotifySocket, write_config
from tests.device.outbox_support import Subscriber, broker, make_result

pytestmark = pytest.mark.slow


def fill(config_dir: Path, count: int) -> set[str]:
    results = [make_result("pi-test") for _ in range(count)]
    with Outbox(config_dir / "state" / "outbox.sqlite", config_dir / "unused-audio", 1 << 30) as box:
        box.add([Entry(r) for r in results])
    return {r["result_id"] for r in results}


def stats(config_dir: Path) -> dict[str, int]:
    with Outbox(config_dir / "state" / "outbox.sqlite", config_dir / "unused-audio", 1 << 30, check=False) as box:
        return box.stats().__dict__


def test_kill_9_mid_delivery_then_restart_delivers_every_result(tmp_path):
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    config = write_config(tmp_path, mosquitto.url, extra="", audio="")
    # one message in flight at a time makes delivery slow enough to be interrupted mid-stream
    config.write_text(config.read_text() + "max_inflight = 1\n")
    ids = fill(tmp_path, 1500)
    daemon = DaemonProcess(config).start()
    try:
        assert sub.wait_until(lambda s: len(s.results) >= 300, timeout=60), daemon.log[-3000:]
        daemon.kill9()
        arrived_before = len(sub.results)
        assert arrived_before < len(ids), "delivery finished before the kill; nothing was interrupted"
        # the broker publishes the last will: the device is offline
        assert sub.wait_until(lambda s: s.status and s.status[-1]["state"] == "offline", timeout=10)
        assert set(sub.status[-1]) == {"schema_version", "device_id", "state", "_retained"}  # the will itself
        at_kill = stats(tmp_path)
        waiting = at_kill["pending_results"]
        # nothing lost: every result is either still in the outbox or acknowledged by "ingest" (the
        # Subscriber); everything that had not arrived is among the waiting (the one in flight aside)
        assert waiting + at_kill["delivered_results"] == len(ids)
        assert len(ids) - arrived_before - 1 <= waiting < len(ids)
        daemon.start()
        assert sub.wait_for(ids, timeout=120) == set(), daemon.log[-3000:]
        assert sub.invalid == []
        assert sub.wait_until(
            lambda s: s.status[-1]["state"] == "online" and s.status[-1]["outbox"]["pending_results"] == 0
        )
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()
    after = stats(tmp_path)
    assert after["pending_results"] == 0
    # At most the one message in flight at the kill can arrive twice (same result_id: receivers de-duplicate).
    print(f"\nkill -9 after {arrived_before} of {len(ids)}; MQTT-level duplicates: {sub.duplicates}")
    assert sub.duplicates <= 1
    assert set(sub.results) == ids


def test_sigterm_stops_cleanly_says_offline_and_talks_to_systemd(tmp_path):
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path, mosquitto.url)
    ids = fill(tmp_path, 20)
    daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1500000"}).start()
    try:
        assert notify.wait_for("READY=1"), daemon.log
        assert sub.wait_for(ids) == set()
        assert notify.wait_for("WATCHDOG=1", timeout=5), notify.messages
        assert daemon.terminate() == 0
        assert notify.wait_for("STOPPING=1")
        assert sub.wait_until(lambda s: s.status[-1]["state"] == "offline")
        final = sub.status[-1]
        assert final["outbox"]["pending_results"] == 0 and "uptime_s" in final  # our own, not the will
        assert "stopped publisher" in daemon.log and "Traceback" not in daemon.log
    finally:
        daemon.stop()
        notify.close()
        sub.close()
        mosquitto.stop()


def test_broker_down_at_boot_then_up(tmp_path):
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    mosquitto.stop()
    config = write_config(tmp_path, mosquitto.url)
    ids = fill(tmp_path, 30)
    daemon = DaemonProcess(config).start()
    try:
        assert daemon.wait_log("broker link down"), daemon.log
        time.sleep(1.5)
        assert daemon.proc is not None and daemon.proc.poll() is None  # still running, still trying
        mosquitto.start()
        assert sub.wait_for(ids, timeout=30) == set(), daemon.log[-2000:]
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()


def test_a_corrupt_outbox_at_start_is_set_aside_and_the_daemon_works(tmp_path):
    mosquitto = broker(tmp_path / "broker").start()
    sub = Subscriber(mosquitto.port)
    config = write_config(tmp_path, mosquitto.url)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "outbox.sqlite").write_bytes(b"garbage, not SQLite " * 500)
    daemon = DaemonProcess(config).start()
    try:
        assert daemon.wait_log("started publisher"), daemon.log
        assert "CRITICAL" in daemon.log and "OUTBOX CORRUPT" in daemon.log
        assert list((tmp_path / "state").glob("outbox.sqlite.corrupt-*"))
        ids = fill(tmp_path, 5)  # as `steth record` would, into the fresh outbox
        assert sub.wait_for(ids) == set()
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()


def test_the_daemon_restarts_itself_when_the_outbox_file_is_replaced(tmp_path):
    mosquitto = broker(tmp_path / "broker").start()
    config = write_config(tmp_path, mosquitto.url)
    fill(tmp_path, 1)
    daemon = DaemonProcess(config).start()
    try:
        assert daemon.wait_log("connected to"), daemon.log
        db = tmp_path / "state" / "outbox.sqlite"
        db.rename(db.with_name("outbox.sqlite.corrupt-test"))
        fill(tmp_path, 1)  # `steth record` started a fresh outbox
        assert daemon.proc is not None
        assert daemon.proc.wait(30) == 1  # exits, for systemd to restart it on the new file
        assert "was replaced by a fresh one" in daemon.log and "CRITICAL" in daemon.log
    finally:
        daemon.stop()
        mosquitto.stop()
