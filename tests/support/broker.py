"""A real Mosquitto broker per test (or per module), on a free loopback port, with its own config.

Tests never share the system broker on 1883: each starts its own, can stop and restart it to simulate
an outage, and gives it whatever listeners, passwords and ACLs the test needs.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_pick = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port the kernel hands out (bind to port 0) is free now, but the kernel may give the same number to
    any outgoing connection before the test's broker binds it, a test that first lets a client retry
    against a broker that is not up yet most of all: seen once in CI as "Address already in use".
    Ports below the ephemeral range are never handed out that way.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = _pick.randint(max(1024, low - 12000), low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a machine with nearly every low port taken: the old way
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


@dataclass
class Broker:
    """A mosquitto process. ``extra_config`` lines are appended to a loopback listener config."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = "allow_anonymous true\n"
    listener: str = ""  # replaces the default plain listener when given (e.g. a TLS listener block)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        listener = self.listener or f"listener {self.port} 127.0.0.1\n"
        # As root, mosquitto drops to the 'mosquitto' user, which cannot write the test's folder: its
        # persistence (sessions kept while a client is away) and its log would silently vanish.
        own_user = "user " in self.extra_config or "user " in self.listener
        user = "user root\n" if os.geteuid() == 0 and not own_user else ""
        conf.write_text(
            user + "per_listener_settings false\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"log_dest file {self.workdir}/mosquitto.log\nlog_type all\n"
            "autosave_interval 1\n"
            f"{listener}{self.extra_config}"
        )
        return conf

    def start(self) -> Broker:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.write_config()
        with open(self.workdir / "mosquitto.stderr", "ab") as err:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for_port(self.port)
        except TimeoutError as exc:
            self.stop()
            stderr = (self.workdir / "mosquitto.stderr").read_text(errors="replace")
            raise RuntimeError(f"mosquitto did not start:\n{stderr[-1000:]}\n{self.log[-2000:]}") from exc
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
