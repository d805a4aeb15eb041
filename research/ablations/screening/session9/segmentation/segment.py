"""Heart-cycle segmentation (S1, systole, S2, diastole) in numpy/scipy, after Springer et al. (2016).

- Envelope features at 50 Hz from the preprocessed (2 kHz, 25-400 Hz, unit RMS) signal: homomorphic
  envelope, Hilbert envelope, 40-60 Hz spectrogram power (Springer's PSD feature), each z-scored.
- Heart rate and systolic interval from the homomorphic envelope's autocorrelation (Springer's
  getHeartRate); the heart rate itself is taken from the repo's `device.analysis.heart_rate`
  (30-220 bpm with half/double-rate corrections) when it finds a rhythm, Springer's value otherwise.
- Explicit-duration HMM (hidden semi-Markov model) over the cycle S1 -> systole -> S2 -> diastole,
  Gaussian duration priors from Schmidt/Springer (S1 122+-22 ms, S2 94+-22 ms, systole = systolic
  interval - S1, diastole = cycle - systolic interval - S2), first and last segments may be cut.
- No annotated training data: emissions are unsupervised per recording. Pass 1: one Gaussian on the
  homomorphic envelope, high mean (80th percentile) for S1/S2, low mean (30th) for systole/diastole.
  Pass 2 (Viterbi training): per-state diagonal Gaussians on all three features re-estimated from
  pass 1's labels, decoded again.

A library for features.py and pascal_check.py (no command line of its own). They run from the repo root:

    cd /work/main && PYTHONPATH=/work/main:research/ablations/screening/session9/segmentation \
        python research/ablations/screening/session9/segmentation/evaluate.py
"""

from __future__ import annotations

import numpy as np
from scipy import signal

FS = 2000
ENV_FS = 50
STEP = FS // ENV_FS  # 40 samples per envelope frame
S1, SYS, S2, DIA = 0, 1, 2, 3
PREV = np.array([DIA, S1, SYS, S2])

_LP8 = signal.butter(1, 8.0, "lowpass", fs=FS, output="sos")


def _z(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / (sd if sd > 0 else 1.0)


def _down(v: np.ndarray, n: int) -> np.ndarray:
    return v[: n * STEP].reshape(n, STEP).mean(axis=1)


def envelope_features(x: np.ndarray) -> np.ndarray:
    """(T, 3) z-scored features at 50 Hz: homomorphic envelope, Hilbert envelope, 40-60 Hz power."""
    n = len(x) // STEP
    h = np.abs(signal.hilbert(x))
    homo = np.exp(signal.sosfiltfilt(_LP8, np.log(h + 1e-8)))
    f, t, s = signal.spectrogram(x, FS, window="hann", nperseg=FS // 40, noverlap=FS // 40 - STEP, mode="psd")
    # frame k of the spectrogram is centred at nperseg/2 + k*STEP; align to envelope frames
    psd = s[(f >= 40) & (f <= 60)].mean(axis=0)
    centres = (np.arange(n) + 0.5) * STEP
    psd = np.interp(centres, t * FS, psd)
    feats = np.stack([_down(homo, n), _down(h, n), psd], axis=1)
    return np.stack([_z(c) for c in feats.T], axis=1)


def springer_heart_rate(homo: np.ndarray) -> tuple[float, float]:
    """Springer's getHeartRate on the z-scored 50 Hz homomorphic envelope: (bpm, systolic interval s)."""
    v = homo - homo.mean()
    ac = np.correlate(v, v, "full")[len(v) - 1 :]
    ac = ac / (ac[0] or 1.0)
    lo, hi = round(0.5 * ENV_FS), min(round(2.0 * ENV_FS), len(ac) - 1)
    if hi <= lo:
        return 75.0, 0.3
    k = lo + int(np.argmax(ac[lo:hi]))
    bpm = 60.0 / (k / ENV_FS)
    return bpm, systolic_interval(ac, bpm)


def systolic_interval(ac: np.ndarray, bpm: float) -> float:
    lo, hi = round(0.2 * ENV_FS), round((60.0 / bpm) / 2 * ENV_FS)
    hi = min(hi, len(ac) - 1)
    if hi <= lo:
        return 0.2
    return (lo + int(np.argmax(ac[lo:hi]))) / ENV_FS


def duration_table(bpm: float, sys_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log duration probabilities (4, Dmax+1) in frames, min and max durations per state."""
    f = ENV_FS
    m_s1, s_s1 = 0.122 * f, 0.022 * f
    m_s2, s_s2 = 0.094 * f, 0.022 * f
    m_sys = max(sys_s * f - m_s1, 2.0)
    s_sys = 0.025 * f
    m_dia = max((60.0 / bpm - sys_s - 0.094) * f, 3.0)
    s_dia = 0.07 * m_dia + 0.006 * f
    means = np.array([m_s1, m_sys, m_s2, m_dia])
    sds = np.array([s_s1, s_sys + s_s1, s_s2, s_dia])
    dmin = np.maximum(np.floor(means - 3 * sds), [2, 2, 2, 2]).astype(int)
    dmax = np.ceil(means + 3 * sds).astype(int)
    dmax = np.maximum(dmax, dmin + 1)
    big = int(dmax.max())
    d = np.arange(big + 1)
    logp = -0.5 * ((d[None, :] - means[:, None]) / sds[:, None]) ** 2 - np.log(sds[:, None])
    for j in range(4):
        logp[j, : dmin[j]] = -np.inf
        logp[j, dmax[j] + 1 :] = -np.inf
    return logp, dmin, dmax


def hsmm_viterbi(logb: np.ndarray, logp: np.ndarray, dmax: np.ndarray) -> np.ndarray:
    """Explicit-duration Viterbi over the cyclic 4-state order; returns a state per frame.

    logb: (T, 4) log emissions. The first segment may start before the recording and the last may be cut
    at its end: both take any duration up to the state's maximum, without the duration prior.
    """
    n = len(logb)
    big = logp.shape[1] - 1
    cum = np.vstack([np.zeros((1, 4)), np.cumsum(logb, axis=0)])  # cum[t] = sum of frames < t
    delta = np.full((n + 1, 4), -np.inf)
    back_d = np.zeros((n + 1, 4), dtype=np.int32)
    ds = np.arange(1, big + 1)
    lp = logp[:, 1:].T  # (big, 4)
    cols = np.arange(4)
    partial_ok = ds[:, None] <= dmax[None, :]  # (big, 4)
    for t in range(1, n + 1):
        k = min(big, t)
        dd = ds[:k]
        start = t - dd  # (k,)
        seg = cum[t][None, :] - cum[start]  # (k, 4)
        prev = delta[start][:, PREV]  # (k, 4)
        vals = prev + lp[:k] + seg
        if t <= big:  # first segment: starts at frame 0, any duration up to dmax, no prior
            first = np.where(partial_ok[k - 1], seg[k - 1], -np.inf)
            vals[k - 1] = np.maximum(vals[k - 1], first)
        i = np.argmax(vals, axis=0)
        delta[t] = vals[i, cols]
        back_d[t] = dd[i]
    # last segment may be cut: any duration up to dmax, no prior
    best, end_state, end_d = -np.inf, 0, 1
    for j in range(4):
        for d in range(1, min(int(dmax[j]), n) + 1):
            base = 0.0 if d == n else delta[n - d, PREV[j]]
            v = base + cum[n, j] - cum[n - d, j]
            if v > best:
                best, end_state, end_d = v, j, d
        if delta[n, j] > best:
            best, end_state, end_d = delta[n, j], j, -1
    states = np.zeros(n, dtype=np.int8)
    t, j = n, end_state
    if end_d > 0:
        states[n - end_d : n] = j
        t, j = n - end_d, PREV[j]
    while t > 0:
        d = int(back_d[t, j])
        d = max(1, min(d, t))
        states[t - d : t] = j
        t, j = t - d, PREV[j]
    return states


def _gauss_logb(feats: np.ndarray, means: np.ndarray, sds: np.ndarray) -> np.ndarray:
    z = (feats[:, None, :] - means[None]) / sds[None]
    return -0.5 * (z**2).sum(axis=2) - np.log(sds).sum(axis=1)[None]


def segment(x: np.ndarray, bpm_hint: float | None = None) -> dict:
    """Segment a preprocessed 2 kHz signal. Returns states per 50 Hz frame and the priors used."""
    feats = envelope_features(x)
    homo = feats[:, 0]
    sp_bpm, _sp_sys = springer_heart_rate(homo)
    bpm = bpm_hint if bpm_hint else sp_bpm
    v = homo - homo.mean()
    ac = np.correlate(v, v, "full")[len(v) - 1 :]
    ac = ac / (ac[0] or 1.0)
    sys_s = systolic_interval(ac, bpm)
    logp, _dmin, dmax = duration_table(bpm, sys_s)
    # pass 1: homomorphic envelope only
    hi, lo = np.percentile(homo, [80, 30])
    sd = max(homo.std() * 0.5, 1e-3)
    mu = np.array([hi, lo, hi, lo])
    logb = -0.5 * ((homo[:, None] - mu[None]) / sd) ** 2
    states = hsmm_viterbi(logb, logp, dmax)
    # pass 2: per-state diagonal Gaussians on all features
    means = np.zeros((4, feats.shape[1]))
    sds = np.ones((4, feats.shape[1]))
    for j in range(4):
        m = states == j
        if m.sum() >= 5:
            means[j] = feats[m].mean(axis=0)
            sds[j] = np.maximum(feats[m].std(axis=0), 0.1)
        else:
            means[j] = mu[j]
    ll1 = float(np.mean(_gauss_logb(feats, means, sds)[np.arange(len(states)), states]))
    states = hsmm_viterbi(_gauss_logb(feats, means, sds), logp, dmax)
    return {
        "states": states,
        "bpm_prior": bpm,
        "springer_bpm": sp_bpm,
        "sys_s": sys_s,
        "feats": feats,
        "ll_pass1": ll1,
    }


def segments(states: np.ndarray) -> list[tuple[int, int, int]]:
    """(state, start frame, end frame exclusive) runs."""
    change = np.flatnonzero(np.diff(states)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(states)]])
    return [(int(states[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def beats(states: np.ndarray) -> np.ndarray:
    """Complete cycles: rows of 5 frame indices (S1 start, systole start, S2 start, diastole start, next
    S1 start). The first and last (possibly cut) segments are never used."""
    segs = segments(states)[1:]  # drop the first, possibly cut segment
    out = []
    for i in range(len(segs) - 4):
        if segs[i][0] == S1 and [s[0] for s in segs[i : i + 5]] == [S1, SYS, S2, DIA, S1]:
            out.append([segs[i + k][1] for k in range(5)])
    return np.array(out, dtype=int).reshape(-1, 5)
