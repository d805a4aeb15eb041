"""`steth data ...`: look at the data sets before training on them."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter import circor
from converter import datasets as ds
from device.core.audio_io import audio_info
from device.core.errors import UnreadableAudioError


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="inspect the heart-sound data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True
    summary = data_sub.add_parser(
        "summary", help="recordings per label, duration and sample rates, per dataset and folder"
    )
    summary.add_argument("data_dir", nargs="?", help=f"data folder (default: ${ds.DATA_ENV})")
    summary.add_argument(
        "--circor",
        help="CirCor 2022 folder (default: circor2022/ in the data folder, when present)",
    )
    summary.add_argument(
        "--patients",
        help=f"CirCor patients to include, one id a line (default: {circor.PATIENTS_FILE} in its folder)",
    )
    summary.set_defaults(func=run_summary)
    demo = data_sub.add_parser("pipeline", help="run the signal pipeline on one recording and describe it")
    demo.add_argument("path", help="a WAV or FLAC recording")
    demo.set_defaults(func=run_pipeline)


@dataclass
class FolderSummary:
    labels: Counter[str] = field(default_factory=Counter)
    sublabels: Counter[tuple[str, str]] = field(default_factory=Counter)
    duration_s: float = 0.0
    rates: Counter[int] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)


def summarise(root: Path) -> dict[tuple[str, str], FolderSummary]:
    """Scan every audio file once (headers only)."""
    out: dict[tuple[str, str], FolderSummary] = defaultdict(FolderSummary)
    recordings: list[ds.Recording] = []
    if ds.physionet_folders(root):
        recordings += ds.load_physionet2016(root)
        for folder in ds.physionet_folders(root):
            labelled = set(ds.read_reference(folder))
            for stem, path in ds.audio_files(folder).items():
                if stem not in labelled:
                    out[(ds.PHYSIONET, folder.name)].unlabelled.append(path.name)
    with contextlib.suppress(ds.DatasetError):
        recordings += ds.load_pascal2011(root, include_unlabelled=True)
    if not recordings:
        return {}
    for rec in recordings:
        s = out[(rec.dataset, rec.subset)]
        if rec.label is None:
            s.unlabelled.append(rec.path.name)
            continue
        try:
            rate, _, dur = audio_info(rec.path)
        except UnreadableAudioError as exc:
            s.unreadable.append(f"{rec.path.name}: {exc.message}")
            continue
        s.labels[rec.label] += 1
        if rec.sublabel:
            s.sublabels[(rec.label, rec.sublabel)] += 1
        s.duration_s += dur
        s.rates[rate] += 1
    return dict(out)


def _label_text(s: FolderSummary, label: str, count: int) -> str:
    subs = [f"{sub} {n}" for (lab, sub), n in sorted(s.sublabels.items()) if lab == label]
    return f"{label} {count}" + (f" [{', '.join(subs)}]" if subs else "")


@dataclass
class CircorSummary:
    patients: int = 0
    groups: int = 0
    recordings_per_site: Counter[str] = field(default_factory=Counter)
    murmur: Counter[str] = field(default_factory=Counter)  # per patient
    outcome: Counter[str] = field(default_factory=Counter)  # per patient
    duration_s: float = 0.0
    annotated_s: float = 0.0  # S1, systole, S2, diastole
    unannotated_s: float = 0.0  # label 0 spans plus time no span covers
    unreadable: list[str] = field(default_factory=list)


def summarise_circor(root: Path, patients: str | None = None) -> CircorSummary:
    recs = circor.load_circor2022(root, patients)
    out = CircorSummary()
    seen: dict[str, circor.CircorRecording] = {}
    for rec in recs:
        seen.setdefault(rec.patient, rec)
        out.recordings_per_site[rec.site] += 1
        try:
            _, _, dur = audio_info(rec.path)
        except UnreadableAudioError as exc:
            out.unreadable.append(f"{rec.path.name}: {exc.message}")
            continue
        out.duration_s += dur
        annotated = min(rec.annotated_s(), dur)
        out.annotated_s += annotated
        out.unannotated_s += dur - annotated
    out.patients = len(seen)
    out.groups = len({r.group for r in recs})
    out.murmur.update(r.murmur for r in seen.values())
    out.outcome.update(r.outcome for r in seen.values())
    return out


def _circor_folder(args: argparse.Namespace) -> Path | None:
    if args.circor:
        return circor.circor_root(args.circor)
    raw = args.data_dir or os.environ.get(ds.DATA_ENV)
    if not raw:
        return None
    with contextlib.suppress(ds.DatasetError):
        return circor.circor_root(raw)
    return None


def print_circor(s: CircorSummary) -> None:
    sites = ", ".join(f"{k} {v}" for k, v in sorted(s.recordings_per_site.items()))
    print(circor.CIRCOR)
    print(f"  patients    {s.patients:>5} ({s.groups} split groups: linked patients together)")
    print(f"  recordings  {sum(s.recordings_per_site.values()):>5} ({sites})")
    print("  murmur      " + ", ".join(f"{k} {v}" for k, v in sorted(s.murmur.items())) + " (patients)")
    print("  outcome     " + ", ".join(f"{k} {v}" for k, v in sorted(s.outcome.items())) + " (patients)")
    print(
        f"  time        {s.duration_s / 60:7.1f} min: annotated {s.annotated_s / 60:.1f} min, "
        f"unannotated {s.unannotated_s / 60:.1f} min  unreadable: {len(s.unreadable)}"
    )
    for line in s.unreadable:
        print(f"      unreadable {line}")


def run_summary(args: argparse.Namespace) -> int:
    root = ds.resolve_data_dir(args.data_dir) if args.data_dir or not args.circor else None
    table = summarise(root) if root is not None else {}
    cc_root = _circor_folder(args)
    if not table and cc_root is None:
        raise ds.DatasetError(f"no PhysioNet 2016, PASCAL 2011 or CirCor 2022 data under {root}")
    problems = 0
    if cc_root is not None:
        cc = summarise_circor(cc_root, args.patients)
        print_circor(cc)
        problems += len(cc.unreadable)
    for dataset in sorted({d for d, _ in table}):
        folders = sorted(f for d, f in table if d == dataset)
        totals: Counter[str] = Counter()
        print(f"{dataset}")
        for folder in folders:
            s = table[(dataset, folder)]
            totals.update(s.labels)
            labels = ", ".join(_label_text(s, k, v) for k, v in sorted(s.labels.items()))
            rates = ", ".join(f"{r} Hz" for r in sorted(s.rates))
            print(
                f"  {folder:<11} {sum(s.labels.values()):>5} labelled  ({labels})  "
                f"{s.duration_s / 60:7.1f} min  rates: {rates or '-'}  unlabelled: {len(s.unlabelled)}"
                f"  unreadable: {len(s.unreadable)}"
            )
            for line in s.unreadable:
                print(f"      unreadable {line}")
            problems += len(s.unreadable)
        print(
            f"  {'total':<11} {sum(totals.values()):>5} labelled  ("
            + ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
            + ")"
        )
    return 1 if problems else 0


def run_pipeline(args: argparse.Namespace) -> int:
    from device.core.audio_io import read_audio
    from device.core.features import FeatureParams, extract

    params = FeatureParams()
    audio = read_audio(args.path)
    feats = extract(audio, params)
    print(f"recording      {audio.source}")
    print(
        f"duration       {audio.duration_s:.2f} s at {audio.sample_rate} Hz, {audio.channels} channel(s), "
        f"{audio.subtype}"
    )
    print(
        f"preprocessed   resampled to {params.sample_rate} Hz, band-pass {params.band_low_hz:g}-"
        f"{params.band_high_hz:g} Hz, unit RMS: {len(feats.signal)} samples"
    )
    print(f"windows        {feats.n_windows} x {params.window_s:g} s, hop {params.hop_s:g} s")
    print(
        f"features       {params.kind.upper()} {feats.features.shape} (windows, frames, coefficients), "
        f"params {params.fingerprint()}"
    )
    return 0
