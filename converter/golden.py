"""Golden outputs of the shipped models on the bundled recordings: they catch silent drift.

`python -m converter.golden --check` compares; `--update` rewrites tests/golden/*.json and is the only
way they change (a deliberate, reviewed commit after a model or pipeline change).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from device.core.inference import available_models, load_model

REPO = Path(__file__).resolve().parent.parent
GOLDEN_DIR = REPO / "tests" / "golden"
SAMPLES = REPO / "device" / "samples"


def outputs(model_name: str) -> dict[str, Any]:
    clf = load_model(model_name)
    out: dict[str, Any] = {"model": clf.info.as_dict(), "recordings": {}}
    for f in sorted(SAMPLES.glob("*.flac")):
        a = clf.analyse_file(f)
        out["recordings"][f.name] = {
            "label": a.label,
            "probabilities": a.probabilities,
            "windows": [p for _, p in a.windows],
            "heart_rate_bpm": a.heart_rate_bpm,
            "quality": {"score": a.quality.score, "ok": a.quality.ok},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--update", action="store_true")
    g.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in available_models():
        path = GOLDEN_DIR / f"{name}.json"
        now = outputs(name)
        if args.update:
            path.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
            print(f"wrote {path}")
        elif not path.exists() or json.loads(path.read_text()) != now:
            print(f"{name}: outputs differ from {path}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
