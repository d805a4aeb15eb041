"""The device's configuration: one TOML file, validated into typed models that refuse unknown keys.

Load order (mqtt-io style): the file -> environment overrides -> validation. An override is
``STETH_DEVICE__<SECTION>__<FIELD>=value`` (double underscores between levels), e.g.
``STETH_DEVICE__BROKER__URL=mqtts://broker:8883`` or ``STETH_DEVICE__DEVICE_ID=pi-7``. Secrets are never
inline: the broker password comes from a file or a systemd credential (``LoadCredential=``).

Every error names the field (and the environment variable when the value came from one) and says what
to do; ``steth device validate-config FILE`` prints them all at once.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from device.core.contract import DEVICE_ID_RE, SITES
from device.core.errors import ConfigError
from device.core.local_threshold import problems as local_threshold_problems

log = logging.getLogger(__name__)

ENV_PREFIX = "STETH_DEVICE__"
CONFIG_ENV = "STETH_DEVICE_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/steth/device.toml")
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"  # set by systemd for LoadCredential=
MIB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Section):
    url: str = Field(
        description="the MQTT broker, mqtt://host[:port] (plain, port 1883) or mqtts://host[:port] (TLS, port 8883)"
    )
    ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the broker's certificate (mqtts:// only; default: system CAs)"
    )
    cert_file: Path | None = Field(None, description="PEM client certificate, when the broker wants one (mqtts://)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    username: str | None = Field(None, description="MQTT user name (usually the device id)", max_length=128)
    password_file: Path | None = Field(None, description="file holding the MQTT password (mode 0600, owner steth)")
    password_credential: str | None = Field(
        None,
        description="name of a systemd credential holding the MQTT password (LoadCredential=NAME:/path in the unit)",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
    )
    keepalive_s: int = Field(30, ge=5, le=600, description="MQTT keep-alive: how fast a dead link is noticed")
    reconnect_min_s: float = Field(1.0, gt=0, le=60, description="first reconnect delay (doubles, with jitter)")
    reconnect_max_s: float = Field(60.0, gt=0, le=3600, description="longest reconnect delay")
    status_interval_s: float = Field(60.0, ge=1, le=3600, description="how often the online status is refreshed")
    delivery_ack: Literal["ingest", "broker"] = Field(
        "ingest",
        description="when a result leaves the outbox: 'ingest' (default) when the dashboard's ingest says it is "
        "stored (an ack on the device's acks topic); 'broker' on the broker's PUBACK, only for a broker with no "
        "ingest sending acks (a broker that loses an acknowledged message then loses the result)",
    )
    ack_timeout_s: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="a result the broker has but ingest has not acknowledged within this many seconds is sent "
        "again (delivery_ack = 'ingest'; ingest stores it once however often it arrives)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"must start with mqtt:// or mqtts:// (got {value!r})")
        if not parts.hostname:
            raise ValueError(f"has no host name (got {value!r}); write e.g. mqtts://broker.example.org:8883")
        if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
            raise ValueError("must be only scheme://host[:port]: put the user name and password in their own settings")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        if self.password_file and self.password_credential:
            raise ValueError("set password_file or password_credential, not both")
        if (self.password_file or self.password_credential) and not self.username:
            raise ValueError("a password needs a username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file/cert_file are for mqtts:// URLs; use mqtts:// or remove them")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    def password(self) -> str | None:
        """Read the secret now (never stored in the config object); ConfigError if it cannot be read."""
        if self.password_credential:
            directory = os.environ.get(CREDENTIALS_ENV)
            if not directory:
                raise ConfigError(
                    f"broker.password_credential={self.password_credential!r} but ${CREDENTIALS_ENV} is not set",
                    "run under systemd with LoadCredential= (see deploy/systemd/steth-device.service), "
                    "or use broker.password_file",
                )
            path = Path(directory) / self.password_credential
        elif self.password_file:
            path = self.password_file
        else:
            return None
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the broker password from {path}: {exc.strerror}",
                "check the file exists and is readable by the steth user",
            ) from exc
        if not secret:
            raise ConfigError(f"the broker password file {path} is empty", "write the password into it")
        return secret

    def files(self) -> dict[str, Path]:
        """Files this section refers to, by field name (for validate-config's existence check)."""
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        named["password_file"] = self.password_file
        return {k: v for k, v in named.items() if v is not None}


class AudioConfig(_Section):
    source: Literal["sounddevice", "replay"] = Field(
        "sounddevice", description="'sounddevice': the stethoscope; 'replay': recordings from replay_path"
    )
    input_device: str | None = Field(
        None,
        description="the input device, by (part of) its name, case-insensitive, e.g. 'USB Audio'; "
        "`steth device list-inputs` shows them; empty: the system default input",
        max_length=200,
    )
    sample_rate: int = Field(4000, ge=500, le=192000, description="capture rate in Hz (2000-8000 suits heart sounds)")
    channels: int = Field(1, ge=1, le=8, description="channels to capture; mixed to mono")
    record_seconds: float = Field(15.0, ge=5, le=300, description="length of a bedside recording (steth record)")
    replay_path: Path | None = Field(None, description="a WAV/FLAC file or a folder of them (source = 'replay')")
    replay_realtime: bool = Field(
        True,
        description="mode 'continuous' with source 'replay': stream the recordings at the speed of a live "
        "stethoscope (false: as fast as possible, for tests); mode 'replay' analyses each file as soon as it "
        "is found, whatever this says",
    )
    replay_manifest: Path | None = Field(
        None,
        description="CSV file (file,patient_ref,site,exam_id) saying whose recording each replayed file is and "
        "at which site (demos, training; device/edge/replay_manifest.py); files it does not list are site "
        "'unknown' with no patient",
    )
    replay_recorded_at: Literal["file", "replayed"] = Field(
        "file",
        description="what a replayed result gives as its recording time: 'file' (the file's modification time: "
        "recordings made elsewhere) or 'replayed' (when it is analysed: a demo standing in for a stethoscope)",
    )
    max_segment_s: float = Field(
        300.0,
        ge=10,
        le=3600,
        description="a longer recording is analysed in segments of this length (one result each): bounds memory",
    )
    stall_timeout_s: float = Field(
        5.0, gt=0, le=120, description="no audio for this long: the device is treated as disconnected and reopened"
    )
    transient_dir: Path = Field(
        Path("/run/steth"),
        description="RAM-backed (tmpfs) folder for audio waiting to be uploaded: patient audio never touches "
        "the SD card (systemd RuntimeDirectory=steth makes /run/steth)",
    )
    send_audio: bool = Field(False, description="also upload each recording as FLAC on the audio topic")

    @model_validator(mode="after")
    def _replay_needs_path(self) -> AudioConfig:
        if self.source == "replay" and self.replay_path is None:
            raise ValueError("source = 'replay' needs replay_path (a WAV/FLAC file or a folder of them)")
        return self


class ModelsConfig(_Section):
    run: tuple[str, ...] = Field(
        ("screening",),
        min_length=1,
        max_length=4,
        description="models to run on every recording, by name ('screening' is the shipped default); "
        "each gives its own result",
    )
    threshold_dir: Path | None = Field(
        None,
        description="folder of decision thresholds set on this kit's own labelled recordings by `steth calibrate` "
        "(MODEL.threshold.json); a model without a file there decides at its own threshold",
    )

    @field_validator("run", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # from an environment variable: "screening,sound_type" or a JSON list
            value = json.loads(value) if value.strip().startswith("[") else [v.strip() for v in value.split(",")]
        return value

    @field_validator("run")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a model twice: {list(value)}")
        if any(not v for v in value):
            raise ValueError("has an empty model name")
        return value


class OutboxConfig(_Section):
    path: Path = Field(
        Path("/var/lib/steth/outbox.sqlite"),
        description="the durable outbox (SQLite); results wait here until the broker has acknowledged them",
    )
    max_bytes: int = Field(
        64 * MIB,
        ge=1 * MIB,
        le=64 * 1024 * MIB,
        description="size cap of everything waiting (results + audio); above it audio is shed first, then the "
        "oldest results (each logged as an ERROR and counted)",
    )
    max_inflight: int = Field(10, ge=1, le=100, description="messages sent but not yet acknowledged, at most")


class ContinuousConfig(_Section):
    interval_s: float = Field(60.0, ge=5, le=86400, description="publish a result every this many seconds of audio")
    window_s: float = Field(15.0, ge=5, le=300, description="each result analyses the last window_s seconds")
    patient_ref: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="pseudonymous patient reference for continuous results"
    )
    site: Literal["aortic", "pulmonic", "tricuspid", "mitral", "unknown"] = Field(
        "unknown", description="auscultation site for continuous results"
    )

    @model_validator(mode="after")
    def _window_fits(self) -> ContinuousConfig:
        if self.window_s > self.interval_s:
            raise ValueError(f"window_s={self.window_s} must not exceed interval_s={self.interval_s}")
        return self


class DeviceConfig(_Section):
    device_id: str = Field(description="this device's id, 1-63 of a-z 0-9 - _ (it names its MQTT topics)")
    mode: Literal["deliver", "continuous", "replay"] = Field(
        "deliver",
        description="what `steth device run` does besides delivering the outbox: 'deliver' (results come from "
        "`steth record`), 'continuous' (classify rolling windows of the audio source), 'replay' (analyse every "
        "recording in audio.replay_path once)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="logging threshold")
    broker: BrokerConfig
    audio: AudioConfig = Field(default_factory=AudioConfig)  # type: ignore[arg-type]
    models: ModelsConfig = Field(default_factory=ModelsConfig)  # type: ignore[arg-type]
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)  # type: ignore[arg-type]
    continuous: ContinuousConfig = Field(default_factory=ContinuousConfig)  # type: ignore[arg-type]

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not DEVICE_ID_RE.match(value):
            raise ValueError(f"{value!r} is not a valid device id")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cross(self) -> DeviceConfig:
        if self.mode == "replay" and self.audio.source != "replay":
            raise ValueError("mode = 'replay' needs audio.source = 'replay' and audio.replay_path")
        return self


SITE_CHOICES = SITES  # re-exported for the CLI


def _set_path(data: dict[str, Any], keys: list[str], value: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot override {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def env_overrides(environ: dict[str, str] | None = None) -> dict[tuple[str, ...], str]:
    """{(section, field): value} from STETH_DEVICE__SECTION__FIELD variables."""
    env = os.environ if environ is None else environ
    out = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            out[tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))] = value
    return out


def _describe(loc: tuple[str | int, ...]) -> str:
    """The field's description, for the hint after an error."""
    model: Any = DeviceConfig
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        info = fields[part]
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            continue
        return info.description or ""
    return ""


def _known_fields(loc: tuple[str | int, ...]) -> list[str]:
    model: Any = DeviceConfig
    for part in loc:
        info = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if info is None:
            return []
        model = info.annotation
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def format_errors(exc: ValidationError, from_env: dict[tuple[str, ...], str] | None = None) -> list[str]:
    """One readable line per problem: 'broker.url: must start with ... (the MQTT broker, ...)'."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(file)"
        env_name = ""
        if from_env and tuple(str(p) for p in loc) in from_env:
            env_name = f" (from ${ENV_PREFIX}{'__'.join(str(p).upper() for p in loc)})"
        if err["type"] == "extra_forbidden":
            known = _known_fields(loc[:-1])
            lines.append(
                f"{where}{env_name}: unknown setting; check the spelling"
                + (f" (known here: {', '.join(known)})" if known else "")
            )
            continue
        if err["type"] == "missing":
            hint = _describe(loc)
            lines.append(f"{where}: required but missing" + (f" ({hint})" if hint else ""))
            continue
        msg = err["msg"].removeprefix("Value error, ")
        hint = _describe(loc)
        lines.append(f"{where}{env_name}: {msg}" + (f" — {hint}" if hint else ""))
    return lines


def parse(data: dict[str, Any], environ: dict[str, str] | None = None, source: str = "configuration") -> DeviceConfig:
    """Apply environment overrides to ``data`` and validate; ConfigError lists every problem."""
    overrides = env_overrides(environ)
    merged: dict[str, Any] = json.loads(json.dumps(data, default=str))  # a deep copy we may modify
    for keys, value in overrides.items():
        _set_path(merged, list(keys), value)
    try:
        return DeviceConfig.model_validate(merged)
    except ValidationError as exc:
        problems = format_errors(exc, overrides)
        raise ConfigError(
            f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems),
            "fix the settings named above; `steth device validate-config FILE` checks a file",
        ) from exc


def load(path: str | Path | None = None, environ: dict[str, str] | None = None) -> DeviceConfig:
    """Read the TOML file (``path``, else $STETH_DEVICE_CONFIG, else /etc/steth/device.toml) and validate."""
    env = os.environ if environ is None else environ
    file = Path(path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        raw = file.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"configuration file {file} not found",
            f"give --config FILE or set ${CONFIG_ENV}; start from deploy/device/steth-device.example.toml",
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {file}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}", "check the line named above") from exc
    return parse(data, dict(env), source=str(file))


def check_files(config: DeviceConfig) -> list[str]:
    """Problems with files and folders the configuration refers to (run on the device itself)."""
    problems = []
    for name, path in config.broker.files().items():
        if not path.is_file():
            problems.append(f"broker.{name}: {path} does not exist or is not a file")
        elif not os.access(path, os.R_OK):
            problems.append(f"broker.{name}: {path} is not readable by this user")
    if config.broker.password_credential and os.environ.get(CREDENTIALS_ENV):
        try:
            config.broker.password()
        except ConfigError as exc:
            problems.append(f"broker.password_credential: {exc}")
    if config.models.threshold_dir is not None:
        if config.models.threshold_dir.is_dir():
            problems += local_threshold_problems(config.models.threshold_dir, config.models.run)
        else:
            problems.append(f"models.threshold_dir: {config.models.threshold_dir} does not exist or is not a folder")
    if config.audio.replay_path is not None and not config.audio.replay_path.exists():
        problems.append(f"audio.replay_path: {config.audio.replay_path} does not exist")
    if config.audio.replay_manifest is not None:
        from device.edge.replay_manifest import ManifestError
        from device.edge.replay_manifest import load as load_manifest

        try:
            load_manifest(config.audio.replay_manifest)
        except ManifestError as exc:
            problems.append(f"audio.replay_manifest: {exc.message}")
    outbox_dir = config.outbox.path.parent
    if outbox_dir.exists() and not os.access(outbox_dir, os.W_OK):
        problems.append(f"outbox.path: folder {outbox_dir} is not writable by this user")
    return problems
