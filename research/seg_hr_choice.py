"""Research: ways to choose the decoder's cycle length, compared on the validation patients only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from converter import circor
from converter import segmenter as tr
from device.core import segment as sg


def decode_with(post, model, cycle):
    log_b = np.log(np.clip(post / model.priors, 1e-8, None))
    d, dmax = model.durations.frames(cycle)
    states, score = sg.decode(log_b, d, dmax)
    fit = float(np.mean(post[np.arange(len(post)), states]))
    s1 = sg._centres(states, 0)
    return score, fit, sg.heart_rate_from_s1(s1), s1


def main() -> int:
    model = sg.SegmenterModel.load(Path(sys.argv[1]))
    recs = circor.load_circor2022(
        "/work/data/circor_full/src/data/raw_training", "/work/shared/data/circor2022/development_patients.txt"
    )
    _, val, _ = tr.split(recs, 0.2, 0.15, 0)
    items = [tr.prepare(r, Path(sys.argv[2])) for r in val]
    res: dict[str, list[tuple[float, float | None]]] = {}
    for it in items:
        ref = tr.annotated_bpm(it.rec.spans)
        if ref is None:
            continue
        post = model.posteriors(it.feats)
        cands = sg.cycle_candidates(post, 4)
        outs = [(c, s, *decode_with(post, model, c)) for c, s in cands]
        # variants
        v = {}
        v["first"] = outs[0][4]
        v["score2"] = max(outs[:2], key=lambda o: o[2])[4]
        v["score3"] = max(outs[:3], key=lambda o: o[2])[4]
        v["fit2"] = max(outs[:2], key=lambda o: o[3])[4]
        v["fit3"] = max(outs[:3], key=lambda o: o[3])[4]
        v["fit4"] = max(outs[:4], key=lambda o: o[3])[4]
        # iterate: re-decode at the decoded rate
        est = v["score2"]
        if est:
            v["score2_iter"] = decode_with(post, model, 60 / est)[2]
        est = v["fit3"]
        if est:
            v["fit3_iter"] = decode_with(post, model, 60 / est)[2]
        # within the annotated region
        ann = [(s.start_s, s.end_s) for s in it.rec.spans if s.state]
        lo, hi = min(a for a, _ in ann), max(b for _, b in ann)
        best = max(outs[:3], key=lambda o: o[3])
        v["fit3_inann"] = sg.heart_rate_from_s1([t for t in best[5] if lo <= t <= hi])
        for k, e in v.items():
            res.setdefault(k, []).append((ref, e))
    for k, pairs in res.items():
        ref = np.array([a for a, _ in pairs])
        est = np.array([np.nan if e is None else e for _, e in pairs])
        err = np.abs(est - ref)
        print(
            f"{k:12s} n={len(ref)} med={np.nanmedian(err):.2f} within10={np.mean(err <= 0.1 * ref):.4f}"
            f" none={np.isnan(est).sum()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
