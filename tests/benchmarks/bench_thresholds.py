"""Benchmark: choosing the MAcc-best threshold, vectorised (converter.metrics) vs the loop it replaced.

    .venv/bin/python -m tests.benchmarks.bench_thresholds [--repeats 50]

`steth calibrate` chooses a threshold about a hundred times per run (20 repeats of 5-fold
cross-validation on a few dozen recordings), training once per model on ~330 validation recordings
in six databases, the pooled check on ~1,750, and `research.local_calibration` thousands of times.
Each case is checked to give the same threshold both ways. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from converter.metrics import best_threshold


def loop_threshold(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None = None) -> float:
    """The implementation before the vectorised one: every candidate, every group, one at a time."""
    y = np.asarray(y).astype(bool)
    groups = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups)
    candidates = np.unique(np.round(np.asarray(score), 4))
    if len(candidates) > 400:
        candidates = np.quantile(score, np.linspace(0, 1, 401))
    best, best_t = -1.0, 0.5
    for t in candidates:
        per = []
        for g in np.unique(groups):
            m = groups == g
            yy, pp = y[m], np.asarray(score)[m] >= t
            if yy.any() and (~yy).any():
                per.append((pp[yy].mean() + (~pp[~yy]).mean()) / 2)
        if per and np.mean(per) > best:
            best, best_t = float(np.mean(per)), float(t)
    return best_t


def _ms(fn, args: tuple, repeats: int) -> tuple[float, float]:
    """(mean milliseconds per call, the threshold it chose)."""
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    return (time.perf_counter() - start) / repeats * 1000, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [
        ("calibrate fold: 32 recordings, one kit", 32, 1),
        ("validation part: 330 recordings, 6 databases", 330, 6),
        ("pooled out-of-fold: 1,750 recordings, 6 databases", 1750, 6),
    ]
    print("| case | loop (ms) | vectorised (ms) | speed-up | same threshold |\n|---|---|---|---|---|")
    for name, n, dbs in cases:
        y = rng.random(n) < 0.3
        s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
        groups = rng.integers(0, dbs, n) if dbs > 1 else None
        ms_loop, chosen_loop = _ms(loop_threshold, (y, s, groups), args.repeats)
        ms_vec, chosen_vec = _ms(best_threshold, (y, s, groups), args.repeats)
        print(f"| {name} | {ms_loop:.2f} | {ms_vec:.3f} | {ms_loop / ms_vec:.0f}x | {chosen_loop == chosen_vec} |")


if __name__ == "__main__":
    main()
