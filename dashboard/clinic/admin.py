"""Django's admin for admins: users (with their clinic), clinics, devices, dead letters."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User

from dashboard.clinic.models import Clinic, DeadLetter, Device, Profile, RefusedRecording, Result, Review


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    verbose_name_plural = "clinic"


class StethUserAdmin(UserAdmin):
    inlines = (ProfileInline,)


admin.site.unregister(User)
admin.site.register(User, StethUserAdmin)


@admin.register(Clinic)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "time_zone")
    prepopulated_fields = {"slug": ("name",)}  # noqa: RUF012 - Django reads it as a dict


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("device_id", "name", "clinic", "state", "last_seen", "software_version", "auto_registered")
    list_filter = ("state", "clinic", "auto_registered")
    search_fields = ("device_id", "name")
    readonly_fields = ("state", "last_seen", "status_at", "software_version", "installed_models", "outbox", "uptime_s")


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    list_display = ("result_id", "label", "clinic", "device", "patient_ref", "recorded_at", "received_at")
    list_filter = ("label", "source", "clinic")
    search_fields = ("result_id", "patient_ref")
    # results are evidence: read-only here, never edited
    readonly_fields = tuple(f.name for f in Result._meta.fields)

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(RefusedRecording)
class RefusedRecordingAdmin(admin.ModelAdmin):
    list_display = ("received_at", "device", "reason", "recording", "source", "patient_ref")
    list_filter = ("reason", "source", "clinic")
    search_fields = ("refusal_id", "recording", "patient_ref")
    readonly_fields = tuple(f.name for f in RefusedRecording._meta.fields)  # reports from devices: never edited

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ("result", "reviewer", "agrees", "label", "created_at")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("last_received_at", "reason", "topic", "count", "payload_bytes")
    list_filter = ("reason",)
    readonly_fields = (*(f.name for f in DeadLetter._meta.fields if f.name != "payload"), "preview")
    exclude = ("payload",)

    def has_add_permission(self, request: object) -> bool:
        return False
