"""Decoding messages on the ingest hot path: ``device.core.contract.decode``, ten times cheaper for valid ones.

Validating a result with jsonschema costs about half a millisecond, more than everything else ingest
does with it (profiled by tests/benchmarks/bench_ingest.py). The same schema compiled to Python code
by fastjsonschema checks a valid message in a twentieth of that. The contract stays the authority:
a message the compiled schema accepts is one jsonschema accepts too (it is at least as strict on every
keyword the schemas use: ``$`` in patterns becomes ``\\Z``, formats are checked; the one place it is
looser, ``const`` comparing ``true`` equal to ``1``, is closed here by checking ``schema_version``'s
type; tests/dashboard/test_decoding.py checks the implication on many mutated messages), and anything
it refuses goes through ``contract.decode``, which decides and gives the readable errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import fastjsonschema

from device.core import contract


@functools.cache
def _compiled(name: str, version: int | None = None) -> Callable[[Any], Any]:
    return fastjsonschema.compile(contract.schema(name, version))


def passes_compiled(name: str, message: Any, version: int | None = None) -> bool:
    """True when the compiled schema (of ``version``, default the newest) accepts ``message`` (then
    jsonschema does too)."""
    try:
        _compiled(name, version)(message)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def decode(name: str, payload: bytes | str, max_bytes: int | None = None) -> dict[str, Any]:
    """Exactly ``contract.decode``'s answer (the message, or ContractError), faster when the message is valid."""
    limit = max_bytes or contract.max_bytes_of(name)
    if len(payload) <= limit:
        try:
            message = contract.loads(payload)
        except ValueError:
            message = None
        version = message.get("schema_version") if isinstance(message, dict) else None
        # every version this dashboard has a schema for: results written by older devices still arrive
        if type(version) is int and version in contract.versions(name) and passes_compiled(name, message, version):
            return message
    return contract.decode(name, payload, max_bytes=max_bytes)
