# mypy: disable-error-code="var-annotated"
# (without the django-stubs mypy plugin, model fields need no annotations; reverse relations are declared)
"""What the dashboard stores.

A result's ``result_id`` (from the device, or made for an upload) is its primary key: writing the same
result twice is a no-op, which makes ingest idempotent. Recordings are keyed by the same id without a
database constraint, because a device's audio may arrive before its result (they travel on separate
topics and may be handled by different workers).

"Clinic" is the care site (what a nurse belongs to); the contract's ``site`` field is the auscultation
location on the chest, stored here as ``location`` so the two are never confused.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone

from device.core import contract

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager

LOCATIONS = (*contract.SITES, "unknown")
LABELS = contract.SCREENING_LABELS
AWAITING_REVIEW_LABELS = ("abnormal", "unsure")
# The big JSON of a result, which lists (feed, results, patient timeline) never show: not loaded there.
LISTING_DEFERRED = ("message", "windows", "quality_issues", "audio_declared")


class Clinic(models.Model):
    slug = models.SlugField(max_length=64, unique=True, help_text="short id used in URLs and exports")
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Profile(models.Model):
    """What a user needs beyond Django's user: the clinic a nurse works at."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    clinic = models.ForeignKey(Clinic, null=True, blank=True, on_delete=models.SET_NULL, related_name="staff")

    def __str__(self) -> str:
        return f"{self.user} @ {self.clinic or '-'}"


class Device(models.Model):
    """A registered stethoscope kit. Only registered devices' messages are accepted (see ingest)."""

    STATES = (("unknown", "never reported"), ("online", "online"), ("offline", "offline"))

    device_id = models.CharField(
        max_length=63,
        unique=True,
        validators=[RegexValidator(contract.DEVICE_ID_RE.pattern, "1-63 of a-z 0-9 - _, starting alphanumeric")],
    )
    name = models.CharField(max_length=200, blank=True, help_text="where it is, e.g. 'Ward 3 cart'")
    clinic = models.ForeignKey(Clinic, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices")
    auto_registered = models.BooleanField(default=False, help_text="registered by its first message (demo mode)")
    registered_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=STATES, default="unknown")
    last_seen = models.DateTimeField(null=True, blank=True)
    status_at = models.DateTimeField(null=True, blank=True, help_text="the device's clock on its last status")
    software_version = models.CharField(max_length=32, blank=True)
    installed_models = models.JSONField(default=list, blank=True)
    outbox = models.JSONField(null=True, blank=True)
    uptime_s = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ("device_id",)

    def __str__(self) -> str:
        return self.device_id

    @property
    def model_names(self) -> str:
        return ", ".join(f"{m.get('name')} {m.get('version')}" for m in self.installed_models or [])

    def apply_status(self, message: dict[str, Any], received_at: datetime) -> None:
        """Take a status message (already validated). The latest one wins, whatever the order."""
        at = _parse_time(message.get("at")) or received_at
        if self.status_at and at < self.status_at:
            return  # an older status delivered late (e.g. retained + live race): keep the newer one
        self.state = message["state"]
        self.status_at = at
        if message["state"] == "online":
            self.last_seen = max(filter(None, (self.last_seen, received_at)))
        for key, field in (
            ("software_version", "software_version"),
            ("models", "installed_models"),
            ("outbox", "outbox"),
            ("uptime_s", "uptime_s"),
        ):
            if key in message:
                setattr(self, field, message[key])
        self.save()

    def seen(self, when: datetime) -> None:
        """A message from the device proves it was up (conditional update: never moves backwards)."""
        Device.objects.filter(pk=self.pk).filter(
            models.Q(last_seen__isnull=True) | models.Q(last_seen__lt=when)
        ).update(last_seen=when)


class Result(models.Model):
    """One analysed recording, from a device or an upload; the message as received is kept verbatim."""

    SOURCES = (("device", "device"), ("upload", "upload"))

    result_id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    source = models.CharField(max_length=8, choices=SOURCES, default="device")
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.PROTECT, related_name="results")
    clinic = models.ForeignKey(Clinic, null=True, blank=True, on_delete=models.PROTECT, related_name="results")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    recorded_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    patient_ref = models.CharField(max_length=64, blank=True, db_index=True)
    location = models.CharField(max_length=16, blank=True)
    duration_s = models.FloatField()
    sample_rate = models.IntegerField()
    task = models.CharField(max_length=16)
    model_name = models.CharField(max_length=64)
    model_version = models.CharField(max_length=32)
    model_sha256 = models.CharField(max_length=64)
    label = models.CharField(max_length=32, db_index=True)
    probabilities = models.JSONField()
    windows = models.JSONField()
    heart_rate_bpm = models.FloatField(null=True, blank=True)
    quality_score = models.FloatField()
    quality_ok = models.BooleanField()
    quality_issues = models.JSONField(default=list)
    audio_declared = models.JSONField(null=True, blank=True)
    software_version = models.CharField(max_length=32, blank=True)
    message = models.JSONField()
    ingested_by = models.CharField(max_length=64, blank=True, help_text="the ingest worker's client id")
    # Whether any review exists, kept by Review's signals below: counting what awaits review among a
    # million results then reads a small partial index instead of joining every result with the reviews.
    reviewed = models.BooleanField(default=False, editable=False)
    device_id: int | None
    clinic_id: int | None
    if TYPE_CHECKING:
        reviews: RelatedManager[Review]
        recording: Recording

    class Meta:
        ordering = ("-received_at", "result_id")
        indexes = (
            models.Index(fields=["clinic", "-received_at"]),
            models.Index(fields=["clinic", "patient_ref", "recorded_at"]),
            models.Index(
                fields=["clinic", "label"],
                name="result_awaiting_review",
                condition=models.Q(label__in=AWAITING_REVIEW_LABELS, reviewed=False),
            ),
        )

    def __str__(self) -> str:
        return f"{self.label} {self.result_id}"

    @staticmethod
    def fields_from_message(message: dict[str, Any]) -> dict[str, Any]:
        """The columns of a validated result message (contract v1 or v2; the message itself is kept whole)."""
        quality = message["quality"]
        return {
            "recorded_at": _parse_time(message["recorded_at"]),
            "patient_ref": message.get("patient_ref") or "",
            "location": message.get("site") or "",
            "duration_s": message["duration_s"],
            "sample_rate": message["sample_rate"],
            "task": message["task"],
            "model_name": message["model"]["name"],
            "model_version": message["model"]["version"],
            "model_sha256": message["model"]["sha256"],
            "label": message["label"],
            "probabilities": message["probabilities"],
            "windows": message["windows"],
            "heart_rate_bpm": message["heart_rate_bpm"],
            "quality_score": quality["score"],
            "quality_ok": quality["ok"],
            "quality_issues": quality["issues"],
            "audio_declared": message.get("audio"),
            "software_version": message.get("software_version") or "",
            "message": message,
        }

    @property
    def confidence(self) -> float | None:
        value = self.probabilities.get(self.label)
        return float(value) if value is not None else None

    @property
    def decision(self) -> dict[str, Any] | None:
        """Set when the device decided at a threshold set on its own labelled recordings (contract: decision)."""
        value = self.message.get("decision") if isinstance(self.message, dict) else None
        return value if isinstance(value, dict) else None

    @property
    def recording_or_none(self) -> Recording | None:
        try:
            return self.recording
        except Recording.DoesNotExist:
            return None

    @property
    def latest_review(self) -> Review | None:
        # reviews are ordered newest first; .all() uses a prefetch when the caller made one
        return next(iter(self.reviews.all()), None)

    @property
    def awaiting_review(self) -> bool:
        return self.label in AWAITING_REVIEW_LABELS and not self.reviews.exists()

    def add_review(self, reviewer: Any, *, agrees: bool, label: str, note: str) -> Review:
        with transaction.atomic():
            return Review.objects.create(result=self, reviewer=reviewer, agrees=agrees, label=label, note=note)


class Recording(models.Model):
    """The audio of a result: FLAC from a device, or the uploaded WAV/FLAC as it was."""

    result = models.OneToOneField(
        Result,
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,  # audio may arrive before its result
        related_name="recording",
    )
    device_id = models.CharField(max_length=63, blank=True)
    file = models.FileField(max_length=255)
    format = models.CharField(max_length=8)
    bytes = models.IntegerField()
    sha256 = models.CharField(max_length=64)
    sample_rate = models.IntegerField()
    duration_s = models.FloatField()
    received_at = models.DateTimeField(default=timezone.now)
    result_id: uuid.UUID

    def __str__(self) -> str:
        return f"{self.format} {self.result_id}"


class Review(models.Model):
    """A physician's reading of a result: agrees or not with the model, their own label and a note."""

    LABELS = (("normal", "normal"), ("abnormal", "abnormal"), ("inconclusive", "inconclusive"))

    result = models.ForeignKey(Result, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    agrees = models.BooleanField()
    label = models.CharField(max_length=16, choices=LABELS)
    note = models.TextField(blank=True, max_length=4000)
    created_at = models.DateTimeField(default=timezone.now)
    result_id: uuid.UUID

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.label} by {self.reviewer} on {self.result_id}"


def refresh_reviewed(result_ids: set[Any]) -> None:
    """Set ``Result.reviewed`` from the reviews that exist now."""
    ids = {r for r in result_ids if r is not None}
    if ids:
        Result.objects.filter(pk__in=ids).update(
            reviewed=models.Exists(Review.objects.filter(result=models.OuterRef("pk")))
        )


# Signals rather than overriding Review.save/delete: the admin's bulk delete calls neither, but sends these.
@receiver(pre_save, sender=Review)
def _remember_reviewed_result(sender: type[Review], instance: Review, **kwargs: Any) -> None:
    previous = Review.objects.filter(pk=instance.pk).values_list("result_id", flat=True) if instance.pk else []
    instance._previous_result_id = next(iter(previous), None)  # type: ignore[attr-defined]


@receiver(post_save, sender=Review)
def _review_saved(sender: type[Review], instance: Review, **kwargs: Any) -> None:
    refresh_reviewed({instance.result_id, getattr(instance, "_previous_result_id", None)})


@receiver(post_delete, sender=Review)
def _review_deleted(sender: type[Review], instance: Review, **kwargs: Any) -> None:
    refresh_reviewed({instance.result_id})


class DeadLetter(models.Model):
    """A message ingest could not accept, kept with the reason. Repeats of one message are counted."""

    REASONS = (
        ("malformed", "not JSON or not an object"),
        ("oversized", "larger than the limit"),
        ("wrong_schema_version", "a schema version this dashboard does not speak"),
        ("invalid", "does not follow the contract"),
        ("unknown_device", "from a device that is not registered"),
        ("device_mismatch", "device id in the message differs from the topic"),
        ("conflict", "a result id already stored with different content"),
        ("bad_topic", "a topic outside the contract"),
        ("bad_audio", "audio that is not a readable FLAC recording or does not match its result"),
        ("database", "the database refused it"),
    )
    PAYLOAD_KEEP = 64 * 1024

    reason = models.CharField(max_length=32, choices=REASONS, db_index=True)
    topic = models.CharField(max_length=512)
    device_id = models.CharField(max_length=63, blank=True)
    detail = models.TextField()
    payload = models.BinaryField(help_text=f"the first {PAYLOAD_KEEP} bytes")
    payload_bytes = models.IntegerField()
    payload_sha256 = models.CharField(max_length=64)
    first_received_at = models.DateTimeField(default=timezone.now)
    last_received_at = models.DateTimeField(default=timezone.now, db_index=True)
    count = models.IntegerField(default=1)

    class Meta:
        ordering = ("-last_received_at",)
        constraints = (models.UniqueConstraint(fields=["reason", "topic", "payload_sha256"], name="dead_letter_once"),)

    def __str__(self) -> str:
        return f"{self.reason}: {self.topic}"

    @classmethod
    def record(cls, *, reason: str, topic: str, payload: bytes, detail: str, device_id: str = "") -> DeadLetter:
        """Keep a refused message (idempotent: the same message again only bumps the count)."""
        digest = hashlib.sha256(payload).hexdigest()
        now = timezone.now()
        topic = _printable(topic)[:512]
        with transaction.atomic():
            letter, created = cls.objects.select_for_update().get_or_create(
                reason=reason,
                topic=topic,
                payload_sha256=digest,
                defaults={
                    "device_id": _printable(device_id)[:63],
                    "detail": _printable(detail)[:8000],
                    "payload": bytes(payload[: cls.PAYLOAD_KEEP]),
                    "payload_bytes": len(payload),
                    "first_received_at": now,
                    "last_received_at": now,
                },
            )
            if not created:
                cls.objects.filter(pk=letter.pk).update(count=models.F("count") + 1, last_received_at=now)
        return letter

    @property
    def preview(self) -> str:
        """The kept bytes as text, safe to show (undecodable bytes replaced, control characters escaped)."""
        data = bytes(self.payload)
        text = data[:4096].decode("utf-8", errors="replace")
        suffix = "" if self.payload_bytes <= 4096 else f"\n... ({self.payload_bytes} bytes in all)"
        return _printable(text, keep_newlines=True) + suffix


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _printable(text: str, keep_newlines: bool = False) -> str:
    """Text a database and a page can hold: NUL and other control characters escaped."""
    allowed = "\n\t" if keep_newlines else "\t"
    return "".join(ch if ch.isprintable() or ch in allowed else f"\\x{ord(ch):02x}" for ch in text)
