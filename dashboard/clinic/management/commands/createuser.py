"""`manage.py createuser NAME --role nurse --clinic SLUG`: a user with a role (password from a file or stdin)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.clinic.access import ADMIN, NURSE, ROLES
from dashboard.clinic.models import Clinic, Profile


class Command(BaseCommand):
    help = "Create or update a user with roles (groups) and a clinic; the password never goes on the command line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", action="append", choices=ROLES, required=True, help="repeat for several")
        parser.add_argument("--clinic", help="clinic slug (required for nurses)")
        parser.add_argument("--password-file", help="read the password from this file (default: one line on stdin)")

    def handle(self, *args: Any, **opts: Any) -> None:
        roles = set(opts["role"])
        clinic = None
        if opts["clinic"]:
            clinic = Clinic.objects.filter(slug=opts["clinic"]).first()
            if clinic is None:
                raise CommandError(f"no clinic {opts['clinic']!r}: create it in the admin or with registerdevice")
        elif NURSE in roles:
            raise CommandError("a nurse needs --clinic: nurses see only their clinic's results")
        raw = Path(opts["password_file"]).read_text() if opts["password_file"] else sys.stdin.readline()
        password = raw.strip()
        user = User.objects.filter(username=opts["username"]).first() or User(username=opts["username"])
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("password refused: " + " ".join(exc.messages)) from exc
        user.set_password(password)
        user.is_staff = ADMIN in roles  # admins use Django's admin for users
        user.is_superuser = ADMIN in roles
        user.save()
        user.groups.set(Group.objects.filter(name__in=roles))
        Profile.objects.update_or_create(user=user, defaults={"clinic": clinic})
        self.stdout.write(f"user {user.username}: {', '.join(sorted(roles))} (clinic: {clinic or '-'})")
