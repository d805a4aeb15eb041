"""The ingest's fast decoding gives exactly the contract's answer, on valid and on broken messages."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.ingest import decoding
from device.core import contract
from device.core.errors import ContractError

# Values that sit on the edges where two validators could disagree.
TRICKY = [
    True, False, None, 0, 1, 1.0, -1, 0.5, 2, 1e308, float("nan"), float("inf"), "", "x", "x\n", "normal\n",
    "2026-11-25T09:30:12.250Z\n", "2026-13-45T25:61:61Z", "0b7f3c1e-8a53-4f7e-9d1c-2f6a4b5c6d7e\n", "A" * 65,
    "pi-1\n", "flac", "0" * 64, ("0" * 64) + "\n", [], {}, [1], {"a": 1}, {"normal": 1.5}, {"Normal": 0.5},
]  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _valid_results() -> list[dict[str, Any]]:
    base = copy.deepcopy(contract.EXAMPLE_RESULT)
    with_audio = {**copy.deepcopy(base), "audio": {"format": "flac", "sha256": "a" * 64, "bytes": 1234}}
    nulls = {**copy.deepcopy(base), "patient_ref": None, "site": None, "heart_rate_bpm": None}
    return [base, with_audio, nulls]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _mutate(message: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    out = copy.deepcopy(message)
    target = out
    for key in path[:-1]:
        target = target[key]
    if delete and isinstance(target, dict):
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return out


def _same_answer(name: str, message: Any) -> None:
    payload = json.dumps(message)
    try:
        expected: Any = contract.decode(name, payload)
    except ContractError as exc:
        expected = ("refused", exc.message, exc.errors)
    try:
        got: Any = decoding.decode(name, payload)
    except ContractError as exc:
        got = ("refused", exc.message, exc.errors)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    if decoding.passes_compiled(name, message):  # the compiled schema is never looser than the contract
        assert contract.errors(name, message) == []


def test_valid_messages_decode_to_themselves():
    for message in [*_valid_results(), contract.EXAMPLE_STATUS, json.loads(contract.offline_will("pi-1"))]:
        name = "status" if "state" in message else "result"
        assert decoding.passes_compiled(name, message)
        assert decoding.decode(name, json.dumps(message)) == message


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_edge_values_in_every_field_get_the_contracts_answer(value):
    for message in _valid_results():
        for path in _paths(message):
            _same_answer("result", _mutate(message, path, value, delete=False))
    for path in _paths(contract.EXAMPLE_STATUS):
        _same_answer("status", _mutate(contract.EXAMPLE_STATUS, path, value, delete=False))


def test_schema_version_true_is_refused_as_the_contract_refuses_it():
    message = {**contract.EXAMPLE_RESULT, "schema_version": True}
    with pytest.raises(ContractError):
        decoding.decode("result", json.dumps(message))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mutations_get_the_contracts_answer(data):
    message = data.draw(st.sampled_from(_valid_results()))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(message)
        path = data.draw(st.sampled_from(paths))
        value = data.draw(st.sampled_from(TRICKY) | JSON_VALUES)
        message = _mutate(message, path, value, delete=data.draw(st.booleans()))
    if data.draw(st.booleans()):
        message = {**message, data.draw(st.text(max_size=5)): data.draw(JSON_VALUES)}
    _same_answer("result", message)


def test_oversized_and_malformed_payloads_are_refused_like_the_contract_does():
    for payload in (b"not json", b"[1, 2]", b'{"schema_version": 2}', b"x" * (contract.MAX_RESULT_BYTES + 1)):
        with pytest.raises(ContractError) as fast:
            decoding.decode("result", payload)
        with pytest.raises(ContractError) as slow:
            contract.decode("result", payload)
        assert fast.value.message == slow.value.message
