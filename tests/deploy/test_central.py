"""deploy/central/: the units start what they name, and the backups restore (real PostgreSQL, real rsync)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, REPO, psql
from tests.support.broker import free_port, wait_for_port

CENTRAL = DEPLOY / "central"
PG = "postgres://postgres@127.0.0.1:5432"


def unit_exec_start(unit: str) -> list[str]:
    """The ExecStart= command of a unit file, continuation lines joined, split into words."""
    text = (CENTRAL / unit).read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()


def test_the_web_unit_serves_the_dashboard_it_names(tmp_path):
    words = unit_exec_start("steth-web.service")
    assert words[0].endswith("/gunicorn")
    app = words[1]
    port = free_port()
    env = {**os.environ, "DEBUG": "1", "STETH_VAR_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "gunicorn"), app, "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:  # redirected to log in
            body = page.read().decode()
            assert page.status == 200
            assert "login" in page.url
        assert "password" in body.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_ingest_unit_runs_a_real_command_with_the_options_it_passes():
    words = unit_exec_start("steth-ingest@.service")
    assert words[0].endswith("/steth") and words[1:3] == ["dashboard", "ingest"]
    assert "--client-id" in words and "%i" in words[words.index("--client-id") + 1]
    done = subprocess.run(
        [sys.executable, "-m", "device", "dashboard", "ingest", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBUG": "1"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--client-id" in done.stdout


@pytest.fixture
def database():
    if shutil.which("pg_dump") is None:
        pytest.skip("PostgreSQL client tools are not installed")
    name = f"steth_backup_{uuid.uuid4().hex[:8]}"
    created = subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], capture_output=True, check=False)
    if created.returncode != 0:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {created.stderr.decode().strip()}")
    yield name
    for db in (name, f"{name}_restored"):
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db], check=False)


def run_script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CENTRAL / name), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


def test_the_database_backup_restores_and_old_dumps_expire(database, tmp_path):
    psql(database, "CREATE TABLE result (id uuid PRIMARY KEY, label text); "
                   "INSERT INTO result VALUES ('0b7f3c1e-8a53-4f7e-9d1c-2f6a4b5c6d7e', 'abnormal')")  # fmt: skip
    dest = tmp_path / "backups"
    (dest / "db").mkdir(parents=True)
    old, recent = dest / "db" / "steth-20000101T000000Z.dump", dest / "db" / "steth-29991231T000000Z.dump"
    old.write_bytes(b"an old dump")
    recent.write_bytes(b"a newer dump")
    url_file = tmp_path / "database-url"
    url_file.write_text(f"{PG}/{database}\n")

    done = run_script("backup-db.sh", "--dest", str(dest), "--keep-days", "7", env={"DATABASE_URL_FILE": str(url_file)})
    assert done.returncode == 0, done.stderr
    dumps = sorted((dest / "db").glob("steth-*.dump"))
    assert old not in dumps and recent in dumps  # retention by the time in the name
    (made,) = [d for d in dumps if d != recent]
    assert not list((dest / "db").glob(".*partial"))

    restored = f"{database}_restored"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", restored], check=True)
    subprocess.run(
        ["pg_restore", "--no-owner", "-h", "127.0.0.1", "-U", "postgres", "-d", restored, str(made)], check=True
    )
    assert psql(restored, "SELECT label FROM result") == "abnormal"


def test_the_database_backup_refuses_sqlite_with_a_hint(tmp_path):
    done = run_script("backup-db.sh", "--dest", str(tmp_path), env={"DATABASE_URL": "sqlite:////tmp/x.sqlite3"})
    assert done.returncode == 2 and "sqlite3 .backup" in done.stderr


def test_audio_snapshots_share_unchanged_recordings_and_expire(tmp_path):
    media = tmp_path / "media"
    (media / "audio" / "pi-1").mkdir(parents=True)
    kept = media / "audio" / "pi-1" / "a.flac"
    kept.write_bytes(b"fLaC recording one")
    dest = tmp_path / "backups"
    ancient = dest / "audio" / "20000101T000000Z"
    ancient.mkdir(parents=True)
    (ancient / "old.flac").write_bytes(b"old")
    env = {"STETH_MEDIA_ROOT": str(media), "STETH_BACKUP_DIR": str(dest), "STETH_BACKUP_KEEP_DAYS": "7"}

    first = run_script("backup-audio.sh", env=env)
    assert first.returncode == 0, first.stderr
    assert not ancient.exists()
    (media / "audio" / "pi-1" / "b.flac").write_bytes(b"fLaC recording two")
    second = run_script("backup-audio.sh", env=env)
    assert second.returncode == 0, second.stderr

    snaps = sorted(p for p in (dest / "audio").iterdir() if not p.name.startswith("."))
    assert len(snaps) == 2
    one, two = snaps
    assert (two / "audio/pi-1/b.flac").read_bytes() == b"fLaC recording two"
    assert not (one / "audio/pi-1/b.flac").exists()
    # the unchanged recording is stored once: the second snapshot hard-links the first's copy
    assert (one / "audio/pi-1/a.flac").stat().st_ino == (two / "audio/pi-1/a.flac").stat().st_ino
    assert (two / "audio/pi-1/a.flac").read_bytes() == kept.read_bytes()


def test_audio_backup_names_a_missing_media_folder(tmp_path):
    done = run_script("backup-audio.sh", "--source", str(tmp_path / "nope"), "--dest", str(tmp_path), env={})
    assert done.returncode == 2 and "STETH_MEDIA_ROOT" in done.stderr


def test_every_unit_file_is_valid_for_systemd(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    units = []
    for unit in ("steth-web.service", "steth-ingest@.service", "steth-backup.service", "steth-backup.timer"):
        name = unit.replace("@.", "@1.")
        shutil.copy(CENTRAL / unit, tmp_path / name)
        units.append(str(tmp_path / name))
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False)
    # Only the programs, which live on the server, may be missing here; nothing else may be wrong.
    problems = [
        line for line in done.stderr.splitlines() if line.strip() and "is not executable: No such file" not in line
    ]
    assert problems == []
    assert Path(CENTRAL / "steth-backup.timer").read_text().count("OnCalendar=") == 1
