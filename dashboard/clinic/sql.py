"""Inserts of many rows in one statement that skip rows already stored and say which were new.

PostgreSQL gets the rows as one JSON parameter unpacked by ``jsonb_to_recordset`` into the columns' own
types (quoting thousands of parameters one by one costs more than the rest of ingest; see records.py);
SQLite gets one VALUES tuple per row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db import connection


def json_value(field: Any, value: Any) -> Any:
    """A field's Python value as JSON that jsonb_to_recordset reads back into the column's type."""
    kind = field.get_internal_type()
    if value is None or kind in ("JSONField", "CharField", "FloatField", "IntegerField", "BooleanField",
                                 "BigAutoField", "AutoField", "ForeignKey", "SmallIntegerField"):  # fmt: skip
        return value
    if kind == "UUIDField":
        return str(value)
    if kind == "DateTimeField":
        return value.isoformat()  # aware (USE_TZ): PostgreSQL reads the offset
    raise TypeError(f"insert: no JSON form for {field.name} ({kind}); extend json_value")


def insert_skipping_conflicts(objs: Sequence[Any], *, conflict: str, returning: str) -> set[Any]:
    """Insert model instances (not their auto primary key), skipping those whose ``conflict`` column is
    taken; the ``returning`` column of the rows inserted. PostgreSQL: one JSON parameter, as above."""
    if not objs:
        return set()
    meta, qn = objs[0]._meta, connection.ops.quote_name
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    columns = ", ".join(qn(f.column) for f in fields)
    tail = f"ON CONFLICT ({qn(conflict)}) DO NOTHING RETURNING {qn(returning)}"
    if connection.vendor == "postgresql":
        types = ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)
        data = json.dumps([{f.column: json_value(f, f.pre_save(o, add=True)) for f in fields} for o in objs])
        source = f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS r({types})"  # noqa: S608 - model names
        sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) {source} {tail}"
        params: list[Any] = [data]
    else:
        row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {', '.join([row_sql] * len(objs))} {tail}"  # noqa: S608 - names from the model
        params = [f.get_db_prep_save(f.pre_save(o, add=True), connection) for o in objs for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {value for (value,) in cursor.fetchall()}
