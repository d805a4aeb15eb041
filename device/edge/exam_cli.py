"""`steth exam --manifest FILE.csv`: one answer per exam from the recordings of its sites.

The manifest has rows ``exam_id,path[,site]`` (a header row naming ``exam_id`` is allowed; relative
paths are taken from the manifest's folder). Each recording is classified as `steth classify --json`
would, and device.core.exam.combine_exam combines an exam's results.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.core import wording
from device.core.errors import AudioError, ConfigError, ModelError

# CirCor's and clinicians' short names for the auscultation sites, as the result message spells them
SITE_NAMES = {
    "av": "aortic",
    "aortic": "aortic",
    "pv": "pulmonic",
    "pulmonic": "pulmonic",
    "tv": "tricuspid",
    "tricuspid": "tricuspid",
    "mv": "mitral",
    "mitral": "mitral",
}


@dataclass(frozen=True)
class Row:
    exam_id: str
    path: Path
    site: str | None


def site_name(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    return SITE_NAMES.get(raw.lower(), "unknown")


def read_manifest(path: Path) -> dict[str, list[Row]]:
    """Exams in file order, each with its rows; ConfigError (with the line) on a malformed row."""
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist", "give a CSV with rows exam_id,path[,site]")
    exams: dict[str, list[Row]] = {}
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if lineno == 1 and cells[0].lower() == "exam_id":
                continue
            if len(cells) < 2 or len(cells) > 3 or not cells[0] or not cells[1]:
                raise ConfigError(
                    f"{path}:{lineno}: expected exam_id,path[,site], got {','.join(row)!r}",
                    "one recording per row: the exam it belongs to, its file, optionally its site",
                )
            file = Path(cells[1])
            file = file if file.is_absolute() else path.parent / file
            exams.setdefault(cells[0], []).append(Row(cells[0], file, site_name(cells[2]) if len(cells) == 3 else None))
    if not exams:
        raise ConfigError(f"manifest {path} lists no recordings", "add rows exam_id,path[,site]")
    return exams


def exam_result(clf: Any, rows: list[Row]) -> dict[str, Any]:
    """One exam's object: the combined answer, every recording's own result, and the files that failed."""
    from device.core.exam import combine_exam

    results: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for row in rows:
        try:
            result = clf.analyse_file(row.path).to_json(str(row.path))
        except AudioError as exc:
            errors.append({"file": str(row.path), "error": str(exc)})
            continue
        result["site"] = row.site
        results.append(result)
    return {"exam_id": rows[0].exam_id, **combine_exam(results), "recordings": results, "errors": errors}


def describe(exam: dict[str, Any]) -> str:
    # an exam is unsure only when none of its recordings was usable: said as that, not as a signal issue
    quality = {} if exam["n_usable"] else {"ok": False, "reason": "no usable recording"}
    lines = [
        f"Exam {exam['exam_id']}: {wording.summary(exam['label'], exam['probabilities'], quality)}  "
        f"({exam['n_usable']} of {exam['n_recordings']} recordings usable)",
        f"  Murmur:  {wording.murmur(exam['murmur'])}",
    ]
    for r in exam["recordings"]:
        said = wording.summary(r["label"], r["probabilities"], r.get("quality") or {})
        extra = f", murmur {wording.murmur(r['murmur'])}" if r.get("murmur") else ""
        lines.append(f"  {r.get('site') or '-':<10} {r['file']}: {said}{extra}")
    lines += [f"  failed     {e['file']}: {e['error']}" for e in exam["errors"]]
    return "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser("exam", help="one answer per exam from a manifest of its recordings (exam_id,path[,site])")
    p.add_argument("--manifest", type=Path, required=True, help="CSV rows exam_id,path[,site]")
    p.add_argument("--model", default=None, help="shipped model name or a .tflite path (default: screening)")
    p.add_argument("--json", action="store_true", help="one JSON object per exam on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from device.core.inference import load_model

    exams = read_manifest(args.manifest)  # ConfigError: reported by the CLI with its fix
    try:
        clf = load_model(args.model)
    except ModelError as exc:
        print(f"steth: error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for rows in exams.values():
        exam = exam_result(clf, rows)
        failed += len(exam["errors"])
        for e in exam["errors"]:
            print(f"steth: {e['file']}: {e['error']}", file=sys.stderr)
        print(json.dumps(exam) if args.json else describe(exam) + "\n", flush=True)
    if not args.json:
        print(wording.NOTICE)
    return 1 if failed else 0
