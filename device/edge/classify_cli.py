"""`steth classify PATH...`: the shipped model on recordings, as a person or a program would use it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from device.core.audio_io import AUDIO_SUFFIXES
from device.core.errors import AudioError, ModelError


def register(sub: Any) -> None:
    p = sub.add_parser("classify", help="classify recordings (files or folders) with a shipped model")
    p.add_argument("paths", nargs="+", type=Path, help="WAV/FLAC files or folders of them")
    p.add_argument(
        "--model",
        default=None,
        help="shipped model name, a .tflite path or a folder holding one model (default: screening)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per recording on stdout")
    p.add_argument(
        "--threshold-dir",
        type=Path,
        help="decide at the threshold `steth calibrate` wrote in this folder (the device's models.threshold_dir)",
    )
    p.set_defaults(func=run)


def expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            out.append(p)
    return out


def run(args: argparse.Namespace) -> int:
    from device.core.inference import load_model
    from device.core.wording import NOTICE
    from device.edge.analyser import answer

    try:
        clf = load_model(args.model, threshold_dir=args.threshold_dir)
    except ModelError as exc:
        print(f"steth: error: {exc}", file=sys.stderr)
        return 2
    files = expand(args.paths)
    if not files:
        print("steth: error: no WAV or FLAC recordings found in the given paths", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        try:
            analysis = clf.analyse_file(f)
        except AudioError as exc:
            failed += 1
            print(f"steth: {f}: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(analysis.to_json(str(f))), flush=True)
        else:
            print(f"{f}:\n{answer(analysis)}\n", flush=True)
    if not args.json:
        print(NOTICE)
    return 1 if failed else 0
