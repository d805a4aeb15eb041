"""Who and where each replayed recording is: a small CSV beside the replayed files (demos, training).

    file,patient_ref,site,exam_id
    a0405.flac,P-DEMO-01,aortic,demo-exam-01

``file`` is a file name in the replay folder; the other columns may be empty (no patient, site
'unknown', no exam). A replayed file the manifest does not list gets site 'unknown' and no patient, as
without a manifest. A manifest with a bad row is refused whole, naming the line: a recording given to
the wrong patient is worse than one replayed a little later.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from device.core.contract import REF_RE, SITES
from device.core.errors import StethError

COLUMNS = ("file", "patient_ref", "site", "exam_id")


class ManifestError(StethError):
    """The replay manifest cannot be read or has a bad row."""


@dataclass(frozen=True)
class Listed:
    patient_ref: str | None
    site: str
    exam_id: str | None


def load(path: Path) -> dict[str, Listed]:
    """{file name: Listed}; ManifestError naming the line and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"replay manifest {path}: cannot be read ({exc})", "fix audio.replay_manifest") from exc
    rows = csv.DictReader(text.splitlines())
    if rows.fieldnames is None or [c.strip() for c in rows.fieldnames] != list(COLUMNS):
        raise ManifestError(
            f"replay manifest {path}: the first line must be {','.join(COLUMNS)}",
            "write the header line, then one line per recording",
        )
    out: dict[str, Listed] = {}
    for line, row in enumerate(rows, start=2):
        name, patient, site, exam = ((row.get(c) or "").strip() for c in COLUMNS)
        problem = None
        if not name or "/" in name:
            problem = f"file {name!r} must be a file name in the replay folder"
        elif name in out:
            problem = f"{name} is listed twice"
        elif patient and not REF_RE.match(patient):
            problem = f"patient_ref {patient!r} is not a pseudonymous reference (letters, digits, _ . : -)"
        elif site and site not in (*SITES, "unknown"):
            problem = f"site {site!r} is not one of {', '.join(SITES)}, unknown"
        elif exam and not REF_RE.match(exam):
            problem = f"exam_id {exam!r} must be 1-64 letters, digits, _ . : -"
        if problem:
            raise ManifestError(f"replay manifest {path}, line {line}: {problem}", "fix that line")
        out[name] = Listed(patient or None, site or "unknown", exam or None)
    return out
