"""A result in words, the one source of them for the bedside command line, the device and the dashboard.

An ``unsure`` answer is useless as a bare percentage ("confidence 89%" next to "unsure" reads as 89% sure
of being unsure): the reader needs why (the signal, in words) and what the model leaned to anyway
("Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal"). Quality issues are written
"what: what to do" (device/core/analysis.py), so the part before the first ": " is the reason and the
part after it the advice; the advice is said once, without the "record again" that several issue texts
end with (the advice line says it itself).

Pure functions over plain values (label, probabilities, the contract's quality object), so a stored
result and a fresh analysis (``Analysis.quality_dict()``) are said the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

UNSURE = "unsure"

# said next to every answer, on the device's screen, in the CLI and on the dashboard
NOTICE = "Screening support, not a diagnosis: a clinician decides."

# quality.reason codes of the contract (optional field; present when unsure)
REASONS = {
    "no_heart_sounds": "no heart sounds found",
    "noise": "too much noise",
    "silence": "silence, nothing recorded",
    "clipping": "clipping, the input is too loud",
    "too_short": "the recording is too short",
}

# the advice part of an issue text often ends with it; the advice is said with it once
_RECORD_AGAIN_RE = re.compile(r"(?:,?\s*(?:then|and)\s+|^)record again\.?$", re.IGNORECASE)


def _issues(quality: Mapping[str, Any]) -> list[str]:
    return [str(i) for i in quality.get("issues") or [] if str(i).strip()]


def split_issue(issue: str) -> tuple[str, str]:
    """'no clear heartbeat rhythm: hold still, ...' -> ('no clear heartbeat rhythm', 'hold still, ...')."""
    what, sep, advice = issue.partition(": ")
    if not sep:
        return issue.strip(), ""
    return what.strip(), _RECORD_AGAIN_RE.sub("", advice.strip()).strip(" ,;")


def unsure_reason(quality: Mapping[str, Any]) -> str:
    """Why a result is unsure, in words: 'poor signal: no clear heartbeat rhythm'.

    The first issue only: the analysis lists the one that blocks the decision first (silent, clipped),
    and the others often follow from it (a silent recording is also weak and has no rhythm); every issue
    stays in the result and in the advice.
    """
    issues = _issues(quality)
    if issues:
        return f"poor signal: {split_issue(issues[0])[0]}"
    code = quality.get("reason")
    if isinstance(code, str) and code:
        return f"poor signal: {REASONS.get(code, code.replace('_', ' '))}"
    if quality.get("ok") is False:
        return "poor signal"
    return "the model could not decide"  # e.g. a sound-type model hearing mostly artefact


def model_leaning(probabilities: Mapping[str, float], label: str | None = None) -> str:
    """'model: 89% abnormal': the probability of ``label``, or of the most likely label when ``label`` is
    None or not one of the model's (unsure)."""
    scored = {k: float(v) for k, v in probabilities.items() if k != UNSURE}
    if not scored:
        return "model: no probability"
    name = label if label is not None and label in scored else max(scored, key=scored.__getitem__)
    return f"model: {scored[name]:.0%} {name.replace('_', ' ')}"


def summary(label: str, probabilities: Mapping[str, float], quality: Mapping[str, Any]) -> str:
    """One line: the answer, why when unsure, and the model's probability, never a bare percentage:
    'Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal', 'Abnormal — model: 82% abnormal'."""
    if label == UNSURE:
        return f"Unsure — {unsure_reason(quality)}. {model_leaning(probabilities).capitalize()}"
    return f"{label.replace('_', ' ').capitalize()} — {model_leaning(probabilities, label)}"


def rerecord_advice(quality: Mapping[str, Any]) -> str:
    """What to change before recording again, each piece once and without "record again" ('' when the
    issues give none): for a line that says "Record again:" itself."""
    pieces: list[str] = []
    for issue in _issues(quality):
        text = split_issue(issue)[1]
        if text and text.lower() not in (p.lower() for p in pieces):
            pieces.append(text)
    return "; ".join(pieces)


def advice(quality: Mapping[str, Any]) -> str:
    """What to do about a poor signal as a sentence ending in "record again ..." ('' when the signal is fine)."""
    if quality.get("ok", True) and not _issues(quality):
        return ""
    text = "; ".join(p for p in (rerecord_advice(quality), "record again if the patient is still here") if p)
    return text[:1].upper() + text[1:] + "."


def murmur(value: Mapping[str, Any] | None) -> str:
    """A murmur answer (a result's ``murmur`` field, or an exam's with its ``sites``) with its probability:
    'present at mitral (model: 81% present)'; '' when there is none. ``unknown`` is said as not assessed:
    the signal was unfit for it."""
    if not value or not value.get("label"):
        return ""
    label = str(value["label"])
    if label == "unknown":
        return "not assessed (poor signal)"
    sites = [str(s) for s in value.get("sites") or []]
    where = f" at {', '.join(sites)}" if sites else ""
    p = value.get("probability")
    return f"{label}{where}" + (f" (model: {float(p):.0%} present)" if p is not None else " (model: no probability)")
