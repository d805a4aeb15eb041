"""`steth provision`: broker accounts for devices and services, and each device's ready config bundle.

Run on the broker host (it edits Mosquitto's password file). For a device it

1. makes a random password and adds ``DEVICE_ID:<hash>`` to the password file, in Mosquitto's own
   PBKDF2-SHA512 format (``$7$``, what ``mosquitto_passwd`` writes), so no Mosquitto tools are needed;
2. relies on the ACL's ``pattern`` lines (deploy/mosquitto/steth.acl) for the device's topic rights:
   the user name is the device id, so the device's ACL entry is the pattern itself and nothing has to
   be added per device (and nothing can be left behind on revocation);
3. writes the bundle ``OUT/DEVICE_ID/``: ``device.toml`` (checked with the daemon's own validator),
   ``ca.crt``, and ``broker-password`` (0600), which deploy/pi/install.sh puts in /etc/steth;
4. tells the broker to reload (SIGHUP to the pid in ``--pid-file``), so the account works at once.

``--revoke`` removes the password entry and reloads: Mosquitto then disconnects the device and
refuses it. ``--service ingest`` makes the dashboard's ingest account (``svc.ingest``; its rights are
the ``user svc.ingest`` block of the ACL) in the services' password file, ``passwd-services``, which
only the loopback listener reads: device accounts (``passwd``, the TLS listener's) cannot connect there,
and the ingest account cannot connect over TLS (deploy/mosquitto/mosquitto.conf). Re-provisioning an
existing account refuses unless ``--rotate`` (a new password, a new bundle).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.core.contract import DEVICE_ID_RE
from device.core.errors import ConfigError, StethError
from device.edge import config as device_config

log = logging.getLogger(__name__)

BROKER_DIR_ENV = "STETH_BROKER_DIR"
BROKER_URL_ENV = "STETH_BROKER_URL"
DEFAULT_BROKER_DIR = Path("/etc/mosquitto/steth")
DEFAULT_PID_FILE = Path("/run/mosquitto/mosquitto.pid")
DEVICE_INSTALL_DIR = Path("/etc/steth")  # where deploy/pi/install.sh puts the bundle on the device
SECRET_NAME = "broker-password"  # noqa: S105 - the secret file's name and the systemd credential's name
SERVICES = {"ingest": "svc.ingest"}  # --service NAME -> broker user; the ACL grants its rights
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default; the passwords are 256-bit random, not guessable
SALT_BYTES = 12


class ProvisionError(StethError):
    """Provisioning cannot go ahead (what is wrong, and what to do)."""


# -- Mosquitto's password file ---------------------------------------------------------------------------


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """Mosquitto 2's ``$7$`` hash: PBKDF2-HMAC-SHA512, base64 salt and 64-byte digest."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash from the password file."""
    try:
        _, kind, iterations, salt, digest = stored.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), 64)
    except (ValueError, TypeError):
        return False
    return secrets.compare_digest(expected, got)


def read_passwords(path: Path) -> dict[str, str]:
    """{user: hash} of a Mosquitto password file (missing file: empty)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProvisionError(f"cannot read the broker password file {path}: {exc.strerror}") from exc
    entries = {}
    for line in text.splitlines():
        user, sep, hashed = line.strip().partition(":")
        if sep and user and not user.startswith("#"):
            entries[user] = hashed
    return entries


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One provisioning at a time per password file (two at once would lose one's entry)."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_passwords(path: Path, entries: dict[str, str]) -> None:
    """Replace the file atomically, keeping its owner, group and mode (new file: 0640, group of the folder)."""
    try:
        st = path.stat()
        mode, uid, gid = st.st_mode & 0o777, st.st_uid, st.st_gid
    except FileNotFoundError:
        folder = path.parent.stat()
        mode, uid, gid = 0o640, os.getuid(), folder.st_gid
    text = "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries.items()))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        with contextlib.suppress(PermissionError):  # not root: the file stays ours
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def set_password(path: Path, user: str, password: str, *, replace: bool) -> None:
    with _locked(path):
        entries = read_passwords(path)
        if user in entries and not replace:
            raise ProvisionError(
                f"{user!r} already has broker credentials in {path}",
                "use --rotate to give it a new password (and a new bundle), or --revoke it first",
            )
        entries[user] = hash_password(password)
        _write_passwords(path, entries)


def remove_password(path: Path, user: str) -> bool:
    """Remove ``user``; False when it had no entry."""
    with _locked(path):
        entries = read_passwords(path)
        if entries.pop(user, None) is None:
            return False
        _write_passwords(path, entries)
        return True


def reload_broker(pid_file: Path) -> int:
    """SIGHUP the broker: it re-reads the password and ACL files and drops clients no longer allowed."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise ProvisionError(
            f"cannot read the broker's pid from {pid_file}",
            "give --pid-file (Mosquitto's pid_file setting), or reload it yourself: systemctl reload mosquitto",
        ) from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise ProvisionError(f"no broker process {pid} (from {pid_file})", "is Mosquitto running?") from exc
    except PermissionError as exc:
        raise ProvisionError(f"not allowed to signal the broker (pid {pid})", "run steth provision as root") from exc
    log.info("asked the broker (pid %d) to reload", pid)
    return pid


# -- the device's bundle ------------------------------------------------------------------------------------


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string of printable text is a valid TOML basic string


@dataclass(frozen=True)
class BundleSpec:
    device_id: str
    broker_url: str
    install_dir: Path = DEVICE_INSTALL_DIR  # where the files will live on the device
    use_credential: bool = True  # systemd LoadCredential= (the unit's way); False: password_file
    mode: str = "deliver"
    input_device: str | None = None
    send_audio: bool = False


def device_toml(spec: BundleSpec) -> str:
    """The device's configuration, in the format of device/edge/config.py (see the example config)."""
    if spec.use_credential:
        secret = f"password_credential = {_toml_str(SECRET_NAME)}   # LoadCredential= in the systemd unit"
    else:
        secret = f"password_file = {_toml_str(spec.install_dir / SECRET_NAME)}"
    audio = [f"input_device = {_toml_str(spec.input_device)}"] if spec.input_device else []
    lines = [
        f"# stethoscope-edge device {spec.device_id}: made by `steth provision`.",
        "# Check: steth device validate-config /etc/steth/device.toml; every setting:",
        "# deploy/device/steth-device.example.toml. The password is never in this file.",
        f"device_id = {_toml_str(spec.device_id)}",
        f"mode = {_toml_str(spec.mode)}",
        'log_level = "INFO"',
        "",
        "[broker]",
        f"url = {_toml_str(spec.broker_url)}",
        *([f"ca_file = {_toml_str(spec.install_dir / 'ca.crt')}"] if spec.broker_url.startswith("mqtts:") else []),
        f"username = {_toml_str(spec.device_id)}",
        secret,
        "",
        "[audio]",
        'source = "sounddevice"',
        *audio,
        f"send_audio = {'true' if spec.send_audio else 'false'}",
        "",
    ]
    return "\n".join(lines)


def _write_file(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)  # O_CREAT's mode is not applied to a file that already existed


def write_bundle(spec: BundleSpec, folder: Path, ca_file: Path | None, password: str) -> Path:
    """Write device.toml, ca.crt and the secret into ``folder`` (0700); the TOML is validated first."""
    text = device_toml(spec)
    try:
        import tomllib

        device_config.parse(tomllib.loads(text), environ={}, source=f"bundle for {spec.device_id}")
    except ConfigError as exc:
        raise ProvisionError(f"the configuration for {spec.device_id} is not valid: {exc.message}") from exc
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    _write_file(folder / "device.toml", text, 0o640)
    _write_file(folder / SECRET_NAME, password + "\n", 0o600)
    if ca_file is not None:
        shutil.copyfile(ca_file, folder / "ca.crt")
        os.chmod(folder / "ca.crt", 0o644)
    return folder


# -- the operations -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerFiles:
    folder: Path

    @property
    def passwd(self) -> Path:
        """Device accounts: read by the TLS listener only."""
        return self.folder / "passwd"

    @property
    def services_passwd(self) -> Path:
        """Service accounts (the ingest workers): read by the loopback listener only."""
        return self.folder / "passwd-services"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def check(self) -> None:
        if not self.folder.is_dir():
            raise ProvisionError(
                f"broker folder {self.folder} does not exist",
                "make it with deploy/mosquitto/make-certs.sh FOLDER HOSTNAME, or give --broker-dir",
            )


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise ProvisionError(
            f"{device_id!r} is not a valid device id",
            "use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
        )
    return device_id


def provision_device(
    spec: BundleSpec, broker: BrokerFiles, out_dir: Path, *, rotate: bool = False, pid_file: Path | None = None
) -> Path:
    """Credentials + bundle for one device; returns the bundle folder."""
    check_device_id(spec.device_id)
    broker.check()
    tls = spec.broker_url.startswith("mqtts:")
    if tls and not broker.ca.is_file():
        raise ProvisionError(f"no CA certificate at {broker.ca}", "run deploy/mosquitto/make-certs.sh first")
    folder = out_dir / spec.device_id
    if folder.exists() and any(folder.iterdir()) and not rotate:
        raise ProvisionError(f"a bundle for {spec.device_id} already exists in {folder}", "use --rotate to replace it")
    password = secrets.token_urlsafe(32)
    if not out_dir.is_dir():
        out_dir.mkdir(parents=True)
        os.chmod(out_dir, 0o700)  # bundles hold secrets
    # The bundle first: if writing it fails, the broker has not been changed.
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.device_id}.", dir=out_dir))
    try:
        write_bundle(spec, staging, broker.ca if tls else None, password)
        set_password(broker.passwd, spec.device_id, password, replace=rotate)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if pid_file is not None:
        reload_broker(pid_file)
    return folder


def revoke(user: str, broker: BrokerFiles, *, pid_file: Path | None = None) -> bool:
    broker.check()
    removed = remove_password(broker.passwd, user)
    removed = remove_password(broker.services_passwd, user) or removed
    if removed and pid_file is not None:
        reload_broker(pid_file)
    return removed


def provision_service(
    name: str,
    broker: BrokerFiles,
    out_dir: Path,
    *,
    broker_url: str = "mqtt://127.0.0.1:1883",
    rotate: bool = False,
    pid_file: Path | None = None,
    secret_path: Path = Path("/etc/stethoscope-edge/mqtt-password"),
) -> Path:
    """A service account (``--service ingest``): its password and an environment file for the dashboard."""
    user = SERVICES.get(name)
    if user is None:
        raise ProvisionError(f"unknown service {name!r}", f"known: {', '.join(sorted(SERVICES))}")
    broker.check()
    password = secrets.token_urlsafe(32)
    folder = out_dir / user
    if folder.exists() and any(folder.iterdir()) and not rotate:
        raise ProvisionError(f"a bundle for {user} already exists in {folder}", "use --rotate to replace it")
    set_password(broker.services_passwd, user, password, replace=rotate)
    # before per-listener accounts the services were in the devices' file: moved (the TLS listener no
    # longer knows them)
    remove_password(broker.passwd, user)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    _write_file(folder / "mqtt-password", password + "\n", 0o600)
    env = [
        "# stethoscope-edge dashboard: the ingest workers' broker account (made by `steth provision`)",
        f"STETH_MQTT_URL={broker_url}",
        f"STETH_MQTT_USERNAME={user}",
        f"STETH_MQTT_PASSWORD_FILE={secret_path}",
    ]
    if broker_url.startswith("mqtts:") and broker.ca.is_file():
        shutil.copyfile(broker.ca, folder / "ca.crt")
        env.append(f"STETH_MQTT_CA_FILE={secret_path.parent / 'ca.crt'}")
    _write_file(folder / "ingest.env", "\n".join(env) + "\n", 0o640)
    if pid_file is not None:
        reload_broker(pid_file)
    return folder


# -- command line -----------------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "provision",
        help="broker credentials and a config bundle for a device (run on the broker host); --revoke",
        description="Create a device's broker account and its ready-to-install config bundle, or revoke it. "
        "See docs/deploy.md.",
    )
    parser.add_argument("device_id", nargs="?", help="the device id (= its MQTT user name)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--revoke", action="store_true", help="remove the account (the broker refuses it from now on)")
    what.add_argument("--service", choices=sorted(SERVICES), help="make a service account instead (ingest)")
    parser.add_argument("--rotate", action="store_true", help="replace existing credentials and bundle")
    parser.add_argument(
        "--broker-url",
        default=os.environ.get(BROKER_URL_ENV),
        help=f"how devices reach the broker, e.g. mqtts://broker.example.org:8883 (${BROKER_URL_ENV})",
    )
    parser.add_argument(
        "--broker-dir",
        type=Path,
        default=Path(os.environ.get(BROKER_DIR_ENV, DEFAULT_BROKER_DIR)),
        help=f"folder with passwd and ca.crt (default ${BROKER_DIR_ENV} or {DEFAULT_BROKER_DIR})",
    )
    parser.add_argument("--out", type=Path, default=Path("steth-bundles"), help="bundles go to OUT/DEVICE_ID/")
    parser.add_argument(
        "--pid-file",
        type=Path,
        help=f"reload the broker: SIGHUP the pid in this file (e.g. {DEFAULT_PID_FILE}); "
        "without it, reload it yourself (systemctl reload mosquitto)",
    )
    parser.add_argument(
        "--install-dir",
        type=Path,
        default=DEVICE_INSTALL_DIR,
        help=f"where the bundle will live on the device (default {DEVICE_INSTALL_DIR})",
    )
    parser.add_argument(
        "--password-file",
        action="store_true",
        help="point the config at the secret file instead of the systemd credential (no systemd)",
    )
    parser.add_argument("--mode", choices=("deliver", "continuous"), default="deliver", help="the daemon's mode")
    parser.add_argument("--input-device", help="the stethoscope's input, by (part of) its name")
    parser.add_argument("--send-audio", action="store_true", help="upload recordings for physicians to hear")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    broker = BrokerFiles(args.broker_dir)
    if args.service:
        folder = provision_service(
            args.service,
            broker,
            args.out,
            broker_url=args.broker_url or "mqtt://127.0.0.1:1883",
            rotate=args.rotate,
            pid_file=args.pid_file,
        )
        print(f"service account {SERVICES[args.service]}: bundle in {folder} (ingest.env, mqtt-password)")
        return 0
    if not args.device_id:
        raise ProvisionError("give a DEVICE_ID (or --service NAME)", "e.g. steth provision clinic-a-pi-01 ...")
    if args.revoke:
        user = args.device_id if "." in args.device_id else check_device_id(args.device_id)
        if not revoke(user, broker, pid_file=args.pid_file):
            print(f"{user}: no broker credentials (nothing to revoke)", file=sys.stderr)
            return 1
        print(f"{user}: credentials removed" + ("; broker reloaded" if args.pid_file else "; now reload the broker"))
        return 0
    if not args.broker_url:
        raise ProvisionError("--broker-url is required", f"e.g. mqtts://broker.example.org:8883 (or ${BROKER_URL_ENV})")
    spec = BundleSpec(
        device_id=args.device_id,
        broker_url=args.broker_url,
        install_dir=args.install_dir,
        use_credential=not args.password_file,
        mode=args.mode,
        input_device=args.input_device,
        send_audio=args.send_audio,
    )
    folder = provision_device(spec, broker, args.out, rotate=args.rotate, pid_file=args.pid_file)
    print(f"{args.device_id}: bundle in {folder} (device.toml, ca.crt, {SECRET_NAME})")
    if not args.pid_file:
        print("now reload the broker (systemctl reload mosquitto) so the new account works", file=sys.stderr)
    print(
        f"next: copy the bundle to the device and run deploy/pi/install.sh --bundle {args.device_id}/; on the "
        f"dashboard: steth dashboard registerdevice {args.device_id} --clinic SLUG",
        file=sys.stderr,
    )
    return 0
