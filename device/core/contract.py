"""The MQTT message contract, imported by the device and the dashboard alike.

Topics are versioned and per device::

    steth/v1/devices/{device_id}/results          result JSON (schemas/result.v2.json; v1 accepted), QoS 1
    steth/v1/devices/{device_id}/status           status JSON (schemas/status.v1.json), QoS 1, retained
    steth/v1/devices/{device_id}/audio/{result_id} FLAC bytes of that result's recording, QoS 1
    steth/v1/devices/{device_id}/commands         commands to the device (JSON), QoS 1
    steth/v1/devices/{device_id}/acks             ack JSON (schemas/ack.v1.json) from ingest, QoS 1
    steth/v1/devices/{device_id}/refused          refused-recording JSON (schemas/refused.v1.json), QoS 1
    steth/v1/ingest/{worker}/status               ingest worker status (schemas/ingest_status.v1.json),
                                                  QoS 1, retained, last will "offline"

The broker's ACLs give a device write access to its own results, status, audio and refused topics, and
read access to its own commands and acks topics and to every ingest worker's status (see deploy/mosquitto).
Receivers de-duplicate results by ``result_id``. A device deletes a result from its outbox when an ack
naming it arrives (ingest sends it after the database commit), not on the broker's PUBACK: a broker that
loses a message it acknowledged cannot lose a result (docs/contract.md, "Delivery acknowledgements").

Each kind of message has its own schema version, taken from its newest schema file (``result.v2.json``
-> 2); a receiver accepts every version it has a schema file for, so results still waiting in a
device's outbox as version 1 are stored after the dashboard is upgraded. The topic version (``v1`` in
``steth/v1/...``) is separate: it changes only if the topics themselves do. A result message is built
by device/core/messages.py, next to this module.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from device.core.errors import ContractError

TOPIC_VERSION = 1
# The status and ack messages' version, as before; a result's is current_version("result") (2). Kept for
# callers that predate per-kind versions: new code asks current_version(kind).
SCHEMA_VERSION = 1
TOPIC_ROOT = f"steth/v{TOPIC_VERSION}/devices"
SCHEMAS = "schemas"
_SCHEMA_FILE_RE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>[0-9]+)\.json$")
MAX_RESULT_BYTES = 256 * 1024  # a 1-hour recording's per-window track fits with room to spare
MAX_STATUS_BYTES = 16 * 1024
MAX_ACK_IDS = 256  # per list of an ack message (schemas/ack.v1.json); ingest splits a bigger batch
MAX_ACK_BYTES = 32 * 1024  # 2 x 256 ids of 36 characters, quoted, with room to spare
MAX_AUDIO_BYTES = 16 * 1024 * 1024
MAX_REFUSED_BYTES = 8 * 1024
MAX_INGEST_STATUS_BYTES = 1024
INGEST_ROOT = f"steth/v{TOPIC_VERSION}/ingest"
# an ingest worker's name (its MQTT client id): one topic level, and never a possible device id (it has a
# '.' or another character device ids lack), so no device's client id can ever be a worker's
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# patient references and exam ids: pseudonymous codes (result schema: patient_ref, exam_id)
REF_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SITES = ("aortic", "pulmonic", "tricuspid", "mitral")
SCREENING_LABELS = ("normal", "abnormal", "unsure")
SHARED_GROUP = "ingest"


def _check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise ContractError(
            f"invalid device id {device_id!r}",
            "use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
        )
    return device_id


def results_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{_check_device_id(device_id)}/results"


def status_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{_check_device_id(device_id)}/status"


def audio_topic(device_id: str, result_id: str) -> str:
    return f"{TOPIC_ROOT}/{_check_device_id(device_id)}/audio/{result_id}"


def commands_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{_check_device_id(device_id)}/commands"


def acks_topic(device_id: str) -> str:
    """Where ingest tells the device which of its results and recordings are stored."""
    return f"{TOPIC_ROOT}/{_check_device_id(device_id)}/acks"


def refused_topic(device_id: str) -> str:
    """Where a device reports a recording it could not analyse (empty, unreadable, too short...)."""
    return f"{TOPIC_ROOT}/{_check_device_id(device_id)}/refused"


def check_worker_id(worker_id: str) -> str:
    """An ingest worker's client id: a topic level, and never a valid device id (see WORKER_ID_RE)."""
    if not WORKER_ID_RE.match(worker_id) or DEVICE_ID_RE.match(worker_id):
        raise ContractError(
            f"invalid ingest client id {worker_id!r}",
            "use 1-64 letters, digits, '_', '.', ':' or '-' with at least one '.' (e.g. svc.ingest.host-1): "
            "an id a device could have would let that device's credentials take over the worker's session",
        )
    return worker_id


def ingest_status_topic(worker_id: str) -> str:
    """Retained: an ingest worker says it is subscribed (``online``, with a new ``start_id``) or gone."""
    return f"{INGEST_ROOT}/{check_worker_id(worker_id)}/status"


# Subscriptions for receivers; the shared form lets several ingest workers split one stream.
ALL_RESULTS = f"{TOPIC_ROOT}/+/results"
ALL_REFUSED = f"{TOPIC_ROOT}/+/refused"
ALL_INGEST_STATUS = f"{INGEST_ROOT}/+/status"
ALL_STATUS = f"{TOPIC_ROOT}/+/status"
ALL_AUDIO = f"{TOPIC_ROOT}/+/audio/+"


def shared(topic_filter: str, group: str = SHARED_GROUP) -> str:
    """MQTT 5 shared subscription: the broker hands each message to one member of ``group``."""
    return f"$share/{group}/{topic_filter}"


_TOPIC_RE = re.compile(
    rf"^{re.escape(TOPIC_ROOT)}/(?P<device>[^/]+)/(?P<kind>results|status|commands|acks|audio|refused)(?:/(?P<rest>[^/]+))?$"
)


def parse_topic(topic: str) -> tuple[str, str, str | None]:
    """'steth/v1/devices/pi-7/audio/<uuid>' -> ('pi-7', 'audio', '<uuid>'); raises ContractError."""
    m = _TOPIC_RE.match(topic)
    if not m or (m["kind"] == "audio") != (m["rest"] is not None):
        raise ContractError(f"topic {topic!r} is not part of the contract", f"expected {TOPIC_ROOT}/<device>/...")
    return _check_device_id(m["device"]), m["kind"], m["rest"]


@functools.cache
def versions(name: str) -> tuple[int, ...]:
    """The schema versions of message kind ``name`` this software can read (one file each), oldest first."""
    found = []
    for entry in resources.files("device.core").joinpath(SCHEMAS).iterdir():
        m = _SCHEMA_FILE_RE.match(entry.name)
        if m and m["name"] == name:
            found.append(int(m["version"]))
    if not found:
        raise ContractError(f"no schema for {name!r} messages", "expected device/core/schemas/NAME.vN.json")
    return tuple(sorted(found))


def current_version(name: str) -> int:
    """The version a sender writes: the newest schema's own ``schema_version`` constant."""
    const: int = schema(name)["properties"]["schema_version"]["const"]
    return const


@functools.cache
def schema(name: str, version: int | None = None) -> dict[str, Any]:
    """The JSON Schema 'result', 'status', 'ack', 'refused' or 'ingest_status' of ``version`` (default: the
    newest), as shipped in device/core/schemas."""
    v = versions(name)[-1] if version is None else version
    text = resources.files("device.core").joinpath(SCHEMAS, f"{name}.v{v}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    if data["properties"]["schema_version"].get("const") != v:
        raise ContractError(f"{name}.v{v}.json declares another schema_version", "fix the schema file")
    return data


@functools.cache
def _validator(name: str, version: int | None = None) -> Draft202012Validator:
    return Draft202012Validator(schema(name, version), format_checker=FormatChecker())


def _readable_version(name: str, message: Any) -> int | None:
    """The message's own schema version when this software reads it; else None (validate as newest)."""
    version = message.get("schema_version") if isinstance(message, dict) else None
    # type() and not isinstance: True is an int equal to 1, and a version must be a number
    if type(version) is int and version in versions(name):
        return version
    return None


def errors(name: str, message: Any) -> list[str]:
    """Readable validation errors ('field.path: what is wrong'), empty when the message is valid (against
    the schema of its own version when this software reads that version, else the newest)."""
    out = []
    validator = _validator(name, _readable_version(name, message))
    for err in sorted(validator.iter_errors(message), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(p) for p in err.path) or "(message)"
        text = err.message if len(err.message) <= 200 else err.message[:200] + "..."
        out.append(f"{where}: {text}")
    return out


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value (NaN and infinities are not allowed)")


def loads(payload: bytes | str) -> Any:
    """Strict JSON: NaN/Infinity refused (Python's json accepts them and schema bounds let NaN through);
    raises ValueError, also for nesting deeper than Python can parse (a RecursionError otherwise)."""
    try:
        return json.loads(payload, parse_constant=_not_json)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def max_bytes_of(name: str) -> int:
    """The size limit of a message of schema ``name``."""
    limits = {
        "result": MAX_RESULT_BYTES,
        "ack": MAX_ACK_BYTES,
        "refused": MAX_REFUSED_BYTES,
        "ingest_status": MAX_INGEST_STATUS_BYTES,
    }
    return limits.get(name, MAX_STATUS_BYTES)


def decode(name: str, payload: bytes | str, max_bytes: int | None = None) -> dict[str, Any]:
    """Parse and validate a message; raises ContractError listing every problem."""
    limit = max_bytes or max_bytes_of(name)
    if len(payload) > limit:
        raise ContractError(f"{name} message of {len(payload)} bytes exceeds the {limit}-byte limit")
    try:
        message = loads(payload)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise ContractError(f"{name} message is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ContractError(f"{name} message must be a JSON object, got {type(message).__name__}")
    version = message.get("schema_version")
    known = versions(name)
    if version not in known:
        speaks = " or ".join(map(str, known))
        raise ContractError(
            f"{name} message has schema_version {version!r}; this receiver speaks {speaks}",
            "upgrade the older side",
            errors=[f"schema_version: {version!r} is not {speaks}"],
        )
    problems = errors(name, message)
    if problems:
        raise ContractError(f"invalid {name} message: " + "; ".join(problems[:5]), errors=problems)
    return message


def validate(name: str, message: dict[str, Any]) -> None:
    """Raise ContractError unless ``message`` (already parsed) is valid."""
    problems = errors(name, message)
    if problems:
        raise ContractError(f"invalid {name} message: " + "; ".join(problems[:5]), errors=problems)


def encode(name: str, message: dict[str, Any]) -> bytes:
    """Validate and serialise compactly: a device never publishes what a receiver would refuse."""
    validate(name, message)
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def offline_will(device_id: str) -> bytes:
    """The last-will payload the broker publishes when the device's connection drops."""
    return encode("status", {"schema_version": current_version("status"), "device_id": device_id, "state": "offline"})


def ingest_offline_will(worker_id: str) -> bytes:
    """The last will of an ingest worker, retained on its status topic."""
    message = {"schema_version": SCHEMA_VERSION, "worker": check_worker_id(worker_id), "state": "offline"}
    return encode("ingest_status", message)


EXAMPLE_RESULT: dict[str, Any] = {
    "schema_version": 2,
    "result_id": "0b7f3c1e-8a53-4f7e-9d1c-2f6a4b5c6d7e",
    "device_id": "clinic-a-pi-01",
    "recorded_at": "2026-11-25T09:30:12.250Z",
    "patient_ref": "P-000123",
    "site": "mitral",
    "duration_s": 15.0,
    "sample_rate": 4000,
    "task": "screening",
    "model": {"name": "screening-lstm", "version": "1.0.0", "sha256": "0" * 64},
    "label": "abnormal",
    "probabilities": {"normal": 0.18, "abnormal": 0.82},
    "windows": [
        {"start_s": 0.0, "probabilities": {"normal": 0.22, "abnormal": 0.78}},
        {"start_s": 2.5, "probabilities": {"normal": 0.15, "abnormal": 0.85}},
    ],
    "window_s": 5.0,
    "hop_s": 2.5,
    "heart_rate_bpm": 72.5,
    "quality": {"score": 0.91, "ok": True, "issues": []},
    "audio": None,
    "software_version": "0.1.0",
}

EXAMPLE_STATUS: dict[str, Any] = {
    "schema_version": 1,
    "device_id": "clinic-a-pi-01",
    "state": "online",
    "at": "2026-11-25T09:30:00Z",
    "software_version": "0.1.0",
    "models": [{"name": "screening-lstm", "version": "1.0.0", "sha256": "0" * 64}],
    "outbox": {
        "pending_results": 0,
        "pending_audio": 0,
        "bytes": 0,
        "dropped_results": 0,
        "dropped_audio": 0,
        "awaiting_ack": 0,
    },
    "uptime_s": 3600.0,
}

EXAMPLE_ACK: dict[str, Any] = {
    "schema_version": 1,
    "device_id": "clinic-a-pi-01",
    "result_ids": ["0b7f3c1e-8a53-4f7e-9d1c-2f6a4b5c6d7e"],
    "audio_ids": [],
}

EXAMPLE_REFUSED: dict[str, Any] = {
    "schema_version": 1,
    "refusal_id": "6f1c2a9e-55a8-4c43-8d1e-0d7a3b2c1f00",
    "device_id": "clinic-a-pi-01",
    "at": "2026-11-25T09:31:02.500Z",
    "source": "replay",
    "recording": "bed-3-0931.flac",
    "reason": "too_short",
    "message": "bed-3-0931.flac: 0.5 s is shorter than one 5 s analysis window",
    "patient_ref": "P-000123",
    "site": "mitral",
    "software_version": "0.1.0",
}

EXAMPLE_INGEST_STATUS: dict[str, Any] = {
    "schema_version": 1,
    "worker": "svc.ingest.host-1",
    "state": "online",
    "start_id": "9d7e4c1a-0b2f-4e6d-8a3c-5f1e2d3c4b5a",
    "at": "2026-11-25T09:30:00Z",
}
