"""The device configuration: one TOML file, refused loudly when wrong, overridable from the environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device.core.errors import ConfigError
from device.edge import config as cfg

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "device" / "steth-device.example.toml"

MINIMAL = """
device_id = "pi-7"
[broker]
url = "mqtt://127.0.0.1:1883"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(text)
    return path


def problems(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(write(tmp_path, text), environ=environ or {})
    return str(excinfo.value)


def test_the_example_is_valid_and_holds_no_secret():
    config = cfg.load(EXAMPLE, environ={})
    assert config.device_id == "clinic-a-pi-01"
    assert config.broker.tls and config.broker.port == 8883
    assert config.broker.password_credential == "broker-password"
    assert "password =" not in EXAMPLE.read_text().replace("# password_file", "")


def test_defaults_fill_everything_but_the_device_and_broker(tmp_path):
    config = cfg.load(write(tmp_path, MINIMAL), environ={})
    assert config.mode == "deliver" and config.models.run == ("screening",)
    assert config.broker.port == 1883 and not config.broker.tls
    assert config.audio.transient_dir == Path("/run/steth")
    assert config.outbox.max_bytes == 64 * 1024 * 1024


def test_an_unknown_key_is_named_with_the_known_ones(tmp_path):
    text = problems(MINIMAL + "pasword_file = '/x'\n", tmp_path)
    assert "broker.pasword_file: unknown setting" in text and "password_file" in text


@pytest.mark.parametrize(
    ("snippet", "field", "words"),
    [
        ("url = 'http://broker'", "broker.url", "mqtt:// or mqtts://"),
        ("url = 'mqtt://'", "broker.url", "no host name"),
        ("url = 'mqtt://user:pw@broker'", "broker.url", "only scheme://host"),
        ("url = 'mqtt://broker:99999'", "broker.url", "port"),
    ],
)
def test_a_bad_broker_url_is_explained(tmp_path, snippet, field, words):
    text = problems(f'device_id = "pi-7"\n[broker]\n{snippet}\n', tmp_path)
    assert field in text and words in text


def test_every_problem_is_listed_at_once_with_the_field_description(tmp_path):
    text = problems(
        'device_id = "Pi 7"\nlog_level = "loud"\n[broker]\nurl = "mqtt://b"\n[audio]\nsample_rate = 10\n', tmp_path
    )
    assert "3 problem(s)" in text
    assert "device_id:" in text and "this device's id" in text
    assert "log_level:" in text
    assert "audio.sample_rate:" in text and "capture rate" in text


def test_cross_field_rules(tmp_path):
    assert "password_file or password_credential, not both" in problems(
        MINIMAL + "username = 'u'\npassword_file = '/a'\npassword_credential = 'b'\n", tmp_path
    )
    assert "needs a username" in problems(MINIMAL + "password_file = '/a'\n", tmp_path)
    assert "cert_file and key_file go together" in problems(
        'device_id = "pi-7"\n[broker]\nurl = "mqtts://b"\ncert_file = "/c"\n', tmp_path
    )
    assert "mqtts://" in problems(MINIMAL + "ca_file = '/ca.pem'\n", tmp_path)
    assert "replay_path" in problems(MINIMAL + "[audio]\nsource = 'replay'\n", tmp_path)
    assert "audio.source = 'replay'" in problems(MINIMAL.replace('"pi-7"', '"pi-7"\nmode = "replay"'), tmp_path)
    assert "window_s" in problems(MINIMAL + "[continuous]\ninterval_s = 10\nwindow_s = 20\n", tmp_path)


def test_not_toml_names_the_line(tmp_path):
    text = problems('device_id = "pi-7\n', tmp_path)
    assert "not valid TOML" in text and "line 1" in text


def test_a_missing_file_says_where_to_start(tmp_path):
    with pytest.raises(ConfigError, match=r"not found.*steth-device\.example\.toml"):
        cfg.load(tmp_path / "nope.toml", environ={})


def test_environment_overrides_win_and_are_named_when_wrong(tmp_path):
    path = write(tmp_path, MINIMAL)
    env = {
        "STETH_DEVICE__BROKER__URL": "mqtts://other:8884",
        "STETH_DEVICE__AUDIO__SEND_AUDIO": "true",
        "STETH_DEVICE__MODELS__RUN": "screening,sound_type",
        "STETH_DEVICE__LOG_LEVEL": "debug",
    }
    config = cfg.load(path, environ=env)
    assert config.broker.url == "mqtts://other:8884" and config.broker.port == 8884
    assert config.audio.send_audio is True
    assert config.models.run == ("screening", "sound_type")
    assert config.log_level == "DEBUG"
    text = problems(MINIMAL, tmp_path, {"STETH_DEVICE__OUTBOX__MAX_BYTES": "lots"})
    assert "outbox.max_bytes" in text and "$STETH_DEVICE__OUTBOX__MAX_BYTES" in text
    text = problems(MINIMAL, tmp_path, {"STETH_DEVICE__OUTBOX__COLOUR": "red"})
    assert "outbox.colour" in text and "unknown setting" in text


def test_the_config_file_can_come_from_the_environment(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert cfg.load(None, environ={"STETH_DEVICE_CONFIG": str(path)}).device_id == "pi-7"


def test_the_password_comes_from_a_file_or_a_systemd_credential(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = cfg.load(write(tmp_path, MINIMAL + f"username = 'pi-7'\npassword_file = '{secret}'\n"), environ={})
    assert config.broker.password() == "s3cret"
    assert "s3cret" not in repr(config)

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "broker-password").write_text("fromsystemd")
    config = cfg.load(
        write(tmp_path, MINIMAL + "username = 'pi-7'\npassword_credential = 'broker-password'\n"), environ={}
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
        config.broker.password()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert config.broker.password() == "fromsystemd"
    (creds / "broker-password").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        config.broker.password()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", "device", *args], capture_output=True, text=True, check=False, cwd=REPO
    )


def test_validate_config_command(tmp_path):
    good = write(tmp_path, MINIMAL)
    proc = run_cli("validate-config", str(good))
    assert proc.returncode == 0 and "OK" in proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[audio]\nsample_rate = 'fast'\n")
    proc = run_cli("validate-config", str(bad))
    assert proc.returncode == 2 and "audio.sample_rate" in proc.stderr
    missing_files = tmp_path / "files.toml"
    missing_files.write_text('device_id = "pi-7"\n[broker]\nurl = "mqtts://b"\nca_file = "/nonexistent/ca.pem"\n')
    proc = run_cli("validate-config", str(missing_files))
    assert proc.returncode == 1 and "broker.ca_file: /nonexistent/ca.pem does not exist" in proc.stderr
    assert run_cli("validate-config", "--no-file-checks", str(missing_files)).returncode == 0
