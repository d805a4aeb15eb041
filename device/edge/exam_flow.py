"""The guided exam at the bedside: one patient, several auscultation sites, one answer.

Site after site the nurse is told where to place the stethoscope, sees a countdown, and hears the site's
answer and signal quality at once; a poor site (or any site, on request) is recorded again, that site
only. Every attempt's result is kept as soon as it is analysed, with the exam id and the site (a power cut
mid-exam loses no recorded site; the physician sees every attempt). The exam's answer combines the
latest attempt of each site with device.core.exam.combine_exam, the rule the dashboard uses too.

Answers are read line by line from ``stdin``: Enter goes on, ``r`` records the site again, ``s`` skips
it, ``q`` ends the exam. At the end of the input (a script, ``< /dev/null``) every site is recorded once
and nothing is recorded again, so an unattended run always ends.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from device.core import wording
from device.core.exam import combine_exam
from device.edge.bedside import Attempt, Bedside

MAX_ATTEMPTS = 3  # per site: a site that stays poor is kept as unsure, and the exam goes on
# where each site is, said to the nurse as the site comes up
WHERE = {
    "aortic": "2nd intercostal space, right of the sternum",
    "pulmonic": "2nd intercostal space, left of the sternum",
    "tricuspid": "4th-5th intercostal space, left lower sternal border",
    "mitral": "5th intercostal space, mid-clavicular line (the apex)",
}


def new_exam_id(now: dt.datetime | None = None) -> str:
    """E-20261205T235501Z-3fa9c1: sortable, unique without a network, within the contract's pattern."""
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"E-{when:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Prompter:
    """Questions on ``out``, answers from ``stdin``; None once the input has ended."""

    def __init__(self, stdin: TextIO, out: TextIO) -> None:
        self.stdin = stdin
        self.out = out
        self.ended = False

    def ask(self, question: str) -> str | None:
        print(f"  {question} ", end="", file=self.out, flush=True)
        line = "" if self.ended else self.stdin.readline()
        if not line:
            self.ended = True
            print("(no more input)", file=self.out, flush=True)
            return None
        reply = line.strip().lower()
        if not self.stdin.isatty():  # a scripted answer: echo it, so the transcript reads as a dialogue
            print(reply or "(Enter)", file=self.out, flush=True)
        return reply


@dataclass
class Exam:
    """What the exam did, site by site (every attempt), and its combined answer."""

    exam_id: str
    patient_ref: str
    sites: tuple[str, ...]
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ended_early: bool = False

    def latest(self) -> dict[str, Attempt]:
        """The last attempt of each recorded site: the one its answer is."""
        out: dict[str, Attempt] = {}
        for attempt in self.attempts:
            out[attempt.site] = attempt
        return out

    def combined(self) -> dict[str, Any]:
        results = [a.result for a in self.latest().values() if a.result is not None]
        return combine_exam(results)

    @property
    def saved(self) -> int:
        return sum(len(a.entries) for a in self.attempts if a.entries and a.not_saved is None)

    @property
    def not_saved(self) -> list[Exception]:
        return [a.not_saved for a in self.attempts if a.not_saved is not None]


def site_answer(attempt: Attempt) -> str:
    """One line for a site: its result with the reason when unsure, heart rate and signal quality."""
    if attempt.error is not None:
        return f"could not analyse the recording: {attempt.error.message}"
    a = attempt.analyses[0]
    hr = f"{a.heart_rate_bpm:.0f} bpm" if a.heart_rate_bpm else "heart rate not found"
    quality = f"signal {'good' if a.quality.ok else 'POOR'} ({a.quality.score:.2f})"
    line = f"{wording.summary(a.label, a.probabilities, a.quality_dict())} · {hr} · {quality}"
    murmur = (attempt.result or {}).get("murmur")  # a murmur model's answer, when one runs beside screening
    if isinstance(murmur, dict) and murmur.get("label") not in (None, "unknown"):
        line += f" · murmur {wording.murmur(murmur)}"
    return line


def advice(attempt: Attempt) -> str:
    if attempt.error is not None:
        return attempt.error.hint or "check the stethoscope"
    a = attempt.analyses[0]
    return wording.rerecord_advice(a.quality_dict()) or "keep the patient and the stethoscope still"


def run_exam(
    bedside: Bedside,
    sites: Sequence[str],
    prompter: Prompter,
    answers: TextIO,
    *,
    exam_id: str | None = None,
    replay: Sequence[Path] = (),
) -> Exam:
    """Guide the exam of ``sites`` in order; site answers are printed on ``answers``."""
    exam = Exam(exam_id or new_exam_id(), bedside.patient_ref, tuple(sites))
    say = prompter.out
    print(f"Exam {exam.exam_id} of {exam.patient_ref}: {len(sites)} site(s), {', '.join(sites)}", file=say,
          flush=True)  # fmt: skip
    for i, site in enumerate(sites):
        print(f"\nSite {i + 1} of {len(sites)}: {site.upper()} — {WHERE.get(site, site)}", file=say, flush=True)
        reply = prompter.ask("Place the stethoscope, then press Enter to record (s: skip this site, q: end the exam):")
        if reply == "q":
            exam.ended_early = True
            break
        if reply == "s":
            exam.skipped.append(site)
            continue
        file = replay[i] if len(replay) > 1 else (replay[0] if replay else None)
        for n in range(1, MAX_ATTEMPTS + 1):
            attempt = bedside.record(site, exam_id=exam.exam_id, replay=file)
            exam.attempts.append(attempt)
            print(f"{site.capitalize():<10} {site_answer(attempt)}", file=answers, flush=True)
            if attempt.not_saved is not None:
                print(f"           NOT SAVED: {attempt.not_saved}", file=answers, flush=True)
            if n == MAX_ATTEMPTS:
                if attempt.poor:
                    print(f"  {MAX_ATTEMPTS} recordings of the {site} site were poor: it stays unsure; going on.",
                          file=say, flush=True)  # fmt: skip
                break
            if attempt.poor:
                print(f"  Record again: {advice(attempt)}", file=say, flush=True)
                reply = prompter.ask("Enter: record this site again · n: keep it and go to the next site:")
                if reply is None or reply.startswith("n"):
                    break
            else:
                reply = prompter.ask("Enter: next site · r: record this site again:")
                if reply != "r":
                    break
            print(f"  Recording the {site} site again.", file=say, flush=True)
    return exam


def exam_summary(exam: Exam) -> list[str]:
    """The exam's answer, for the nurse: each site's latest answer, then the combined one."""
    latest = exam.latest()
    lines = [f"Exam {exam.exam_id} of {exam.patient_ref}:"]
    for site in exam.sites:
        if site in latest:
            lines.append(f"  {site:<10} {site_answer(latest[site])}")
        else:
            lines.append(f"  {site:<10} not recorded" + (" (skipped)" if site in exam.skipped else ""))
    combined = exam.combined()
    if combined["n_usable"] == 0:
        result = "Unsure — no site gave a usable recording: examine the patient again"
    elif combined["label"] == "unsure":
        result = f"Unsure ({combined['n_usable']} usable recording(s))"
    else:
        result = wording.summary(combined["label"], combined["probabilities"], {})
    lines.append(f"Exam result:     {result}")
    lines.append(
        f"                 from {combined['n_usable']} usable of {combined['n_recordings']} site recording(s); "
        f"rule: {combined['rule']['label']}"
    )
    murmur = combined["murmur"]
    if murmur["label"] != "unknown":
        lines.append(f"Murmur:          {wording.murmur(murmur)}")
    return lines


def exam_json(exam: Exam) -> dict[str, Any]:
    latest = exam.latest()
    sites: dict[str, Any] = {}
    for site in exam.sites:
        a = latest.get(site)
        sites[site] = None
        if a is not None:
            sites[site] = {
                "result_id": a.result["result_id"] if a.result else None,
                "label": a.analyses[0].label if a.analyses else None,
                "attempts": sum(1 for x in exam.attempts if x.site == site),
            }
    return {
        "exam_id": exam.exam_id,
        "patient_ref": exam.patient_ref,
        **exam.combined(),
        "sites": sites,
        "skipped": exam.skipped,
        "ended_early": exam.ended_early,
    }
