"""Research: where the segmenter's heart rate misses on the validation patients (never the test ones).

PYTHONPATH=. python research/seg_hr_errors.py MODEL.npz CACHE_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from converter import circor
from converter import segmenter as tr
from device.core import segment as sg


def main() -> int:
    model = sg.SegmenterModel.load(Path(sys.argv[1]))
    cache = Path(sys.argv[2])
    recs = circor.load_circor2022(
        "/work/data/circor_full/src/data/raw_training", "/work/shared/data/circor2022/development_patients.txt"
    )
    _, val, _ = tr.split(recs, 0.2, 0.15, 0)
    items = [tr.prepare(r, cache) for r in val]
    scores = tr.score(model, items)
    print(scores.as_dict())
    for it in items:
        ref = tr.annotated_bpm(it.rec.spans)
        if ref is None:
            continue
        post = model.posteriors(it.feats)
        seg = sg.segment_posteriors(post, model)
        est = seg.heart_rate_bpm
        if est is None or abs(est - ref) > 0.1 * ref:
            cands = [(round(60 / c, 1), round(s, 2)) for c, s in sg.cycle_candidates(post, 4)]
            print(it.rec.record_id, it.rec.age, f"ref {ref:.1f} est {est} cycle {seg.cycle_s} cands {cands}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
