"""Delivery acknowledgements to devices: which messages of a stored batch each device may now forget.

After the database commit, the worker publishes one ack message per device per batch on
``steth/v1/devices/{device_id}/acks`` (QoS 1, not retained; schemas/ack.v1.json). A device deletes a
result from its outbox only when an ack names it, so a broker that acknowledged a message and then lost
it (Mosquitto 2.0.11, shared subscriptions over a restart: RELIABILITY.md) cannot lose a result: the
device sends it again after its ack timeout.

What is acknowledged: every result, refused recording (its ``refusal_id`` among the ``result_ids``) and
recording now held by the database, as a new row, as a
duplicate of one already stored, or as a dead letter (accepted data, kept with the reason: the device
must stop sending it). Not acknowledged: status messages (not in an outbox), and messages whose topic
names no device or whose payload names no result (nothing a device could match). The ack goes to the
device of the message's topic, which the broker's ACL ties to the sender: a device can only ever get
acks for what it sent itself.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence

from device.core import contract
from device.core.errors import ContractError

# A device encodes a result compactly with one top-level "result_id" (contract.encode): found without
# parsing a payload that can be a quarter of a megabyte. Anything else is parsed (contract.loads).
_RESULT_ID = re.compile(rb'"result_id"\s*:\s*"([0-9a-fA-F-]{36})"')
_REFUSAL_ID = re.compile(rb'"refusal_id"\s*:\s*"([0-9a-fA-F-]{36})"')


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def result_id_of(payload: bytes, key: str = "result_id") -> str | None:
    """The ``result_id`` (or ``refusal_id``) a payload carries, or None (not JSON, not an object, no valid id)."""
    if payload.count(f'"{key}"'.encode()) == 1:
        found = (_RESULT_ID if key == "result_id" else _REFUSAL_ID).search(payload)
        if found is not None:
            rid = found[1].decode()
            return rid if _is_uuid(rid) else None
    try:
        message = contract.loads(payload)
    except ValueError:
        return None
    rid = message.get(key) if isinstance(message, dict) else None
    return rid if isinstance(rid, str) and _is_uuid(rid) else None


def stored_id(topic: str, payload: bytes, outcome: str) -> tuple[str, str, str] | None:
    """(device_id, "result_ids" or "audio_ids", id) of a message ingest has stored, or None."""
    if outcome == "status":
        return None
    try:
        device_id, kind, rest = contract.parse_topic(topic)
    except ContractError:
        return None
    if kind == "audio" and rest is not None and _is_uuid(rest):
        return device_id, "audio_ids", rest
    if kind in ("results", "refused"):
        # a refusal's id is acknowledged among the result ids: one id space (docs/contract.md)
        rid = result_id_of(payload, "result_id" if kind == "results" else "refusal_id")
        return (device_id, "result_ids", rid) if rid is not None else None
    return None


def ack_messages(messages: Sequence[tuple[str, bytes]], outcomes: Sequence[str]) -> list[tuple[str, bytes]]:
    """(topic, payload) of the ack messages for a stored batch: one per device (more when it names over
    contract.MAX_ACK_IDS of a kind), ids in the order they arrived, each once."""
    per_device: dict[str, dict[str, dict[str, None]]] = {}
    for (topic, payload), outcome in zip(messages, outcomes, strict=True):
        found = stored_id(topic, payload, outcome)
        if found is not None:
            device_id, field, rid = found
            lists = per_device.setdefault(device_id, {"result_ids": {}, "audio_ids": {}})
            lists[field][rid] = None  # a dict keeps the order and drops repeats
    out: list[tuple[str, bytes]] = []
    for device_id, lists in per_device.items():
        results, audio = list(lists["result_ids"]), list(lists["audio_ids"])
        step = contract.MAX_ACK_IDS
        for start in range(0, max(len(results), len(audio)), step):
            message = {
                "schema_version": contract.current_version("ack"),
                "device_id": device_id,
                "result_ids": results[start : start + step],
                "audio_ids": audio[start : start + step],
            }
            # not contract.encode: its jsonschema check would cost more than storing the batch; every id
            # here is a checked UUID and the device id came through parse_topic (tests check the schema)
            out.append((contract.acks_topic(device_id), json.dumps(message, separators=(",", ":")).encode()))
    return out
