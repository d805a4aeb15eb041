"""A result in words, the same on the device's screen, in the CLI and on the dashboard.

An ``unsure`` answer is useless as a bare percentage: the reader needs why (the signal, in words) and
what the model leaned to anyway ("Unsure — poor signal: no clear heartbeat rhythm. Model: 89% abnormal").
Quality issues are written "what: what to do" (device/core/analysis.py), so the part before the first
colon is the reason and the part after it the advice; the advice is said once, never repeated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UNSURE = "unsure"

# quality.reason codes of the contract (optional field; present when unsure)
REASONS = {
    "no_heart_sounds": "no heart sounds found",
    "noise": "too much noise",
    "silence": "silence, nothing recorded",
    "clipping": "clipping, the input is too loud",
    "too_short": "the recording is too short",
}


def _issues(quality: Mapping[str, Any]) -> list[str]:
    return [str(i) for i in quality.get("issues") or [] if str(i).strip()]


def issue_reason(issue: str) -> str:
    """The "what" of a quality issue ("no clear heartbeat rhythm: hold still" -> "no clear heartbeat rhythm")."""
    return issue.split(":", 1)[0].strip()


def issue_advice(issue: str) -> str:
    """The "what to do" of a quality issue, or "" when it gives none."""
    parts = issue.split(":", 1)
    return parts[1].strip() if len(parts) == 2 else ""


def unsure_reason(quality: Mapping[str, Any]) -> str:
    """Why a result is unsure, in words."""
    code = quality.get("reason")
    issues = _issues(quality)
    if issues:
        reason = "; ".join(dict.fromkeys(issue_reason(i) for i in issues))
        return f"poor signal: {reason}"
    if isinstance(code, str) and code:
        return f"poor signal: {REASONS.get(code, code.replace('_', ' '))}"
    if quality.get("ok") is False:
        return "poor signal"
    return "the model could not decide"


def model_leaning(probabilities: Mapping[str, float]) -> str:
    """What the model leaned to: "Model: 89% abnormal" (its most probable label)."""
    scored = {k: float(v) for k, v in probabilities.items() if k != UNSURE}
    if not scored:
        return "Model: no probability"
    label = max(scored, key=lambda k: scored[k])
    return f"Model: {scored[label]:.0%} {label}"


def summary(label: str, probabilities: Mapping[str, float], quality: Mapping[str, Any]) -> str:
    """One line: the answer, why when unsure, and the model's probability, never a bare percentage."""
    if label == UNSURE:
        return f"Unsure — {unsure_reason(quality)}. {model_leaning(probabilities)}"
    value = probabilities.get(label)
    if value is None:
        return f"{label.capitalize()} — {model_leaning(probabilities)}"
    return f"{label.capitalize()} — model: {float(value):.0%} {label}"


def advice(quality: Mapping[str, Any], *, patient_present_hint: bool = True) -> str:
    """What to do about a poor signal, each piece of advice once ("" when the signal is fine)."""
    if quality.get("ok", True) and not _issues(quality):
        return ""
    pieces: list[str] = []
    for issue in _issues(quality):
        text = issue_advice(issue)
        if text and text.lower() not in (p.lower() for p in pieces):
            pieces.append(text)
    said_record_again = any("record again" in p.lower() for p in pieces)
    if patient_present_hint and not said_record_again:
        pieces.append("record again if the patient is still here")
    text = "; ".join(pieces)
    return text[:1].upper() + text[1:] + "." if text else ""


def quality_of(message: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``quality`` object of a result message (empty when missing)."""
    quality = message.get("quality")
    return quality if isinstance(quality, Mapping) else {}
