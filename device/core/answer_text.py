"""How a result is said to a person, shared by the bedside command line and the dashboard.

An unsure result is said as its reason in words plus what the model leaned to, e.g.
``UNSURE — poor signal: no clear heartbeat rhythm (model: 89% abnormal)``: a bare "confidence 89%"
next to "unsure" reads as 89% sure of being unsure. What to do is said once: the advice of each quality
issue, without the "record again" that several issue texts end with (the line itself says it).

Pure functions over plain values (label, probabilities, quality issues), so a stored result and a fresh
analysis are said the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

UNSURE = "unsure"
# the advice part of an issue text ("what: advice") often ends with it; the answer says it once
_RECORD_AGAIN_RE = re.compile(r"(?:,?\s*(?:then|and)\s+|^)record again\.?$", re.IGNORECASE)


def split_issue(issue: str) -> tuple[str, str]:
    """'no clear heartbeat rhythm: hold still, ...' -> ('no clear heartbeat rhythm', 'hold still, ...')."""
    what, sep, advice = issue.partition(": ")
    if not sep:
        return issue.strip(), ""
    return what.strip(), _RECORD_AGAIN_RE.sub("", advice.strip()).strip(" ,;")


def model_leaning(probabilities: Mapping[str, float], label: str | None = None) -> str:
    """'model: 89% abnormal': the probability of ``label``, or of the most likely label when ``label`` is
    None or not one of the model's (unsure)."""
    if not probabilities:
        return "model: no probability"
    name = label if label is not None and label in probabilities else max(probabilities, key=probabilities.__getitem__)
    return f"model: {probabilities[name]:.0%} {name.replace('_', ' ')}"


def unsure_reason(issues: Sequence[str]) -> str:
    """Why a result is unsure, in words: 'poor signal: no clear heartbeat rhythm'.

    The first issue only: the analysis lists the one that blocks the decision first (silent, clipped),
    and the others often follow from it (a silent recording is also weak and has no rhythm); every issue
    stays in the result and in the advice.
    """
    whats = [split_issue(i)[0] for i in issues if i.strip()]
    if not whats:
        return "the model could not decide"  # e.g. a sound-type model hearing mostly artefact
    return f"poor signal: {whats[0]}"


def headline(label: str, probabilities: Mapping[str, float], issues: Sequence[str] = ()) -> str:
    """'ABNORMAL (model: 82% abnormal)' or 'UNSURE — poor signal: ... (model: 89% abnormal)'."""
    if label == UNSURE:
        return f"UNSURE — {unsure_reason(issues)} ({model_leaning(probabilities)})"
    return f"{label.upper()} ({model_leaning(probabilities, label)})"


def rerecord_advice(issues: Sequence[str]) -> str:
    """What to do before recording again, each piece of advice once ('' when the issues give none)."""
    seen: list[str] = []
    for issue in issues:
        advice = split_issue(issue)[1]
        if advice and advice not in seen:
            seen.append(advice)
    return "; ".join(seen)
