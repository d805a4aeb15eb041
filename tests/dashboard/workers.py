"""Test helpers: ingest workers as real processes (`manage.py ingest`), a publisher, waiting for rows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the test database this process uses (pytest-django made it)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    port = db.get("PORT") or 5432
    return f"postgres://{db['USER']}@{db['HOST']}:{port}/{db['NAME']}"


def worker_env(db_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STETH_", "DJANGO_", "DATABASE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        DEBUG="1",
        STETH_VAR_DIR=str(Path(settings.MEDIA_ROOT).parent),
        STETH_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        DATABASE_URL=db_url or database_url(),
        DATABASE_CONN_MAX_AGE="0",
        STETH_LOG_LEVEL="info",
        STETH_INGEST_MAX_BACKOFF_S="2",
        STETH_MQTT_KEEPALIVE_S="5",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    """One `manage.py ingest` process; its log lines are collected as they come."""

    url: str
    client_id: str
    env: dict[str, str] = field(default_factory=worker_env)
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    stdout: str = ""

    def start(self) -> Worker:
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.manage", "ingest", "--url", self.url, "--client-id", self.client_id],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()
        return self

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for line in list(self.lines) if re.search(pattern, line)) >= count:
                return
            if self.proc and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker {self.client_id} never logged {pattern!r}:\n{self.log[-3000:]}")

    def wait_ready(self, timeout: float = 20.0, count: int = 1) -> Worker:
        self.wait_for("ingest ready", timeout, count)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> dict[str, int]:
        """Stop it (SIGTERM: gracefully) and return the outcome counts it reported."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"worker {self.client_id} ignored SIGTERM:\n{self.log[-3000:]}") from None
        self.stdout = out
        self.proc = None
        match = re.search(r"ingest stats: (\{.*\})", out)
        return json.loads(match.group(1)) if match else {}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Publisher:
    """A device-like MQTT client publishing with QoS 1 and waiting for each PUBACK."""

    def __init__(self, url: str, client_id: str = "test-device") -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"broker never acknowledged {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
