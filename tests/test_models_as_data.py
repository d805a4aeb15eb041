"""No code compares a model's or a task's name: what differs between models is in their sidecars and
task definitions (the issue's check, kept by a test: a new comparison fails here, with where it is)."""

from __future__ import annotations

import ast
from pathlib import Path

from converter.tasks import TASKS
from device.core.inference import available_models

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("device", "converter", "dashboard")


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {s for elt in node.elts for s in _strings(elt)}
    return set()


def comparisons_with(names: set[str], root: Path = ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Compare):
                    hit = set().union(*(_strings(n) for n in (node.left, *node.comparators))) & names
                    if hit:
                        found.append(f"{path.relative_to(root)}:{node.lineno} compares with {sorted(hit)}")
    return found


def test_no_code_compares_a_model_or_task_name():
    names = set(TASKS) | set(available_models())
    assert {"screening", "sound_type"} <= names
    assert comparisons_with(names) == []


def test_the_check_finds_such_a_comparison(tmp_path):
    # the check itself must be able to fail: a comparison planted in a package-shaped folder is found
    (tmp_path / "converter").mkdir()
    (tmp_path / "converter" / "x.py").write_text('def f(task):\n    return task.name in ("screening", "other")\n')
    assert comparisons_with({"screening"}, tmp_path) == ["converter/x.py:2 compares with ['screening']"]
