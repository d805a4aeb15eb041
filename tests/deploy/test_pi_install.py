"""deploy/pi/install.sh and uninstall.sh, run for real into a temporary root (never this machine's /).

The root is a skeleton of a Debian system (the folders install.sh writes into, and passwd/group/shadow
files for useradd --root). The package is installed from a wheel built at test time, without its
dependencies (`--pip-args --no-deps`): the dependencies are the arm64 proof's business
(deploy/pi/arm64-proof.sh, docs/arm64-proof.md), and downloading them here would take minutes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from device.fleet import provision
from tests.deploy.conftest import DEPLOY, REPO, make_certs

INSTALL = DEPLOY / "pi" / "install.sh"
UNINSTALL = DEPLOY / "pi" / "uninstall.sh"
# Written by useradd/userdel themselves (backups and a lock), not by our scripts.
SHADOW_ARTEFACTS = {"etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/.pwd.lock"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh creates users and chowns files: needs root")


def build_wheel(tmp_path_factory, marker: str = "") -> Path:
    """The project's wheel, built from a copy of the source (the checkout stays clean); ``marker`` is
    written into the copy's device/BUILD_MARKER, to tell two builds of one version apart."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("device", "converter", "dashboard"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "device" / "core" / "schemas" / "BUILD_MARKER.json").write_text(f'"{marker}"')  # package data: shipped
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("stethoscope_edge-*.whl")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory, "first build")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("provision")
    make_certs(base / "broker", "broker.example.org")
    spec = provision.BundleSpec("clinic-a-pi-01", "mqtts://broker.example.org:8883")
    return provision.provision_device(spec, provision.BrokerFiles(base / "broker"), base / "out")


def make_root(path: Path) -> Path:
    """A skeleton root: what a Debian system has before install.sh runs."""
    for folder in ("etc/systemd/system", "etc/tmpfiles.d", "usr/local/bin", "var/lib", "var/cache", "opt", "run"):
        (path / folder).mkdir(parents=True)
    (path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (path / "etc/group").write_text("root:x:0:\naudio:x:29:\n")
    (path / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (path / "etc/gshadow").write_text("root:*::\naudio:*::\n")
    for name in ("shadow", "gshadow"):
        os.chmod(path / "etc" / name, 0o640)
    return path


def snapshot(root: Path, *, times: bool = False) -> dict[str, tuple[object, ...]]:
    """Every path under root: type, mode, owner, content hash (and modification time if asked)."""
    out: dict[str, tuple[object, ...]] = {}
    for path in [root, *root.rglob("*")]:
        rel = str(path.relative_to(root))
        if rel in SHADOW_ARTEFACTS:
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            detail: object = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            detail = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            detail = None
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail) + (
            (st.st_mtime_ns,) if times and not stat.S_ISDIR(st.st_mode) else ()
        )
    return out


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], check=False, capture_output=True, text=True, timeout=600)


def install(root: Path, bundle: Path, wheel: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    done = run(INSTALL, "--root", str(root), "--bundle", str(bundle), "--source", str(wheel),
               "--pip-args", "--no-deps", *extra)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def steps(output: str) -> dict[str, str]:
    """{'user': 'created', 'venv': 'unchanged', ...} from install.sh's report lines."""
    out = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "install:" and parts[1] != "done:":
            out[parts[1]] = parts[2]
    return out


def passwd_entry(root: Path, user: str) -> list[str] | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == user:
            return line.split(":")
    return None


@pytest.fixture(scope="module")
def installed(tmp_path_factory, bundle, wheel):
    """One root, installed twice; yields (root, first output, second output, snapshots)."""
    root = make_root(tmp_path_factory.mktemp("root"))
    first = install(root, bundle, wheel)
    after_first = snapshot(root, times=True)
    second = install(root, bundle, wheel)
    after_second = snapshot(root, times=True)
    return root, first.stdout, second.stdout, after_first, after_second


def test_a_second_install_changes_nothing(installed):
    _, first, second, after_first, after_second = installed
    assert {"user", "venv", "config", "folders", "journald", "unit"} <= {
        step for step, status in steps(first).items() if status not in ("unchanged", "skipped")
    }
    statuses = steps(second)
    assert set(statuses.values()) <= {"unchanged", "skipped"}, statuses
    assert "0 step(s) changed" in second
    assert after_second == after_first  # not a byte, mode, owner or time changed


def test_it_installs_what_the_systemd_unit_expects(installed, bundle):
    root = installed[0]
    unit = (root / "etc/systemd/system/steth-device.service").read_text()
    assert unit == (DEPLOY / "systemd" / "steth-device.service").read_text()  # installed as written
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    program = exec_start.removeprefix("ExecStart=").split()[0]
    assert (root / program.lstrip("/")).is_file()
    credential = next(line for line in unit.splitlines() if line.startswith("LoadCredential="))
    secret = root / credential.split(":", 1)[1].lstrip("/")
    assert secret.read_text() == (bundle / "broker-password").read_text()

    user = passwd_entry(root, "steth")
    assert user is not None and user[6] == "/usr/sbin/nologin"
    uid, gid = int(user[2]), int(user[3])
    audio = next(line for line in (root / "etc/group").read_text().splitlines() if line.startswith("audio:"))
    assert "steth" in audio.split(":")[3].split(",")

    def owner_mode(rel: str) -> tuple[int, int, int]:
        st = (root / rel).stat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode("etc/steth/broker-password") == (0, 0, 0o600)  # root only: systemd hands it over
    assert owner_mode("etc/steth/device.toml") == (0, gid, 0o640)
    assert owner_mode("var/lib/steth") == (uid, gid, 0o700)
    assert not (root / "var/cache/steth/numba").exists()  # librosa's JIT cache: nothing uses one any more
    tmpfiles = (root / "etc/tmpfiles.d/stethoscope-edge.conf").read_text()
    assert "d /run/steth 0700 steth steth" in tmpfiles  # tmpfs, recreated at boot
    assert "SystemMaxUse=" in (root / "etc/systemd/journald.conf.d/stethoscope-edge.conf").read_text()
    assert os.readlink(root / "usr/local/bin/steth") == "/opt/stethoscope-edge/.venv/bin/steth"

    # the package really is in the virtual environment
    version = subprocess.run(
        [str(root / "opt/stethoscope-edge/.venv/bin/steth"), "--version"], check=False, capture_output=True, text=True
    )
    assert version.returncode == 0 and "stethoscope-edge" in version.stdout


def test_uninstall_removes_what_install_added(tmp_path, bundle, wheel):
    root = make_root(tmp_path / "root")
    before = snapshot(root)
    install(root, bundle, wheel)
    assert snapshot(root) != before
    done = run(UNINSTALL, "--root", str(root), "--purge")
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(root) == before
    again = run(UNINSTALL, "--root", str(root), "--purge")
    assert again.returncode == 0 and "removed" not in again.stdout


def test_uninstall_keeps_the_outbox_and_its_user_unless_purged(tmp_path, bundle, wheel):
    root = make_root(tmp_path / "root")
    install(root, bundle, wheel)
    (root / "var/lib/steth/outbox.sqlite").write_bytes(b"undelivered results")
    done = run(UNINSTALL, "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert (root / "var/lib/steth/outbox.sqlite").read_bytes() == b"undelivered results"
    assert passwd_entry(root, "steth") is not None
    assert "--purge" in done.stdout
    assert not (root / "opt/stethoscope-edge").exists() and not (root / "etc/steth").exists()


def test_a_password_file_config_gets_a_secret_the_service_user_can_read(tmp_path, wheel):
    make_certs(tmp_path / "broker", "broker.example.org")
    spec = provision.BundleSpec("pi-container", "mqtts://broker.example.org:8883", use_credential=False)
    bundle = provision.provision_device(spec, provision.BrokerFiles(tmp_path / "broker"), tmp_path / "out")
    root = make_root(tmp_path / "root")
    install(root, bundle, wheel, "--no-systemd")
    st = (root / "etc/steth/broker-password").stat()
    user = passwd_entry(root, "steth")
    assert user is not None
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, int(user[3]), 0o640)


def test_it_refuses_a_folder_that_is_not_a_bundle(tmp_path, wheel):
    root = make_root(tmp_path / "root")
    (tmp_path / "not-a-bundle").mkdir()
    done = run(INSTALL, "--root", str(root), "--bundle", str(tmp_path / "not-a-bundle"), "--source", str(wheel))
    assert done.returncode == 1
    assert "steth provision" in done.stderr
    assert snapshot(root) == snapshot(make_root(tmp_path / "fresh"))  # nothing was touched


def test_a_rebuilt_wheel_of_the_same_version_replaces_the_installed_files(tmp_path, tmp_path_factory, bundle, wheel):
    root = make_root(tmp_path / "root")
    install(root, bundle, wheel)
    (marker,) = (root / "opt/stethoscope-edge/.venv/lib").glob(
        "python3*/site-packages/device/core/schemas/BUILD_MARKER.json"
    )
    assert marker.read_text() == '"first build"'
    rebuilt = build_wheel(tmp_path_factory, "second build")  # same version number, different files
    again = install(root, bundle, rebuilt)
    assert steps(again.stdout)["venv"] == "installed"
    assert marker.read_text() == '"second build"'
