"""The whole chain, every part real and in its own process, configured the production way:

Mosquitto (deploy/mosquitto: TLS, password file, ACLs; certificates from make-certs.sh)
  -> `steth device run` with a bundle from `steth provision`, replaying device/samples (results + FLAC)
  -> `steth dashboard ingest` on the loopback listener with the ingest account
  -> PostgreSQL (a throwaway database on 127.0.0.1:5432)
  -> the dashboard under gunicorn (DEBUG off, collected static files) in headless Chromium:
     the overview lists every result the device produced, each opens with its recording.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from device.fleet import provision
from tests.deploy.conftest import REPO, SecureBroker, psql, start_secure_broker
from tests.support.broker import free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SAMPLES = REPO / "device" / "samples"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DEVICE = "e2e-pi-1"
PASSWORD = "e2e-physician-password-1"
ARRIVAL_WAIT_S = 300  # upper bound for six recordings through the chain on a busy 2-core machine
SCREENSHOTS = REPO / "artifacts" / "screenshots"

needs_model = pytest.mark.skipif(
    not any((REPO / "device" / "models").glob("*.tflite")), reason="no shipped model in device/models yet"
)


@pytest.fixture
def database():
    name = f"steth_e2e_{uuid.uuid4().hex[:8]}"
    created = subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", name], capture_output=True, text=True, check=False
    )
    if created.returncode != 0:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is needed (bash scripts/services.sh): {created.stderr.strip()}")
    yield name
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", name], check=False)


class Processes:
    """Child processes with their output in files; stopped with SIGTERM (then SIGKILL) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")

    def stop(self) -> dict[str, int | None]:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


def dashboard_env(tmp_path: Path, db: str, broker: SecureBroker, ingest_secret: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STETH_", "DJANGO_", "DATABASE_"))}
    key = tmp_path / "secret-key"
    key.write_text("e2e-" + uuid.uuid4().hex * 2)
    env.update(
        DEBUG="0",
        SECRET_KEY_FILE=str(key),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        # plain HTTP on loopback in the test: no TLS proxy in front
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        SECURE_HSTS_SECONDS="0",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
        STETH_VAR_DIR=str(tmp_path / "var"),
        STETH_MQTT_URL=f"mqtt://127.0.0.1:{broker.port}",
        STETH_MQTT_USERNAME="svc.ingest",
        STETH_MQTT_PASSWORD_FILE=str(ingest_secret),
        STETH_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_ok(args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(
        args, cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def expected_labels(samples: Path) -> collections.Counter[str]:
    """What `steth classify` says about the recordings: the device must have said the same."""
    from device.core.inference import load_model

    clf = load_model()
    return collections.Counter(clf.analyse_file(f).label for f in sorted(samples.glob("*.flac")))


@needs_model
def test_a_replayed_recording_travels_from_the_device_to_the_dashboard_page(tmp_path, database):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/setup.sh installs Debian's chromium)")
    logs = tmp_path / "logs"
    logs.mkdir()
    steth = [sys.executable, "-m", "device"]

    broker = start_secure_broker(tmp_path)
    procs = Processes(logs)
    try:
        # -- accounts and the device's bundle, as on the broker host
        bundles = tmp_path / "bundles"
        spec = provision.BundleSpec(
            DEVICE, broker.tls_url, install_dir=bundles / DEVICE, use_credential=False, send_audio=True
        )
        bundle = provision.provision_device(spec, broker.files, bundles, pid_file=broker.pid_file)
        broker.add_ingest(bundles)

        # -- the dashboard: migrations, static files, the device and a physician
        env = dashboard_env(tmp_path, database, broker, bundles / "svc.ingest" / "mqtt-password")
        run_ok([*steth, "dashboard", "migrate", "--noinput", "-v", "0"], env)
        run_ok([*steth, "dashboard", "collectstatic", "--noinput", "-v", "0"], env)
        run_ok([*steth, "dashboard", "registerdevice", DEVICE, "--clinic", "e2e", "--name", "end-to-end kit"], env)
        run_ok([*steth, "dashboard", "createuser", "doctor", "--role", "physician"], env, stdin=PASSWORD + "\n")

        # -- the ingest worker and the device daemon, real processes
        procs.start("ingest", [*steth, "dashboard", "ingest", "--client-id", "svc.ingest.e2e-1"], env)
        samples = tmp_path / "samples"
        shutil.copytree(SAMPLES, samples, ignore=shutil.ignore_patterns("*.csv", "*.md"))
        device_env = {k: v for k, v in os.environ.items() if not k.startswith("STETH_")}
        device_env.update(
            STETH_DEVICE__MODE="replay",
            STETH_DEVICE__AUDIO__SOURCE="replay",
            STETH_DEVICE__AUDIO__REPLAY_PATH=str(samples),
            STETH_DEVICE__AUDIO__REPLAY_REALTIME="false",
            STETH_DEVICE__AUDIO__TRANSIENT_DIR=str(tmp_path / "transient"),
            STETH_DEVICE__OUTBOX__PATH=str(tmp_path / "outbox" / "outbox.sqlite"),
            PYTHONUNBUFFERED="1",
        )
        validated = run_ok([*steth, "device", "validate-config", str(bundle / "device.toml")], device_env)
        assert f"device {DEVICE}" in validated
        procs.start("device", [*steth, "device", "run", "--config", str(bundle / "device.toml")], device_env)

        # -- every recording arrives in PostgreSQL, with its audio
        n = len(list(samples.glob("*.flac")))
        deadline = time.monotonic() + ARRIVAL_WAIT_S
        while True:
            procs.check_alive()
            stored = int(psql(database, "SELECT count(*) FROM clinic_result"))
            audio = int(psql(database, "SELECT count(*) FROM clinic_recording"))
            if stored >= n and audio >= n:
                break
            assert time.monotonic() < deadline, (
                f"{stored}/{n} results and {audio} recordings after {ARRIVAL_WAIT_S} s\n"
                f"device:\n{procs.log('device')[-3000:]}\ningest:\n{procs.log('ingest')[-3000:]}"
            )
            time.sleep(1)
        rows = [
            line.split("|")
            for line in psql(
                database,
                "SELECT r.result_id, r.label, d.device_id, r.model_sha256 FROM clinic_result r "
                "JOIN clinic_device d ON d.id = r.device_id",
            ).splitlines()
        ]
        assert len(rows) == n, "a result was stored twice or a stranger's slipped in"
        assert {row[2] for row in rows} == {DEVICE}
        assert collections.Counter(row[1] for row in rows) == expected_labels(samples)
        assert int(psql(database, "SELECT count(*) FROM clinic_deadletter")) == 0

        # -- the dashboard, as gunicorn serves it in production, in a real browser
        port = free_port()
        procs.start(
            "web",
            [str(REPO / ".venv" / "bin" / "gunicorn"), "dashboard.wsgi:application",
             "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            env,
        )  # fmt: skip
        wait_for_port(port, timeout=60)
        check_pages(f"http://127.0.0.1:{port}", rows)
        procs.check_alive()
    finally:
        codes = procs.stop()
        broker.stop()
    # SIGTERM is a clean stop for the daemon and the worker
    assert codes.get("device") == 0, procs.log("device")[-3000:]
    assert codes.get("ingest") == 0, procs.log("ingest")[-3000:]


def check_pages(base: str, rows: list[list[str]]) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1180, "height": 820}).new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/")
            assert "/login/" in page.url
            page.fill("input[name=username]", "doctor")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#feed")
            for result_id, label, _, _ in rows:
                row = page.wait_for_selector(f'tr[data-result="{result_id}"]')
                assert label in row.inner_text().lower()
            page.wait_for_function(
                f"document.querySelector('tr[data-device={DEVICE}] .state').textContent === 'online'"
            )
            page.screenshot(path=SCREENSHOTS / "e2e-overview.png", full_page=True)

            result_id, label, _, sha = rows[0]
            page.click(f'tr[data-result="{result_id}"] a')
            page.wait_for_selector("#waveform[data-ready=true]")  # the device's FLAC, decoded and drawn
            body = page.inner_text("body")
            assert "Screening support, not a diagnosis" in body
            assert sha in page.inner_text("#model")
            page.screenshot(path=SCREENSHOTS / "e2e-recording.png", full_page=True)
            assert not errors, f"JavaScript errors: {errors}"
        finally:
            browser.close()
