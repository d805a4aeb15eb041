"""The reference the segmenter's faster steps are checked against: device/core/segment.py as it was before
session 16 made them cheaper (tests/device/test_segment.py). The shipped segmenter was trained and scored
through these; the faster ones must give the same numbers bit for bit.
"""

from __future__ import annotations

import numpy as np

from device.core.segment import BAND_EDGES, HOP, MIN_FRAMES, N_FEATURES, NFFT, OFFSETS, _window, frame_count


def frame_features(x: np.ndarray) -> np.ndarray:
    n = frame_count(len(x))
    if n == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    pad = (NFFT - HOP) // 2
    xp = np.pad(np.asarray(x, dtype=np.float32), (pad, NFFT), mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(xp, NFFT)[::HOP][:n] * _window()
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # numpy's FFT of the float32 frames themselves
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(power[:, : BAND_EDGES[-1]], axis=1)], axis=1)
    edges = np.asarray(BAND_EDGES)
    bands = cum[:, edges[1:]] - cum[:, edges[:-1]]
    total = cum[:, edges[-1]] - cum[:, edges[0]]
    feats = np.log(np.concatenate([bands, total[:, None]], axis=1) + 1e-10)
    lo, med, hi = np.percentile(feats, (10, 50, 90), axis=0)
    scale = np.maximum(hi - lo, 1e-3)
    return np.asarray((feats - med) / scale, dtype=np.float32)


def with_context(feats: np.ndarray) -> np.ndarray:
    n = len(feats)
    idx = np.clip(np.arange(n)[:, None] + np.asarray(OFFSETS)[None, :], 0, max(n - 1, 0))
    return np.asarray(feats[idx].reshape(n, -1), dtype=np.float32)


def decode(log_b: np.ndarray, durations: list[np.ndarray], dmax: list[int]) -> tuple[np.ndarray, float]:
    """One step of MIN_FRAMES segment ends at a time, every step alike, fresh arrays each step."""
    t_len = len(log_b)
    big = max(dmax)
    total = t_len + big
    cum = np.zeros((total + 1, 4))
    cum[1 : t_len + 1] = np.cumsum(log_b, axis=0)
    cum[t_len + 1 :] = cum[t_len]
    logp = np.full((4, big), -np.inf)
    for j in range(4):
        logp[j, : dmax[j]] = durations[j]
    logp_rev = logp[:, ::-1].copy()
    first = np.full((total + 1, 4), -np.inf)
    for j in range(4):
        first[1 : dmax[j] + 1, j] = np.log(0.25)
    start = np.full((total + 1 + big, 4), -np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(start, big, axis=0)
    delta = np.full((total + 1, 4), -np.inf)
    prev = np.array([3, 0, 1, 2])
    for t in range(1, total + 1, MIN_FRAMES):
        u = min(t + MIN_FRAMES, total + 1)
        best = (windows[t:u] + logp_rev).max(axis=2)
        if t <= big:
            np.maximum(best, first[t:u], out=best)
        best += cum[t:u]
        delta[t:u] = best
        if t < t_len:
            v = min(u, t_len)
            start[big + t : big + v] = best[: v - t, prev] - cum[t:v]
    ends = delta[t_len:]
    flat = int(np.argmax(ends))
    t_end, j = t_len + flat // 4, flat % 4
    score = float(ends.flat[flat])
    states = np.empty(t_len, dtype=np.int8)
    while t_end > 0:
        cand = windows[t_end, j] + logp_rev[j]
        k = int(np.argmax(cand))
        d = big - k if cand[k] >= first[t_end, j] else t_end
        s0 = t_end - d
        states[max(s0, 0) : min(t_end, t_len)] = j
        t_end, j = s0, int(prev[j])
    return states, score
