"""The daemon against a broker configured as in production: TLS, passwords, the project's ACL.

Certificates come from deploy/mosquitto/make-certs.sh and the password from a systemd-style credential
directory ($CREDENTIALS_DIRECTORY), all made at test time; nothing secret is in the repository.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.device.daemon_support import REPO, DaemonProcess, write_config
from tests.device.outbox_support import Subscriber, broker
from tests.device.test_daemon_delivery import fill
from tests.support.broker import Broker, free_port

pytestmark = pytest.mark.slow


def production_like_broker(tmp: Path) -> tuple[Broker, int, Path]:
    if not shutil.which("mosquitto_passwd") or not shutil.which("openssl"):
        pytest.skip("needs mosquitto_passwd and openssl")
    certs = tmp / "certs"
    subprocess.run(["bash", str(REPO / "deploy/mosquitto/make-certs.sh"), str(certs), "127.0.0.1", "localhost"],
                   check=True, capture_output=True)  # fmt: skip
    passwd = tmp / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "pi-test", "device-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "svc.ingest", "ingest-secret"], check=True)
    tls_port = free_port()
    mosquitto = broker(tmp / "broker")
    mosquitto.listener = (
        f"listener {tls_port} 127.0.0.1\ncertfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
        f"cafile {certs}/ca.crt\ntls_version tlsv1.2\nlistener {mosquitto.port} 127.0.0.1\n"
    )
    mosquitto.extra_config = mosquitto.extra_config.replace("allow_anonymous true", "allow_anonymous false") + (
        f"password_file {passwd}\nacl_file {REPO / 'deploy/mosquitto/steth.acl'}\n"
    )
    return mosquitto.start(), tls_port, certs


def test_delivery_over_tls_with_a_password_from_a_systemd_credential(tmp_path):
    mosquitto, tls_port, certs = production_like_broker(tmp_path)
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "broker-password").write_text("device-secret\n")
    config = write_config(tmp_path, f"mqtts://127.0.0.1:{tls_port}")
    text = config.read_text().replace(
        "[broker]\n",
        f'[broker]\nca_file = "{certs}/ca.crt"\nusername = "pi-test"\npassword_credential = "broker-password"\n',
    )
    config.write_text(text)
    sub = Subscriber(mosquitto.port, auth=("svc.ingest", "ingest-secret"))
    ids = fill(tmp_path, 10)
    daemon = DaemonProcess(config, env={"CREDENTIALS_DIRECTORY": str(creds)}).start()
    try:
        assert sub.wait_for(ids) == set(), daemon.log[-3000:]
        assert sub.wait_until(lambda s: any(m["state"] == "online" for m in s.status))
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sub.close()
        mosquitto.stop()


def test_a_wrong_password_is_reported_and_nothing_is_lost(tmp_path):
    mosquitto, tls_port, certs = production_like_broker(tmp_path)
    secret = tmp_path / "password"
    secret.write_text("not-the-password")
    config = write_config(tmp_path, f"mqtts://127.0.0.1:{tls_port}")
    config.write_text(config.read_text().replace(
        "[broker]\n", f'[broker]\nca_file = "{certs}/ca.crt"\nusername = "pi-test"\npassword_file = "{secret}"\n'
    ))  # fmt: skip
    fill(tmp_path, 3)
    daemon = DaemonProcess(config).start()
    try:
        assert daemon.wait_log("the broker refused the connection", timeout=30), daemon.log[-3000:]
        assert "check broker.username and the password" in daemon.log
        assert daemon.proc is not None and daemon.proc.poll() is None  # keeps trying, with backoff
    finally:
        daemon.stop()
        mosquitto.stop()
    from tests.device.test_daemon_delivery import stats

    assert stats(tmp_path)["pending_results"] == 3


def test_a_broker_certificate_from_another_ca_is_refused(tmp_path):
    mosquitto, tls_port, _ = production_like_broker(tmp_path)
    other = tmp_path / "other"
    subprocess.run(["bash", str(REPO / "deploy/mosquitto/make-certs.sh"), str(other), "127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    config = write_config(tmp_path, f"mqtts://127.0.0.1:{tls_port}")
    config.write_text(config.read_text().replace("[broker]\n", f'[broker]\nca_file = "{other}/ca.crt"\n'))
    fill(tmp_path, 1)
    daemon = DaemonProcess(config).start()
    try:
        assert daemon.wait_log("certificate verify failed", timeout=30), daemon.log[-3000:]
        assert "check broker.ca_file" in daemon.log
    finally:
        daemon.stop()
        mosquitto.stop()
