"""What ingest does with one message: store it, or keep it as a dead letter with the reason.

``Ingestor.handle`` never raises for a bad message, only for a database that is unavailable
(``OperationalError``/``InterfaceError``): the worker then retries the same message and does not
acknowledge it until it is stored, so nothing is lost while PostgreSQL restarts.

Which devices are known: a device is known when a ``Device`` row exists for its id, registered by an
admin on the Devices page, in Django's admin or by provisioning (``manage.py registerdevice``).
Messages from other ids become ``unknown_device`` dead letters. With STETH_INGEST_AUTO_REGISTER=1
(the demo) a device registers itself with its first valid message, belonging to no clinic until an
admin assigns one.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from dashboard.clinic import exams
from dashboard.clinic.models import DeadLetter, Device, RefusedRecording, Result
from dashboard.clinic.recordings import RecordingConflictError, save_recording
from dashboard.clinic.records import insert_new, store_result
from dashboard.ingest import decoding
from device.core import contract
from device.core.errors import AudioError, ContractError

log = logging.getLogger(__name__)

FLAC_MAGIC = b"fLaC"


def refusal_reason(payload: bytes, limit: int, name: str = "result") -> str:
    """Why ``contract.decode`` refused a payload, as a dead-letter reason."""
    if len(payload) > limit:
        return "oversized"
    try:
        message = contract.loads(payload)
    except ValueError:
        return "malformed"
    if not isinstance(message, dict):
        return "malformed"
    if message.get("schema_version") not in contract.versions(name):
        return "wrong_schema_version"
    return "invalid"


class Ingestor:
    """Stores messages for one worker; ``stats`` counts outcomes (reported when the worker stops)."""

    def __init__(self, *, client_id: str, auto_register: bool, max_audio_bytes: int) -> None:
        self.client_id = client_id
        self.auto_register = auto_register
        self.max_audio_bytes = max_audio_bytes
        self.stats: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes) -> str:
        outcome = self._route(topic, payload)
        self.stats[outcome] += 1
        return outcome

    def handle_batch(self, messages: Sequence[tuple[str, bytes]]) -> list[str]:
        """Store several messages: the valid results of known devices in one transaction, the rest one by one.

        Same outcomes as ``handle`` for each message, far cheaper per result: one commit (one WAL flush),
        one bulk insert and one device update per batch instead of per message. Raises like ``handle``
        (OperationalError/InterfaceError: the database is unavailable; none of the batch's results is
        stored, and storing the batch again is harmless: statuses, audio and dead letters, written one by
        one before the results, are idempotent, a dead letter's count aside); any other DatabaseError means
        the database refused one of the results, and the caller stores them one by one with ``handle`` to
        find which. Outcomes are counted once the whole batch is stored.
        """
        outcomes: list[str | None] = [None] * len(messages)
        results: list[tuple[int, str, str, bytes, dict[str, Any]]] = []
        for i, (topic, payload) in enumerate(messages):
            try:
                device_id, kind, _ = contract.parse_topic(topic)
            except ContractError:
                outcomes[i] = self._route(topic, payload)
                continue
            if kind != "results":
                outcomes[i] = self._route(topic, payload)
                continue
            message = self._decode("result", topic, device_id, payload)
            if isinstance(message, str):
                outcomes[i] = message
            else:
                results.append((i, topic, device_id, payload, message))
        if results:
            outcomes_of_results = self._store_results(results)
            for i, outcome in outcomes_of_results.items():
                outcomes[i] = outcome
        done = [outcome for outcome in outcomes if outcome is not None]
        if len(done) != len(messages):
            raise RuntimeError("ingest: a message of the batch was left without an outcome")
        self.stats.update(done)
        return done

    def _devices(self, device_ids: set[str]) -> dict[str, Device]:
        found = {d.device_id: d for d in Device.objects.select_related("clinic").filter(device_id__in=device_ids)}
        for device_id in sorted(device_ids - set(found)):
            device = self._device(device_id)  # auto-registration, when it is on
            if device is not None:
                found[device_id] = device
        return found

    def _store_results(self, results: list[tuple[int, str, str, bytes, dict[str, Any]]]) -> dict[int, str]:
        """Insert valid results of known devices in one transaction; duplicates and conflicts as ``store_result``."""
        outcomes: dict[int, str] = {}
        devices = self._devices({device_id for _, _, device_id, _, _ in results})
        rows: dict[uuid.UUID, Result] = {}
        firsts: dict[uuid.UUID, tuple[int, str, str, bytes, dict[str, Any]]] = {}
        repeats: list[tuple[int, str, str, bytes, dict[str, Any]]] = []  # the same id twice in one batch
        for item in results:
            i, topic, device_id, payload, message = item
            device = devices.get(device_id)
            if device is None:
                outcomes[i] = self._unknown(topic, device_id, payload)
                continue
            result_id = uuid.UUID(message["result_id"])
            if result_id in rows:
                repeats.append(item)
                continue
            firsts[result_id] = item
            rows[result_id] = Result(
                result_id=result_id,
                source="device",
                device=device,
                clinic=device.clinic,
                ingested_by=self.client_id[:64],
                **Result.fields_from_message(message),
            )
        conflicts: list[tuple[int, str, str, bytes, dict[str, Any]]] = []
        with transaction.atomic():
            made = exams.link(list(rows.values()))  # each row's exam, made if new (idempotent: keyed)
            created = insert_new(list(rows.values()))
            exams.refresh(exams.needing_refresh(list(rows.values()), made, created))
            skipped = [pk for pk in rows if pk not in created]  # already stored: the same, or a conflict
            stored = dict(Result.objects.filter(pk__in=skipped).values_list("pk", "message")) if skipped else {}
            seen_devices: set[int | None] = set()
            for item in [*firsts.values(), *repeats]:
                i, message = item[0], item[4]
                pk = uuid.UUID(message["result_id"])
                kept = stored.get(pk, firsts[pk][4])  # what the database holds for this id now
                if item is firsts[pk] and pk in created:
                    outcomes[i] = "result_created"
                elif kept == message:
                    log.info("result %s already stored (duplicate)", pk)
                    outcomes[i] = "result_duplicate"
                else:
                    conflicts.append(item)
                    continue
                seen_devices.add(rows[pk].device_id)
            self._seen(seen_devices, timezone.now())
        for i, topic, device_id, payload, message in conflicts:
            log.info("result %s already stored (conflict)", message["result_id"])
            outcomes[i] = self._dead(
                "conflict",
                topic,
                payload,
                f"result {message['result_id']} is already stored with different content; the first one is kept",
                device_id,
            )
        return outcomes

    @staticmethod
    def _seen(device_pks: set[int | None], when: datetime) -> None:
        """Devices proved up by a batch: one update; rows locked in key order so two workers never deadlock."""
        pks = sorted(pk for pk in device_pks if pk is not None)
        if not pks:
            return
        devices = Device.objects.filter(pk__in=pks).filter(
            models.Q(last_seen__isnull=True) | models.Q(last_seen__lt=when)
        )
        if connection.features.has_select_for_no_key_update:
            # NO KEY UPDATE: does not block other workers inserting results that refer to these devices.
            pks = list(devices.order_by("pk").select_for_update(no_key=True).values_list("pk", flat=True))
            devices = Device.objects.filter(pk__in=pks)
        devices.update(last_seen=when)

    def _route(self, topic: str, payload: bytes) -> str:
        try:
            device_id, kind, rest = contract.parse_topic(topic)
        except ContractError as exc:
            return self._dead("bad_topic", topic, payload, str(exc))
        if kind == "results":
            return self._result(topic, device_id, payload)
        if kind == "status":
            return self._status(topic, device_id, payload)
        if kind == "audio" and rest is not None:
            return self._audio(topic, device_id, rest, payload)
        if kind == "refused":
            return self._refused(topic, device_id, payload)
        return self._dead("bad_topic", topic, payload, f"ingest does not consume {kind} topics", device_id)

    def _dead(self, reason: str, topic: str, payload: bytes, detail: str, device_id: str = "") -> str:
        DeadLetter.record(reason=reason, topic=topic, payload=payload, detail=detail, device_id=device_id)
        log.warning("dead letter (%s) on %s: %s", reason, topic, detail[:300])
        return f"dead_{reason}"

    def _device(self, device_id: str) -> Device | None:
        device = Device.objects.select_related("clinic").filter(device_id=device_id).first()
        if device is None and self.auto_register:
            device, created = Device.objects.get_or_create(device_id=device_id, defaults={"auto_registered": True})
            if created:
                log.info("registered device %s by its first message (auto-register is on)", device_id)
        return device

    def _unknown(self, topic: str, device_id: str, payload: bytes) -> str:
        return self._dead(
            "unknown_device",
            topic,
            payload,
            f"device {device_id!r} is not registered: register it on the Devices page (or by provisioning) "
            "so its messages are accepted",
            device_id,
        )

    def _decode(self, name: str, topic: str, device_id: str, payload: bytes) -> dict[str, Any] | str:
        limit = contract.max_bytes_of(name)
        try:
            message = decoding.decode(name, payload, max_bytes=limit)
        except ContractError as exc:
            detail = "\n".join([exc.message, *exc.errors]) if exc.errors else str(exc)
            return self._dead(refusal_reason(payload, limit, name), topic, payload, detail, device_id)
        if message["device_id"] != device_id:
            return self._dead(
                "device_mismatch",
                topic,
                payload,
                f"message says device {message['device_id']!r} but arrived on {device_id!r}'s topic",
                device_id,
            )
        return message

    def _result(self, topic: str, device_id: str, payload: bytes) -> str:
        message = self._decode("result", topic, device_id, payload)
        if isinstance(message, str):
            return message
        device = self._device(device_id)
        if device is None:
            return self._unknown(topic, device_id, payload)
        stored = store_result(message, device=device, clinic=device.clinic, ingested_by=self.client_id)
        if stored.outcome == "conflict":
            return self._dead(
                "conflict",
                topic,
                payload,
                f"result {message['result_id']} is already stored with different content; the first one is kept",
                device_id,
            )
        device.seen(timezone.now())
        return f"result_{stored.outcome}"

    def _refused(self, topic: str, device_id: str, payload: bytes) -> str:
        """A recording the device could not analyse: stored once per refusal_id, for the dashboard."""
        message = self._decode("refused", topic, device_id, payload)
        if isinstance(message, str):
            return message
        device = self._device(device_id)
        if device is None:
            return self._unknown(topic, device_id, payload)
        outcome = RefusedRecording.store(message, device=device, ingested_by=self.client_id)
        if outcome == "conflict":
            return self._dead(
                "conflict",
                topic,
                payload,
                f"refusal {message['refusal_id']} is already stored with different content; the first one is kept",
                device_id,
            )
        device.seen(timezone.now())
        return f"refused_{outcome}"

    def _status(self, topic: str, device_id: str, payload: bytes) -> str:
        message = self._decode("status", topic, device_id, payload)
        if isinstance(message, str):
            return message
        if self._device(device_id) is None:
            return self._unknown(topic, device_id, payload)
        with transaction.atomic():
            device = Device.objects.select_for_update().get(device_id=device_id)
            device.apply_status(message, timezone.now())
        return "status"

    def _audio(self, topic: str, device_id: str, rest: str, payload: bytes) -> str:  # noqa: PLR0911 - one return per refusal
        if len(payload) > self.max_audio_bytes:
            return self._dead(
                "oversized",
                topic,
                payload,
                f"audio of {len(payload)} bytes exceeds the {self.max_audio_bytes}-byte limit (STETH_MAX_AUDIO_BYTES)",
                device_id,
            )
        try:
            result_id = uuid.UUID(rest)
        except ValueError:
            return self._dead("bad_topic", topic, payload, f"{rest!r} in the audio topic is not a result id", device_id)
        device = self._device(device_id)
        if device is None:
            return self._unknown(topic, device_id, payload)
        if not payload.startswith(FLAC_MAGIC):
            return self._dead("bad_audio", topic, payload, "audio payload is not FLAC (no fLaC header)", device_id)
        result = Result.objects.filter(pk=result_id).only("device_id", "audio_declared").first()
        if result is not None and result.device_id != device.pk:
            return self._dead(
                "device_mismatch", topic, payload, f"result {result_id} belongs to another device", device_id
            )
        declared = (result.audio_declared or {}).get("sha256") if result is not None else None
        digest = hashlib.sha256(payload).hexdigest()
        if declared and declared != digest:
            return self._dead(
                "bad_audio",
                topic,
                payload,
                f"audio sha256 {digest[:12]}... differs from the {declared[:12]}... its result declares",
                device_id,
            )
        try:
            saved = save_recording(result_id, payload, fmt="flac", device_id=device_id)
        except AudioError as exc:
            return self._dead("bad_audio", topic, payload, str(exc), device_id)
        except RecordingConflictError as exc:
            return self._dead("conflict", topic, payload, str(exc), device_id)
        device.seen(timezone.now())
        return "audio_created" if saved.created else "audio_duplicate"
