"""Shared by the benchmark scripts: the machine, a Mosquitto and a PostgreSQL database made for the run,
the dashboard's production-like environment, pre-generated result messages, and table printing.

Not a test module (pytest collects test_*.py only) and not a benchmark itself.
"""

from __future__ import annotations

import copy
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.broker import Broker, free_port

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def one_core() -> str:
    """Pin this process to one core (per-core figures on a shared machine); says whether it could."""
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        return "pinned to one core"
    except (AttributeError, OSError):
        return "not pinned"


# -- the machine --------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"Python": platform.python_version()}
    for name, dist in (
        ("numpy", "numpy"),
        ("librosa", "librosa"),
        ("TensorFlow", "tensorflow"),
        ("LiteRT", "ai-edge-litert"),
        ("Django", "django"),
        ("psycopg", "psycopg"),
        ("paho-mqtt", "paho-mqtt"),
    ):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def machine() -> str:
    """One paragraph: cores, CPU model, RAM, load, versions, Mosquitto and PostgreSQL."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    vers = ", ".join(f"{k} {v}" for k, v in _versions().items())
    mosq = subprocess.run(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    pg = subprocess.run(
        ["psql", "-h", PG_HOST, "-U", PG_USER, "-tAc", "SHOW server_version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"machine: {os.cpu_count()} cores ({cpu}), {mem_kib / 1024**2:.1f} GiB RAM, load {load} at "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"versions: {vers}; {mosq[0] if mosq else 'mosquitto ?'}; PostgreSQL {pg or '?'}"
    )


# -- printing -----------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A Markdown table (readable in a terminal, pasteable into BENCHMARKS.md)."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [f"\n### {title}\n"] if title else []
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark like Ctrl-C: its finally blocks stop the servers it started."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def vacuum(db: str) -> None:
    """What autovacuum does in production (deploy/central/postgresql-steth.conf leaves it on); the CI
    configuration of this machine's PostgreSQL turns it off, and without it index-only scans visit
    every recently changed row."""
    psql("VACUUM ANALYZE", db)


def quiet_warning() -> None:
    """Say so when the machine is busy: figures taken under load are not comparable."""
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    if load1 > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: load average {load1:.2f} on {os.cpu_count()} cores: figures will be pessimistic", flush=True)


# -- Mosquitto ----------------------------------------------------------------------------------------


@dataclass
class BenchBroker(Broker):
    """A Mosquitto like the production one (persistence, deep session queues, 64 in flight), logging
    only warnings: the test broker's ``log_type all`` would write a line per packet and slow it down."""

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "per_listener_settings false\n"
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 60\n"
            f"log_dest file {self.workdir}/mosquitto.log\nlog_type error\nlog_type warning\n"
            "max_queued_messages 1000000\nmax_inflight_messages 64\n"
            + (
                "user root\n" if os.geteuid() == 0 else ""
            )  # as root mosquitto would drop to a user that cannot write here
            + f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        )
        return conf


# -- PostgreSQL and the dashboard ---------------------------------------------------------------------


def psql(sql: str, db: str = "postgres", *, capture: bool = False) -> str:
    proc = subprocess.run(
        ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", db, "-v", "ON_ERROR_STOP=1", "-qtAc", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed: {proc.stderr.strip()}\n{sql[:500]}")
    return proc.stdout.strip() if capture else ""


def database_url(name: str) -> str:
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def recreate_database(name: str) -> None:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')


def database_exists(name: str) -> bool:
    return psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", capture=True) == "1"


def dashboard_env(db_name: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """Production settings (DEBUG off, a random SECRET_KEY, persistent connections) behind a TLS proxy
    (the load generator sends X-Forwarded-Proto: https, as nginx does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STETH_", "DJANGO_", "DATABASE_", "DEBUG"))}
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database_url(db_name),
        DATABASE_CONN_MAX_AGE="600",
        STETH_VAR_DIR=str(var_dir),
        STETH_BEHIND_PROXY="1",
        STETH_LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`manage.py` of the tree on env's PYTHONPATH (an older checkout being compared), else this one."""
    cwd = env.get("PYTHONPATH") or REPO
    proc = subprocess.run(
        [PYTHON, "-m", "dashboard.manage", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


# -- result messages ----------------------------------------------------------------------------------


def result_messages(
    count: int, devices: Sequence[str], *, windows: int = 5, start: datetime | None = None
) -> list[dict[str, Any]]:
    """``count`` valid results (contract v1) spread over ``devices``: a 15 s recording's five windows."""
    from device.core import contract

    base = copy.deepcopy(contract.EXAMPLE_RESULT)
    base["windows"] = [{"start_s": 2.5 * i, "probabilities": {"normal": 0.2, "abnormal": 0.8}} for i in range(windows)]
    t0 = start or datetime.now(UTC) - timedelta(days=1)
    out = []
    for i in range(count):
        m = dict(base)
        m["result_id"] = str(uuid.uuid4())
        m["device_id"] = devices[i % len(devices)]
        m["patient_ref"] = f"P-{i % 5000:06d}"
        m["label"] = ("normal", "abnormal", "unsure")[i % 3]
        m["recorded_at"] = (t0 + timedelta(milliseconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out.append(m)
    contract.validate("result", out[0])
    contract.validate("result", out[-1])
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


__all__ = ["REPO", "BenchBroker", "free_port"]
