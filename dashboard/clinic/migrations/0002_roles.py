# ruff: noqa: RUF012 - migrations use Django's list attributes
"""The three roles, as groups. Rules about what each may do live in dashboard.clinic.access."""

from typing import Any

from django.db import migrations

ROLES = ("nurse", "physician", "admin")


def create_roles(apps: Any, schema_editor: Any) -> None:
    group = apps.get_model("auth", "Group")
    for name in ROLES:
        group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("clinic", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
