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
import zoneinfo
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone

from device.core import contract, wording

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager

LOCATIONS = (*contract.SITES, "unknown")
LABELS = contract.SCREENING_LABELS
AWAITING_REVIEW_LABELS = ("abnormal", "unsure")
# The big JSON of a result, which lists (feed, results, patient timeline) never show: not loaded there.
# (quality_issues is loaded: a few short strings, and an unsure result's reason in words comes from them.)
LISTING_DEFERRED = ("message", "windows", "audio_declared")


def validate_time_zone(value: str) -> None:
    """An IANA zone name this server knows (empty: the server's TIME_ZONE)."""
    if value and value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a time zone name this server knows (e.g. Europe/Berlin)")


class Clinic(models.Model):
    slug = models.SlugField(max_length=64, unique=True, help_text="short id used in URLs and exports")
    name = models.CharField(max_length=200)
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_time_zone],
        help_text="IANA name, e.g. Europe/Berlin; empty: the server's TIME_ZONE",
    )

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
    # Set by ingest before the insert (dashboard/clinic/exams.py): the exam this result belongs to.
    exam = models.ForeignKey("Exam", null=True, blank=True, on_delete=models.SET_NULL, related_name="results")
    device_id: int | None
    clinic_id: int | None
    exam_id: int | None
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
    def quality(self) -> dict[str, Any]:
        """The contract's quality object (its reason code only when the message is loaded: lists defer it)."""
        quality: dict[str, Any] = {"ok": self.quality_ok, "issues": list(self.quality_issues or [])}
        if "message" not in self.get_deferred_fields() and isinstance(self.message, dict):
            reason = (self.message.get("quality") or {}).get("reason")
            if reason:
                quality["reason"] = reason
        return quality

    @property
    def summary(self) -> str:
        """The answer in words with the model's probability: "Unsure — poor signal: .... Model: 89% abnormal"."""
        return wording.summary(self.label, self.probabilities or {}, self.quality)

    @property
    def signal_problem(self) -> str:
        """What makes the signal poor, in words ("poor signal: clipping")."""
        return wording.unsure_reason(self.quality)

    @property
    def advice(self) -> str:
        return wording.advice(self.quality)

    @property
    def murmur(self) -> dict[str, Any] | None:
        value = self.message.get("murmur") if isinstance(self.message, dict) else None
        return value if isinstance(value, dict) else None

    @property
    def murmur_text(self) -> str:
        """The murmur answer in words with the model's probability ("present (model: 81% present)")."""
        return wording.murmur(self.murmur)

    @property
    def cycles(self) -> dict[str, list[float]]:
        value = self.message.get("cycles") if isinstance(self.message, dict) else None
        if not isinstance(value, dict):
            return {"s1": [], "s2": []}
        return {"s1": list(value.get("s1") or []), "s2": list(value.get("s2") or [])}

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
    """Set ``Result.reviewed`` from the reviews that exist now (and their exams' ``reviewed``)."""
    ids = {r for r in result_ids if r is not None}
    if ids:
        Result.objects.filter(pk__in=ids).update(
            reviewed=models.Exists(Review.objects.filter(result=models.OuterRef("pk")))
        )
        exams = set(Result.objects.filter(pk__in=ids, exam__isnull=False).values_list("exam_id", flat=True))
        refresh_exam_reviewed(exams)


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


class Exam(models.Model):
    """One patient's exam: the results a device sent under one ``exam_id`` (several auscultation sites).

    The grouping rule: results with an ``exam_id`` belong to the exam (their device, that id); a result
    without one (older devices, uploads) is an exam of its own, one recording. Grouping those by patient
    and day instead was rejected: two visits on one day, or recordings without a patient reference, would
    be merged into an answer nobody examined. ``key`` says which: "<device>/<exam_id>" or "result/<id>".

    The columns below ``key`` are a summary kept by ``dashboard.clinic.exams.refresh`` whenever a result
    joins the exam or a review changes, so the worklist orders exams in SQL without reading results.
    """

    # worklist order (lower first), after "not reviewed yet": findings, then normal, then unsure
    PRIORITY_FINDING, PRIORITY_NORMAL, PRIORITY_UNSURE = 0, 1, 2

    key = models.CharField(max_length=160, unique=True)
    exam_id = models.CharField(max_length=64, blank=True, help_text="the device's exam id (empty: one recording)")
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="exams")
    clinic = models.ForeignKey(Clinic, null=True, blank=True, on_delete=models.SET_NULL, related_name="exams")
    patient_ref = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="the first recording's time")
    received_at = models.DateTimeField(default=timezone.now, help_text="when its latest result arrived")
    n_results = models.IntegerField(default=0)
    label = models.CharField(max_length=32, blank=True, help_text="the exam's answer (device.core.exam)")
    murmur = models.CharField(max_length=16, blank=True, help_text="present, absent, unknown or empty")
    answer = models.JSONField(default=dict, blank=True, help_text="combine_exam's output")
    reason = models.CharField(max_length=300, blank=True, help_text="the answer in words, for the worklist")
    priority = models.SmallIntegerField(default=PRIORITY_UNSURE)
    reviewed = models.BooleanField(default=False, editable=False)
    device_id: int | None
    clinic_id: int | None
    if TYPE_CHECKING:
        results: RelatedManager[Result]
        exam_reviews: RelatedManager[ExamReview]

    class Meta:
        ordering = ("reviewed", "priority", "-received_at")
        indexes = (
            # the worklist of a nurse (one clinic) and of a physician (every clinic), read in index order
            models.Index(fields=["clinic", "reviewed", "priority", "-received_at"], name="exam_worklist"),
            models.Index(fields=["reviewed", "priority", "-received_at"], name="exam_worklist_all"),
            # exams per day (the overview's charts): the last fortnight
            models.Index(fields=["clinic", "started_at"], name="exam_clinic_started"),
            models.Index(fields=["started_at"], name="exam_started"),
        )

    def __str__(self) -> str:
        return f"exam {self.key}"

    @property
    def latest_review(self) -> ExamReview | None:
        return next(iter(self.exam_reviews.all()), None)


class ExamReview(models.Model):
    """A physician's reading of a whole exam: agrees or not with the exam's answer, their label, a note."""

    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="exam_reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="exam_reviews")
    agrees = models.BooleanField()
    label = models.CharField(max_length=16, choices=Review.LABELS)
    note = models.TextField(blank=True, max_length=4000)
    created_at = models.DateTimeField(default=timezone.now)
    exam_id: int

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.label} by {self.reviewer} on exam {self.exam_id}"


def refresh_exam_reviewed(exam_ids: set[Any]) -> None:
    """An exam is reviewed when it has an exam review, or when every one of its results has a review."""
    ids = {e for e in exam_ids if e is not None}
    if ids:
        unreviewed_result = Result.objects.filter(exam=models.OuterRef("pk"), reviewed=False)
        Exam.objects.filter(pk__in=ids).update(
            reviewed=models.Exists(ExamReview.objects.filter(exam=models.OuterRef("pk")))
            | ~models.Exists(unreviewed_result)
        )


@receiver(post_save, sender=ExamReview)
@receiver(post_delete, sender=ExamReview)
def _exam_review_changed(sender: type[ExamReview], instance: ExamReview, **kwargs: Any) -> None:
    refresh_exam_reviewed({instance.exam_id})


class RefusedRecording(models.Model):
    """A recording a device could not analyse (empty, unreadable, too short...): no result exists for it.

    Keyed by the device's ``refusal_id``, so a refusal sent twice is stored once (contract: refused).
    Silent recordings are not here: they are results labelled *unsure* ("silent" in their quality issues).
    """

    refusal_id = models.UUIDField(primary_key=True)
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="refusals")
    clinic = models.ForeignKey(Clinic, null=True, blank=True, on_delete=models.PROTECT, related_name="refusals")
    refused_at = models.DateTimeField(help_text="the device's clock when it refused the recording")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=8, help_text="replay (a file), capture (continuous input), record (bedside)")
    recording = models.CharField(max_length=256, blank=True)
    reason = models.CharField(max_length=32, db_index=True)
    detail = models.TextField(blank=True)
    patient_ref = models.CharField(max_length=64, blank=True)
    location = models.CharField(max_length=16, blank=True)
    exam_id = models.CharField(max_length=64, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    message = models.JSONField(help_text="the message as received")
    ingested_by = models.CharField(max_length=64, blank=True)
    device_id: int

    class Meta:
        ordering = ("-received_at",)
        indexes = [models.Index(fields=["device", "received_at"])]  # noqa: RUF012 - Django reads it as a list

    def __str__(self) -> str:
        return f"{self.device_id}: {self.reason} ({self.recording or '-'})"

    @classmethod
    def store(cls, message: dict[str, Any], *, device: Device, ingested_by: str) -> str:
        """Store a refused message (validated): ``created``, ``duplicate`` (the same again) or ``conflict``
        (another message under a stored id; the first is kept)."""
        pk = uuid.UUID(message["refusal_id"])
        with transaction.atomic():
            row, created = cls.objects.get_or_create(
                pk=pk,
                defaults={
                    "device": device,
                    "clinic": device.clinic,
                    "refused_at": _parse_time(message["at"]) or timezone.now(),
                    "source": message["source"],
                    "recording": message.get("recording") or "",
                    "reason": message["reason"],
                    "detail": message["message"],
                    "patient_ref": message.get("patient_ref") or "",
                    "location": message.get("site") or "",
                    "exam_id": message.get("exam_id") or "",
                    "duration_s": message.get("duration_s"),
                    "message": message,
                    "ingested_by": ingested_by[:64],
                },
            )
        if created:
            return "created"
        return "duplicate" if row.message == message and row.device_id == device.pk else "conflict"


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
