"""Who may see and do what. Roles are Django groups; every rule lives here, views only ask.

- nurse: uploads recordings; sees results and devices of their own clinic only.
- physician: sees every result, listens, reviews, exports.
- admin: manages devices, users and dead letters (Django's admin too); sees device status.
A user may hold several roles (e.g. a physician who is also an admin).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from dashboard.clinic.models import Clinic, Device, Exam, RefusedRecording, Result

NURSE, PHYSICIAN, ADMIN = "nurse", "physician", "admin"
ROLES = (NURSE, PHYSICIAN, ADMIN)


def roles(user: Any) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_steth_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if user.is_superuser:
            cached |= {ADMIN}
        user._steth_roles = cached
    return frozenset(cached)


def has_role(user: Any, *wanted: str) -> bool:
    return bool(roles(user) & set(wanted))


def user_clinic(user: Any) -> Clinic | None:
    profile = getattr(user, "profile", None)
    return profile.clinic if profile is not None else None


def is_clinical(user: Any) -> bool:
    return has_role(user, NURSE, PHYSICIAN)


def can_review(user: Any) -> bool:
    return has_role(user, PHYSICIAN)


def can_export(user: Any) -> bool:
    return has_role(user, PHYSICIAN)


def can_upload(user: Any) -> bool:
    return has_role(user, NURSE, PHYSICIAN)


def can_manage(user: Any) -> bool:
    return has_role(user, ADMIN)


def _by_clinic(qs: QuerySet[Any], user: Any, *see_all: str) -> QuerySet[Any]:
    """All of ``qs`` for the roles in ``see_all``; a nurse's clinic's rows (none without a clinic); else none."""
    if has_role(user, *see_all):
        return qs
    if has_role(user, NURSE):
        clinic = user_clinic(user)
        return qs.filter(clinic=clinic) if clinic is not None else qs.none()
    return qs.none()


def visible_results(user: Any) -> QuerySet[Result]:
    """Physicians see everything; a nurse sees their clinic's results (none without a clinic)."""
    return _by_clinic(Result.objects.select_related("device", "clinic"), user, PHYSICIAN)


def visible_devices(user: Any) -> QuerySet[Device]:
    """Physicians and admins see every device; a nurse their clinic's."""
    return _by_clinic(Device.objects.select_related("clinic"), user, PHYSICIAN, ADMIN)


def visible_refusals(user: Any) -> QuerySet[RefusedRecording]:
    """Recordings devices refused: of the devices the user sees (admins and physicians: all)."""
    return RefusedRecording.objects.select_related("device").filter(device__in=visible_devices(user))


def upload_clinics(user: Any) -> QuerySet[Clinic]:
    """Clinics a user may file an upload under: a nurse only their own."""
    if has_role(user, PHYSICIAN):
        return Clinic.objects.all()
    clinic = user_clinic(user)
    return Clinic.objects.filter(pk=clinic.pk) if clinic is not None else Clinic.objects.none()


def visible_exams(user: Any) -> QuerySet[Exam]:
    """Exams as results: physicians see every exam, a nurse their clinic's."""
    qs = Exam.objects.select_related("device", "clinic").filter(n_results__gt=0)
    if has_role(user, PHYSICIAN):
        return qs
    if has_role(user, NURSE):
        clinic = user_clinic(user)
        return qs.filter(clinic=clinic) if clinic is not None else qs.none()
    return qs.none()
