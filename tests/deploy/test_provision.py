"""`steth provision`: the password file, the bundle the daemon accepts, refusals, revocation."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import subprocess
import tomllib

import pytest

from device import cli
from device.edge import config as device_config
from device.fleet import provision
from tests.deploy.conftest import DEPLOY, make_certs

DEVICE = "clinic-a-pi-01"
URL = "mqtts://broker.example.org:8883"


@pytest.fixture
def broker_dir(tmp_path):
    folder = tmp_path / "etc-mosquitto-steth"
    make_certs(folder, "broker.example.org")
    return folder


def steth(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `steth` command line, run in this process (a new interpreter per call costs seconds)."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["steth", *args], code, out.getvalue(), err.getvalue())


def provision_cli(broker_dir, out, *args: str) -> subprocess.CompletedProcess[str]:
    return steth("provision", "--broker-dir", str(broker_dir), "--out", str(out), "--broker-url", URL, *args)


def test_it_hashes_passwords_the_way_mosquitto_passwd_does(tmp_path):
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    pw = tmp_path / "passwd"
    pw.touch()
    subprocess.run([tool, "-b", str(pw), "alice", "s3cret!"], check=True)
    theirs = provision.read_passwords(pw)["alice"]
    assert provision.check_password("s3cret!", theirs)
    assert not provision.check_password("s3cret", theirs)
    ours = provision.hash_password("s3cret!")
    assert ours.split("$")[:3] == theirs.split("$")[:3]  # same scheme ($7$) and iteration count
    assert provision.check_password("s3cret!", ours)


def test_it_writes_a_bundle_the_daemons_validator_accepts(broker_dir, tmp_path, monkeypatch):
    out = tmp_path / "bundles"
    done = provision_cli(broker_dir, out, DEVICE, "--install-dir", str(out / DEVICE))
    assert done.returncode == 0, done.stderr
    bundle = out / DEVICE
    assert sorted(p.name for p in bundle.iterdir()) == ["broker-password", "ca.crt", "device.toml"]
    assert stat.S_IMODE((bundle / "broker-password").stat().st_mode) == 0o600
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert (bundle / "ca.crt").read_bytes() == (broker_dir / "ca.crt").read_bytes()

    # the way systemd hands the secret over: $CREDENTIALS_DIRECTORY/broker-password
    checked = steth(
        "device", "validate-config", str(bundle / "device.toml"), env={"CREDENTIALS_DIRECTORY": str(bundle)}
    )
    assert checked.returncode == 0, checked.stderr
    assert f"device {DEVICE}" in checked.stdout

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(bundle))
    config = device_config.load(bundle / "device.toml")
    assert config.broker.username == DEVICE
    assert config.broker.url == URL
    secret = config.broker.password()
    assert secret and provision.check_password(secret, provision.read_passwords(broker_dir / "passwd")[DEVICE])
    # the secret never appears in the configuration file
    assert secret not in (bundle / "device.toml").read_text()


def test_its_default_bundle_points_at_the_paths_the_systemd_unit_uses(broker_dir, tmp_path):
    assert provision_cli(broker_dir, tmp_path, DEVICE).returncode == 0
    data = tomllib.loads((tmp_path / DEVICE / "device.toml").read_text())
    unit = (DEPLOY / "systemd" / "steth-device.service").read_text()
    assert data["broker"]["password_credential"] == "broker-password"
    assert "LoadCredential=broker-password:/etc/steth/broker-password" in unit
    assert data["broker"]["ca_file"] == "/etc/steth/ca.crt"
    assert "--config /etc/steth/device.toml" in unit
    ok = steth("device", "validate-config", "--no-file-checks", str(tmp_path / DEVICE / "device.toml"))
    assert ok.returncode == 0, ok.stderr


def test_a_password_file_bundle_validates_with_its_files(broker_dir, tmp_path):
    out = tmp_path / "b"
    assert provision_cli(broker_dir, out, DEVICE, "--install-dir", str(out / DEVICE), "--password-file").returncode == 0
    checked = steth("device", "validate-config", str(out / DEVICE / "device.toml"))
    assert checked.returncode == 0, checked.stderr


def test_provisioning_an_existing_device_refuses_unless_rotate(broker_dir, tmp_path):
    assert provision_cli(broker_dir, tmp_path, DEVICE).returncode == 0
    before = provision.read_passwords(broker_dir / "passwd")[DEVICE]
    secret_before = (tmp_path / DEVICE / "broker-password").read_text()

    again = provision_cli(broker_dir, tmp_path, DEVICE)
    assert again.returncode == 2
    assert "already" in again.stderr and "--rotate" in again.stderr
    assert provision.read_passwords(broker_dir / "passwd")[DEVICE] == before  # nothing changed

    rotated = provision_cli(broker_dir, tmp_path, DEVICE, "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    after = provision.read_passwords(broker_dir / "passwd")[DEVICE]
    secret_after = (tmp_path / DEVICE / "broker-password").read_text().strip()
    assert after != before and secret_after != secret_before.strip()
    assert provision.check_password(secret_after, after)


def test_a_bad_device_id_is_refused_with_the_rule(broker_dir, tmp_path):
    done = provision_cli(broker_dir, tmp_path, "Clinic A/pi#1")
    assert done.returncode == 2
    assert "not a valid device id" in done.stderr and "lower-case" in done.stderr
    assert not (broker_dir / "passwd").exists() or "Clinic" not in (broker_dir / "passwd").read_text()


def test_it_needs_the_broker_folder_and_ca(tmp_path):
    missing = provision_cli(tmp_path / "nowhere", tmp_path / "out", DEVICE)
    assert missing.returncode == 2 and "make-certs.sh" in missing.stderr
    (tmp_path / "empty").mkdir()
    no_ca = provision_cli(tmp_path / "empty", tmp_path / "out", DEVICE)
    assert no_ca.returncode == 2 and "no CA certificate" in no_ca.stderr


def test_revoking_removes_only_that_device(broker_dir, tmp_path):
    for device in (DEVICE, "clinic-a-pi-02"):
        assert provision_cli(broker_dir, tmp_path, device).returncode == 0
    done = steth("provision", "--broker-dir", str(broker_dir), "--revoke", DEVICE)
    assert done.returncode == 0, done.stderr
    assert set(provision.read_passwords(broker_dir / "passwd")) == {"clinic-a-pi-02"}
    again = steth("provision", "--broker-dir", str(broker_dir), "--revoke", DEVICE)
    assert again.returncode == 1 and "nothing to revoke" in again.stderr


def test_revoking_with_a_stale_pid_file_says_so(broker_dir, tmp_path):
    assert provision_cli(broker_dir, tmp_path, DEVICE).returncode == 0
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text("not-a-pid\n")
    done = steth("provision", "--broker-dir", str(broker_dir), "--revoke", DEVICE, "--pid-file", str(pid_file))
    assert done.returncode == 2 and "pid" in done.stderr


def test_the_password_file_keeps_its_mode_and_other_entries(broker_dir, tmp_path):
    pw = broker_dir / "passwd"
    pw.write_text("someone:$7$101$AAAAAAAAAAAAAAAA$" + "B" * 88 + "\n")
    os.chmod(pw, 0o640)
    assert provision_cli(broker_dir, tmp_path, DEVICE).returncode == 0
    assert stat.S_IMODE(pw.stat().st_mode) == 0o640
    lines = pw.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == [DEVICE, "someone"]
    assert all(re.fullmatch(r"[a-z0-9.-]+:\$7\$101\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", line) for line in lines)


def test_the_ingest_service_account_gets_an_environment_file(broker_dir, tmp_path):
    done = steth("provision", "--broker-dir", str(broker_dir), "--out", str(tmp_path), "--service", "ingest")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "svc.ingest"
    env = dict(
        line.split("=", 1) for line in (folder / "ingest.env").read_text().splitlines() if not line.startswith("#")
    )
    assert env["STETH_MQTT_USERNAME"] == "svc.ingest"
    assert env["STETH_MQTT_PASSWORD_FILE"].endswith("mqtt-password")
    secret = (folder / "mqtt-password").read_text().strip()
    assert stat.S_IMODE((folder / "mqtt-password").stat().st_mode) == 0o600
    # in the services' file, which only the loopback listener reads; not among the devices' accounts
    assert provision.check_password(secret, provision.read_passwords(broker_dir / "passwd-services")["svc.ingest"])
    assert "svc.ingest" not in provision.read_passwords(broker_dir / "passwd")
    # the ACL grants this exact account name
    assert "user svc.ingest" in (DEPLOY / "mosquitto" / "steth.acl").read_text()
