"""Running `steth device run` as a real subprocess, as systemd would, with its own configuration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_config(
    tmp: Path,
    broker_url: str,
    *,
    mode: str = "deliver",
    extra: str = "",
    audio: str = "",
    model: str | None = None,
    outbox: str = "",
    continuous: str = "",
    transient: Path | None = None,
) -> Path:
    """A device configuration under ``tmp`` (transient audio in ``tmp/run`` unless a tmpfs is given)."""
    transient = transient or tmp / "run"
    path = tmp / "device.toml"
    path.write_text(
        f'device_id = "pi-test"\nmode = "{mode}"\nlog_level = "INFO"\n{extra}\n'
        f'[broker]\nurl = "{broker_url}"\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\nstatus_interval_s = 2\n'
        f'[audio]\ntransient_dir = "{transient}"\n{audio}\n'
        + (f'[models]\nrun = ["{model}"]\n' if model else "")
        + (f"[continuous]\n{continuous}\n" if continuous else "")
        + f'[outbox]\npath = "{tmp / "state" / "outbox.sqlite"}"\n{outbox}\n'
    )
    return path


class DaemonProcess:
    """`python -m device device run --config FILE`; its log goes to a file the test can read."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, log_name: str = "daemon.log") -> None:
        self.config = config
        self.log_path = config.parent / log_name
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "device", "device", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return text in self.log
            time.sleep(0.1)
        return False

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 40.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def peak_rss_kib(self) -> int:
        """VmHWM of the running process (peak resident memory)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET; keeps every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def wait_for(self, prefix: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(m.startswith(prefix) or f"\n{prefix}" in m for m in self.messages):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def model_ref() -> str:
    """The model the tests run: $STETH_TEST_MODEL (a .tflite beside its .json), else the shipped one."""
    import pytest

    from device.core.inference import available_models

    candidate = os.environ.get("STETH_TEST_MODEL")
    if candidate:
        return candidate
    if "screening" not in available_models():
        pytest.skip("no shipped screening model yet (device/models/screening.tflite); set STETH_TEST_MODEL")
    return "screening"
