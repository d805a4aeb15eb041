"""Extract feature sets A (research.database_transfer.recording_features) and B (segmentation-based,
Potes-like) for the development part of PhysioNet 2016; cache to ``<out>/features.npz``.

The data folder is $STETH_DATA_DIR; the output folder is ``--out``, else $SEGMENT_OUT, else
``artifacts/segmentation`` (relative to the current directory). Run from the repo root:

    cd /work/main && PYTHONPATH=/work/main:research/ablations/screening/session9/segmentation \
        python research/ablations/screening/session9/segmentation/features.py [--out DIR] [--limit N]

(evaluate.py, which reads the cache, runs the same way.) ``--limit N`` extracts only the first N dev
recordings, into ``features-limitN.npz`` so a quick check never replaces the full cache.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import segment as sg
from device.audio_io import read_audio
from device.errors import AudioError
from device.features import FeatureParams, check_signal, mel_basis, preprocess
from scipy import fft as sfft
from scipy import signal

from converter import database_transfer as dt
from converter import datasets as ds
from device import analysis

OUT_ENV = "SEGMENT_OUT"
DEFAULT_OUT = "artifacts/segmentation"
FEATURES_FILE = "features.npz"
FS = sg.FS
STATES = ("s1", "sys", "s2", "dia")
BANDS4 = ((25, 45), (45, 80), (80, 200), (200, 400))
POTES9 = ((25, 45), (45, 65), (65, 85), (85, 105), (105, 125), (125, 150), (150, 200), (200, 300), (300, 400))
NFFT = 256
FREQS = np.fft.rfftfreq(NFFT, 1 / FS)
INBAND = (FREQS >= 25) & (FREQS <= 400)
_SOS = {b: signal.butter(4, b, "bandpass", fs=FS, output="sos") for b in BANDS4}
_MEL = mel_basis(FeatureParams()).astype(np.float64)
_MEL = _MEL[(_MEL * FREQS[None]).sum(1) / (_MEL.sum(1) + 1e-12) < 400]  # mel bands centred under 400 Hz
N_MFCC = 13
EPS = 1e-12


def output_dir(option: str | Path | None = None) -> Path:
    """The folder for caches and results: the option, else $SEGMENT_OUT, else artifacts/segmentation."""
    return Path(option or os.environ.get(OUT_ENV) or DEFAULT_OUT)


def add_out_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=None,
        help=f"folder for caches and results (default: ${OUT_ENV}, else {DEFAULT_OUT})",
    )


def _stft_power(x: np.ndarray, n_frames: int) -> np.ndarray:
    """(T, 129) power spectra, frame t centred on envelope frame t's centre (t*40 + 20)."""
    xp = np.pad(x, NFFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(xp, NFFT)[sg.STEP // 2 :: sg.STEP][:n_frames]
    return np.abs(np.fft.rfft(frames * np.hanning(NFFT), axis=1)) ** 2


def _state_sums(v: np.ndarray, bs: np.ndarray) -> np.ndarray:
    """(beats, 4) mean of v over each state of each beat; bs: (beats, 5) sample boundaries."""
    cs = np.concatenate([[0.0], np.cumsum(v)])
    sums = cs[bs[:, 1:]] - cs[bs[:, :-1]]
    return sums / np.maximum(bs[:, 1:] - bs[:, :-1], 1)


def _ms(prefix: str, v: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_mean": float(np.mean(v)), f"{prefix}_sd": float(np.std(v))}


def seg_features(x: np.ndarray, seg: dict) -> dict[str, float]:
    """Feature set B of one preprocessed recording from its segmentation (``segment.segment``'s result)."""
    st = seg["states"]
    b = sg.beats(st)
    out: dict[str, float] = {
        "prior_bpm": seg["bpm_prior"],
        "prior_sys_s": seg["sys_s"],
        "springer_over_prior_bpm": seg["springer_bpm"] / seg["bpm_prior"],
        "n_beats": float(len(b)),
    }
    if len(b) < 2:
        return out
    n_frames = len(st)
    bs = b * sg.STEP  # beat boundaries in samples
    lo, hi = b[0, 0], b[-1, 4]  # frames of complete beats
    lab = st[lo:hi]
    out |= _duration_features(b, seg["bpm_prior"], n_frames)
    out |= _amplitude_features(x, bs)
    out |= _envelope_state_features(seg["feats"][:n_frames], lo, hi, lab)
    out |= _band_features(x, bs)
    out |= _spectral_features(x, n_frames, lo, hi, lab)
    return out


def _duration_features(b: np.ndarray, bpm_prior: float, n_frames: int) -> dict[str, float]:
    """Durations (s) and their per-beat ratios; b: (beats, 5) frame boundaries."""
    out: dict[str, float] = {}
    d = np.diff(b, axis=1) / sg.ENV_FS  # (beats, 4)
    rr = (b[:, 4] - b[:, 0]) / sg.ENV_FS
    out["beats_found_fraction"] = len(b) * (60 / bpm_prior) / (n_frames / sg.ENV_FS)
    out |= _ms("rr", rr)
    out["rr_cv"] = float(np.std(rr) / np.mean(rr))
    out["seg_over_prior_bpm"] = float(60 / np.median(rr) / bpm_prior)
    for j, name in enumerate(STATES):
        out |= _ms(f"dur_{name}", d[:, j])
    out |= _ms("ratio_sys_rr", d[:, 1] / rr)
    out |= _ms("ratio_dia_rr", d[:, 3] / rr)
    out |= _ms("ratio_sys_dia", d[:, 1] / d[:, 3])
    return out


def _amplitude_features(x: np.ndarray, bs: np.ndarray) -> dict[str, float]:
    """Mean |x| per state per beat, log ratios (Potes: systole/S1, diastole/S2)."""
    amp = np.log10(_state_sums(np.abs(x), bs) + EPS)
    return (
        _ms("amp_sys_s1", amp[:, 1] - amp[:, 0])
        | _ms("amp_dia_s2", amp[:, 3] - amp[:, 2])
        | _ms("amp_s2_s1", amp[:, 2] - amp[:, 0])
        | _ms("amp_sys_dia", amp[:, 1] - amp[:, 3])
    )


def _envelope_state_features(feats: np.ndarray, lo: int, hi: int, lab: np.ndarray) -> dict[str, float]:
    """Envelope features (z-scored per recording) averaged per state over the complete beats."""
    out: dict[str, float] = {}
    for k, fname in enumerate(("homo", "hilb", "psd4060")):
        for j, name in enumerate(STATES):
            out[f"env_{fname}_{name}"] = float(feats[lo:hi, k][lab == j].mean())
    return out


def _band_features(x: np.ndarray, bs: np.ndarray) -> dict[str, float]:
    """Band energies per state (median over beats), as within-state fractions and between-state ratios."""
    out: dict[str, float] = {}
    e = np.zeros((4, 4))  # band, state
    for i, band in enumerate(BANDS4):
        y = signal.sosfiltfilt(_SOS[band], x)
        e[i] = np.median(_state_sums(y * y, bs), axis=0)
    tot = e.sum(axis=0)
    for i, (bl, bh) in enumerate(BANDS4):
        for j, name in enumerate(STATES):
            out[f"bandfrac_{bl}_{bh}_{name}"] = float(10 * np.log10(e[i, j] / (tot[j] + EPS) + EPS))
        out[f"band_{bl}_{bh}_sys_s1"] = float(10 * np.log10((e[i, 1] + EPS) / (e[i, 0] + EPS)))
        out[f"band_{bl}_{bh}_dia_s2"] = float(10 * np.log10((e[i, 3] + EPS) / (e[i, 2] + EPS)))
        out[f"band_{bl}_{bh}_sys_dia"] = float(10 * np.log10((e[i, 1] + EPS) / (e[i, 3] + EPS)))
    return out


def _spectral_features(x: np.ndarray, n_frames: int, lo: int, hi: int, lab: np.ndarray) -> dict[str, float]:
    """Spectra per state (frames of complete beats): Potes' 9 bands, centroid, slope, MFCC."""
    out: dict[str, float] = {}
    p = _stft_power(x, n_frames)[lo:hi]
    spec = np.stack([p[lab == j].mean(axis=0) for j in range(4)])  # (4, 129)
    logf = np.log2(FREQS[INBAND])
    cents, slopes, mels = [], [], []
    for j, name in enumerate(STATES):
        s = spec[j]
        total = s[INBAND].sum() + EPS
        for bl, bh in POTES9:
            m = (bl <= FREQS) & (bh > FREQS)
            out[f"potes_{bl}_{bh}_{name}"] = float(10 * np.log10(s[m].sum() / total + EPS))
        c = float((s[INBAND] * FREQS[INBAND]).sum() / total)
        sl = float(np.polyfit(logf, 10 * np.log10(s[INBAND] + EPS), 1)[0])
        out[f"centroid_{name}"], out[f"slope_{name}"] = c, sl
        cents.append(c)
        slopes.append(sl)
        mels.append(np.log10(_MEL @ s + EPS))
    out["centroid_sys_minus_s1"] = cents[1] - cents[0]
    out["centroid_dia_minus_s2"] = cents[3] - cents[2]
    out["slope_sys_minus_s1"] = slopes[1] - slopes[0]
    out["slope_dia_minus_s2"] = slopes[3] - slopes[2]
    mfcc = sfft.dct(np.array(mels), type=2, norm="ortho", axis=1)[:, :N_MFCC]
    mfcc = mfcc - mfcc.mean(axis=0, keepdims=True)  # per-recording normalisation: a fixed channel cancels
    for j, name in enumerate(STATES):
        for k in range(N_MFCC):
            out[f"mfcc{k}_{name}"] = float(mfcc[j, k])
    return out


SANITY_NAMES = ("dur_s", "ac_bpm", "periodicity", "springer_bpm", "prior_bpm", "seg_bpm", "beats", "t_seg")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Extract feature sets A and B for the PhysioNet 2016 dev part.")
    add_out_option(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N dev recordings (a quick check)")
    args = parser.parse_args(argv)
    out_dir = output_dir(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (f"features-limit{args.limit}.npz" if args.limit else FEATURES_FILE)
    recordings = ds.load_physionet2016(ds.resolve_data_dir(None))
    folds = np.array(ds.split_folds(recordings, 5, seed=dt.SEED))
    dev = np.flatnonzero(folds != 0)
    if args.limit:
        dev = dev[: args.limit]
    rows_a: list[dict | None] = []
    rows_b: list[dict | None] = []
    sanity = []
    t_seg, t_all = [], []
    t_start = time.time()
    for n, i in enumerate(dev):
        r = recordings[i]
        rows_a.append(dt.recording_features(str(r.path)))
        t0 = time.perf_counter()
        try:
            audio = read_audio(str(r.path))
            check_signal(audio, FeatureParams())
            x = preprocess(audio.samples, audio.sample_rate, FeatureParams()).astype(np.float64)
        except AudioError:
            rows_b.append(None)
            sanity.append([np.nan] * len(SANITY_NAMES))
            continue
        hr = analysis.heart_rate(x, FS)
        t1 = time.perf_counter()
        seg = sg.segment(x, hr.bpm)
        t2 = time.perf_counter()
        row = seg_features(x, seg)
        t3 = time.perf_counter()
        rows_b.append(row)
        t_seg.append(t2 - t1)  # segmentation alone (envelopes, priors, 2 Viterbi passes)
        t_all.append(t3 - t0)
        b = sg.beats(seg["states"])
        rr = np.median(np.diff(b[:, [0, 4]], axis=1)) / sg.ENV_FS if len(b) else np.nan
        sanity.append(
            [
                len(x) / FS,
                hr.bpm or np.nan,
                hr.periodicity,
                seg["springer_bpm"],
                seg["bpm_prior"],
                60 / rr,
                len(b),
                t2 - t1,
            ]
        )
        if n % 200 == 0:
            print(f"{n}/{len(dev)} {time.time() - t_start:.0f}s", flush=True)
    names_a = sorted(next(r for r in rows_a if r is not None))
    names_b = sorted({k for r in rows_b if r is not None for k in r})
    xa = np.array([[r.get(k, np.nan) for k in names_a] if r else [np.nan] * len(names_a) for r in rows_a])
    xb = np.array([[r.get(k, np.nan) for k in names_b] if r else [np.nan] * len(names_b) for r in rows_b])
    ok_a = np.array([r is not None for r in rows_a])
    ok_b = np.array([r is not None for r in rows_b])
    np.savez(
        target,
        keys=np.array([recordings[i].key for i in dev]),
        dev_index=dev,
        names_a=np.array(names_a),
        names_b=np.array(names_b),
        xa=xa,
        xb=xb,
        ok_a=ok_a,
        ok_b=ok_b,
        sanity=np.array(sanity, dtype=float),
        sanity_names=np.array(SANITY_NAMES),
        t_seg=np.array(t_seg),
        t_all=np.array(t_all),
    )
    print(f"done {len(dev)} in {time.time() - t_start:.0f}s; A {len(names_a)} features, B {len(names_b)} -> {target}")


if __name__ == "__main__":
    main()
