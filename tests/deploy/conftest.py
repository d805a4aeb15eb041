"""A broker started from the production configuration (deploy/mosquitto/) with test paths and ports.

The production files are used as they are; only what must differ on a test machine is rewritten:
the paths under /etc/mosquitto/steth (to tmp_path), the two listener ports (to free ones), the pid
and persistence locations, logging (to a file), and the user it drops to when started as root.
Certificates come from deploy/mosquitto/make-certs.sh, run at test time; nothing secret is committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from device.fleet import provision
from tests.support.broker import Broker, free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MAKE_CERTS = DEPLOY / "mosquitto" / "make-certs.sh"
STETH = [sys.executable, "-m", "device"]


def make_certs(folder: Path, *names: str) -> None:
    subprocess.run(["bash", str(MAKE_CERTS), str(folder), *names], check=True, capture_output=True, text=True)


def psql(db: str, sql: str) -> str:
    """One SQL statement on the test PostgreSQL (127.0.0.1, user postgres), its rows as psql -At prints them."""
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-At", "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def render_config(text: str, broker_dir: Path, workdir: Path, tls_port: int, plain_port: int) -> str:
    out = text.replace("/etc/mosquitto/steth/", f"{broker_dir}/")
    replacements = {
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
        "pid_file /run/mosquitto/mosquitto.pid": f"pid_file {workdir}/mosquitto.pid",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {workdir}/",
        "log_dest file /var/log/mosquitto/mosquitto.log": f"log_dest file {workdir}/mosquitto.log\nlog_type debug",
        # as root, Mosquitto would drop to the mosquitto user, who cannot enter pytest's 0700 tmp_path
        "user mosquitto": "user root" if os.geteuid() == 0 else "",
    }
    for old, new in replacements.items():
        assert old in out, f"deploy/mosquitto/mosquitto.conf no longer has {old!r}: update this fixture"
        out = out.replace(old, new)
    return out


@dataclass
class SecureBroker(Broker):
    """The production config; ``port`` is the loopback plaintext listener, ``tls_port`` the TLS one."""

    tls_port: int = field(default_factory=free_port)
    broker_dir: Path = Path()

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
        conf.write_text(render_config(text, self.broker_dir, self.workdir, self.tls_port, self.port))
        return conf

    @property
    def pid_file(self) -> Path:
        return self.workdir / "mosquitto.pid"

    @property
    def ca(self) -> Path:
        return self.broker_dir / "ca.crt"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def files(self) -> provision.BrokerFiles:
        return provision.BrokerFiles(self.broker_dir)

    def add_device(self, device_id: str, out: Path) -> Path:
        """Provision a device (bundle with a password file, as off systemd); returns the bundle folder."""
        spec = provision.BundleSpec(device_id, self.tls_url, install_dir=out / device_id, use_credential=False)
        return provision.provision_device(spec, self.files, out, pid_file=self.pid_file if self.proc else None)

    def add_ingest(self, out: Path) -> str:
        folder = provision.provision_service("ingest", self.files, out, pid_file=self.pid_file if self.proc else None)
        return (folder / "mqtt-password").read_text().strip()


def start_secure_broker(root: Path) -> SecureBroker:
    broker_dir = root / "etc-mosquitto-steth"
    make_certs(broker_dir, "localhost", "127.0.0.1")
    shutil.copyfile(DEPLOY / "mosquitto" / "steth.acl", broker_dir / "acl")
    (broker_dir / "passwd").touch(mode=0o640)
    (broker_dir / "passwd-services").touch(mode=0o640)
    broker = SecureBroker(workdir=root / "broker", broker_dir=broker_dir)
    broker.start()
    # the TLS listener opens with the plain one; wait for both
    from tests.support.broker import wait_for_port

    wait_for_port(broker.tls_port)
    return broker


@pytest.fixture
def secure_broker(tmp_path):
    broker = start_secure_broker(tmp_path)
    yield broker
    broker.stop()
