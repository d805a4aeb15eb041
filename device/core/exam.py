"""One answer per exam: the results of a patient's recordings (several auscultation sites) combined.

A pure function over result dicts as `steth classify --json` prints them (or result messages, which carry
the same fields), so the device, `steth exam` and the dashboard combine sites the same way. Each result
may carry a ``site`` (the result message has one; `steth exam` adds the manifest's).

The rules (chosen on CirCor development patients, docs/exam.md):
- Only usable recordings count: quality ok and a label other than ``unsure``. An exam without one is
  ``unsure`` (re-record), murmur ``unknown``.
- Screening label: any finding wins. The exam is ``normal`` only when every usable recording is normal;
  otherwise it takes the finding with the highest probability among the recordings' labels. Per label,
  the exam probability is the largest any usable recording gave to a finding and the smallest it gave
  to ``normal`` (for normal/abnormal these still sum to one).
- Murmur: ``MURMUR_RULE`` over the usable recordings' P(present). The murmur model's threshold was
  chosen for per-patient balanced accuracy under this rule and its probabilities are shifted so that
  0.5 is that threshold, so the exam says ``present`` exactly when the combined P(present) >= 0.5.
  ``sites`` lists the sites whose recordings say present, most likely first (empty when absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NORMAL = "normal"
UNSURE = "unsure"
# "mean" of the sites' P(present): in grouped 5-fold CV on CirCor development patients it beat "max"
# (present as soon as one site says so) on per-patient MAcc with and without PASCAL in training
# (0.906 vs 0.867, 0.896 vs 0.888; docs/exam.md). One loud site can be outvoted by clean ones, so a
# recording may say present while its exam says absent: the exam is the answer to act on.
MURMUR_RULE = "mean"
MURMUR_THRESHOLD = 0.5  # on the shifted probabilities: the model's own threshold

RULE_DESCRIPTION = {
    "label": "any finding among usable recordings (quality ok, not unsure); normal only if all are normal",
    "murmur": f"{MURMUR_RULE} of P(present) over usable recordings, present at >= {MURMUR_THRESHOLD}",
}


def usable(result: dict[str, Any]) -> bool:
    """A recording whose answer counts: the pipeline judged the signal fit and the model answered."""
    quality = result.get("quality") or {}
    return bool(quality.get("ok", False)) and result.get("label") not in (None, UNSURE)


def _murmur_probability(result: dict[str, Any]) -> float | None:
    m = result.get("murmur")
    if not isinstance(m, dict) or m.get("label") == "unknown" or m.get("probability") is None:
        return None
    return float(m["probability"])


def combine_murmur(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The exam's murmur answer from the usable recordings that carry one."""
    scored = [(r, p) for r in results if usable(r) and (p := _murmur_probability(r)) is not None]
    if not scored:
        return {"label": "unknown", "probability": None, "sites": [], "n_recordings": 0}
    probs = [p for _, p in scored]
    combined = max(probs) if MURMUR_RULE == "max" else sum(probs) / len(probs)
    by_site: dict[str, float] = {}
    for r, p in scored:
        site = str(r.get("site") or "unknown")
        by_site[site] = max(p, by_site.get(site, 0.0))
    present = combined >= MURMUR_THRESHOLD
    sites = sorted((s for s, p in by_site.items() if p >= MURMUR_THRESHOLD), key=lambda s: -by_site[s])
    return {
        "label": "present" if present else "absent",
        "probability": round(combined, 4),
        "sites": sites if present else [],
        "site_probabilities": {s: round(p, 4) for s, p in sorted(by_site.items())},
        "n_recordings": len(scored),
    }


def combine_exam(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One exam's answer from its recordings' results (see the module docstring for the rules)."""
    counted = [r for r in results if usable(r)]
    labels: list[str] = []
    for r in results:
        for lab in r.get("probabilities") or {}:
            if lab not in labels:
                labels.append(lab)
    probabilities: dict[str, float] = {}
    if counted:
        for lab in labels:
            values = [float(r["probabilities"][lab]) for r in counted if lab in (r.get("probabilities") or {})]
            if values:
                probabilities[lab] = round(min(values) if lab == NORMAL else max(values), 4)
    findings = {str(r["label"]) for r in counted if r["label"] != NORMAL}
    if not counted:
        label = UNSURE
    elif findings:
        label = max(findings, key=lambda lab: probabilities.get(lab, 0.0))
    else:
        label = NORMAL
    return {
        "label": label,
        "probabilities": probabilities,
        "murmur": combine_murmur(results),
        "n_recordings": len(results),
        "n_usable": len(counted),
        "rule": dict(RULE_DESCRIPTION),
    }
