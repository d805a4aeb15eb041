"""One process at a time delivers a device's outbox (device/edge/delivery_lock.py)."""

from __future__ import annotations

import pytest

from device.core.errors import BusyError
from device.edge import config as device_config
from device.edge import daemon as daemon_mod
from device.edge.delivery_lock import DeliveryLock
from tests.device.daemon_support import DaemonProcess, write_config


def test_the_lock_is_exclusive_and_free_again_once_released(tmp_path):
    outbox = tmp_path / "state" / "outbox.sqlite"
    first, second = DeliveryLock(outbox), DeliveryLock(outbox)
    assert first.acquire()
    assert not second.acquire(), "a second holder, even in the same process"
    assert first.holder().isdigit()
    first.release()
    assert second.acquire()
    second.release()


@pytest.mark.slow
def test_the_device_service_holds_the_lock_and_a_crash_frees_it(tmp_path):
    config = write_config(tmp_path, "mqtt://127.0.0.1:9")  # no broker: it delivers nothing, it still runs
    service = DaemonProcess(config).start()
    lock = DeliveryLock(tmp_path / "state" / "outbox.sqlite")
    try:
        assert service.wait_log("running in deliver mode"), service.log
        assert not lock.acquire(), "the running service must hold it"
        assert service.proc is not None and lock.holder() == str(service.proc.pid)
        service.kill9()
        assert lock.acquire(), "the kernel drops the lock of a process that dies"
    finally:
        lock.release()
        service.stop()


def test_a_second_service_on_the_same_outbox_gives_up_with_a_clear_error(tmp_path, monkeypatch):
    config = device_config.load(write_config(tmp_path, "mqtt://127.0.0.1:9"))
    monkeypatch.setattr(daemon_mod, "LOCK_WAIT_S", 0.3)
    with DeliveryLock(config.outbox.path) as other:
        assert other.acquire()
        daemon = daemon_mod.Daemon(config)
        with pytest.raises(BusyError, match=r"another process .* is delivering the outbox") as caught:
            daemon.start()
        assert "second device service" in caught.value.hint
        assert daemon.outbox is None, "nothing opened"
    daemon.start()  # free again: it starts
    try:
        assert daemon.outbox is not None
    finally:
        daemon.stop()
