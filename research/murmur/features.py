"""Extract (and cache) the windows of every recording the murmur experiments use."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import circor

from converter import datasets as ds
from converter import featurestore
from converter.tasks import TASKS

PARAMS = TASKS["screening"].params  # 25-700 Hz, MFCC 16, one mean/variance per recording
DATA = Path("/work/shared/data")


def pascal() -> list[ds.Recording]:
    return [r for r in ds.load_pascal2011(DATA) if r.label in ("normal", "murmur")]


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    t = time.time()
    recs, _ = circor.load()
    fs = featurestore.build(recs, PARAMS, name="murmur-circor", workers=1)
    print("circor", fs.features.shape, len(fs.skipped), time.time() - t, flush=True)
    p = pascal()
    fs = featurestore.build(p, PARAMS, name="murmur-pascal", workers=1)
    print("pascal", fs.features.shape, len(fs.skipped), time.time() - t, flush=True)


if __name__ == "__main__":
    main()
