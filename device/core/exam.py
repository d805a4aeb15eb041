"""One answer per exam: the results of a patient's recordings (several auscultation sites) combined.

A pure function over result dicts as `steth classify --json` prints them (or result messages, which carry
the same fields), so the device, `steth exam` and the dashboard combine sites the same way. Each result
may carry a ``site`` (the result message has one; `steth exam` adds the manifest's).

The rules (chosen on CirCor development patients, docs/exam.md):
- Only usable recordings count: quality ok and a label other than ``unsure``. An exam without one is
  ``unsure`` (re-record), murmur ``unknown``.
- Screening label: the mean over usable recordings. Per label, the exam probability is the mean of the
  usable recordings' probabilities (reported probabilities are shifted so that 0.5 is the model's
  threshold), and the exam takes the most probable label (a tie goes to the finding): for normal/abnormal,
  ``abnormal`` exactly when the mean P(abnormal) >= 0.5. Each recording keeps its own answer.
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
# The screening label is the mean too. "Any finding" (abnormal as soon as one site is) was the first rule;
# measured per patient on the 522 CirCor development patients outside the murmur test split, which the
# screening model shipped then (0.4.0) never trained on, it called 82% of the patients without a murmur
# abnormal (Se 0.959, Sp 0.184, MAcc 0.571); the mean: Se 0.711, Sp 0.550, MAcc 0.631 (CirCor's outcome
# as the reference: 0.527 vs 0.562). Every extra site is one more chance of a false alarm with "any", and
# patients have 3-5 (research/exam_label_rule.py, docs/exam.md). 0.5.0 trained on CirCor; in its run's CV
# the mean still beat "any" per patient (all-sources model 0.834 vs 0.762, seed 1).

RULE_DESCRIPTION = {
    "label": "mean of each label's probability over usable recordings (quality ok, not unsure); most probable label",
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
                probabilities[lab] = round(sum(values) / len(values), 4)
    if not counted or not probabilities:
        label = UNSURE
    else:
        # the most probable label; at a tie the finding (the model's own rule: positive at >= threshold)
        label = max(probabilities, key=lambda lab: (probabilities[lab], lab != NORMAL))
    return {
        "label": label,
        "probabilities": probabilities,
        "murmur": combine_murmur(results),
        "n_recordings": len(results),
        "n_usable": len(counted),
        "rule": dict(RULE_DESCRIPTION),
    }
