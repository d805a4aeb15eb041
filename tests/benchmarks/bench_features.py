"""Benchmark: the device's MFCC (numpy and scipy.fft, device/core/features.py) against librosa's, in one run.

    .venv/bin/python -m tests.benchmarks.bench_features [--every 25] [--repeat 50]

On real recordings (the bundled samples, then every --every'th PhysioNet 2016 and PASCAL 2011 recording
in $STETH_DATA_DIR, default ../shared/data):
  identity   the features of both, compared bit for bit (and the largest difference if any)
  speed      ms per 5 s window of device.core.features.window_features and of the librosa reference
             (tests/device/librosa_features.py: the code the shipped models were trained with), on one
             core, for a 30 s recording (11 windows at once) and for one window alone
  memory     resident memory of a fresh process after importing each and computing one recording's
             features (what each costs a device)
Prints tables; asserts nothing. Needs librosa (the dev extra).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.benchmarks import support

SAMPLES = support.REPO / "device" / "samples"

# A fresh interpreter: import one implementation, compute one recording's features, report VmRSS (KiB).
RSS_PROBE = """
import sys, time
which, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
import numpy as np
from device.core.audio_io import read_audio
from device.core.features import FeatureParams, frame_windows, preprocess, window_features
base = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
if which == "librosa":
    from tests.device.librosa_features import window_features
p = FeatureParams()
a = read_audio(path)
feats = window_features(frame_windows(preprocess(a.samples, a.sample_rate, p), p), p)
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
print(base, rss, round(time.perf_counter() - t0, 3), "librosa" in sys.modules, "numba" in sys.modules)
"""


def recordings(every: int) -> list[Path]:
    data = Path(os.environ.get("STETH_DATA_DIR", support.REPO.parent / "shared" / "data"))
    found = sorted(SAMPLES.glob("*.flac"))
    for pattern in ("physionet2016/training-*/*", "pascal2011/set_*/*"):
        found += [p for p in sorted(data.glob(pattern)) if p.suffix.lower() in (".wav", ".flac")][::every]
    return found


def identity(paths: list[Path]) -> None:
    import dataclasses

    from device.core.audio_io import read_audio
    from device.core.errors import AudioError
    from device.core.features import FeatureParams, frame_windows, preprocess, window_features
    from tests.device import librosa_features

    rows = []
    for params in (FeatureParams(), dataclasses.replace(FeatureParams(), kind="logmel")):
        n_files = n_windows = n_single = differ = 0
        worst = 0.0
        for path in paths:
            audio = read_audio(path)
            try:
                windows = frame_windows(preprocess(audio.samples, audio.sample_rate, params), params)
            except AudioError:
                continue
            ours, theirs = window_features(windows, params), librosa_features.window_features(windows, params)
            n_files += 1
            n_windows += len(windows)
            n_single += len(windows) == 1
            if not np.array_equal(ours, theirs):
                differ += 1
                worst = max(worst, float(np.max(np.abs(ours - theirs))))
        rows.append((params.kind, n_files, n_windows, n_single, differ, f"{worst:.3g}"))
    support.table(
        ["features", "recordings", "windows", "one-window recordings", "recordings that differ", "max abs diff"],
        rows,
        "device.core.features vs librosa: bit for bit",
    )


def speed(repeat: int) -> None:
    from device.core.audio_io import read_audio
    from device.core.features import FeatureParams, frame_windows, preprocess, window_features
    from tests.device import librosa_features

    params = FeatureParams()
    base = read_audio(SAMPLES / "a0296.flac")
    x = preprocess(np.tile(base.samples, 3)[: 30 * base.sample_rate], base.sample_rate, params)
    windows = frame_windows(x, params)

    def per_window(fn, batch: np.ndarray) -> float:  # type: ignore[no-untyped-def]
        fn(batch, params)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(batch, params)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) / len(batch) * 1e3

    rows = []
    for label, batch in ((f"30 s recording ({len(windows)} windows at once)", windows), ("one window", windows[:1])):
        ours = per_window(window_features, batch)
        theirs = per_window(librosa_features.window_features, batch)
        rows.append((label, f"{theirs:.3f}", f"{ours:.3f}", f"{theirs / ours:.1f}x"))
    support.table(
        ["batch", "librosa ms/window", "device.core.features ms/window", "speed-up"],
        rows,
        "MFCC per 5 s window, one core (median of the repeats)",
    )


def memory() -> None:
    rows = []
    for which in ("librosa", "device"):
        out = subprocess.run(
            [support.PYTHON, "-c", RSS_PROBE, which, str(SAMPLES / "a0296.flac")],
            cwd=support.REPO, env={**os.environ, "PYTHONPATH": str(support.REPO)}, capture_output=True, text=True,
            check=True,
        ).stdout.split()  # fmt: skip
        base, rss = int(out[0]) / 1024, int(out[1]) / 1024
        rows.append((which if which == "librosa" else "core.features (numpy, scipy.fft)", f"{base:.0f}", f"{rss:.0f}",
                     f"{rss - base:+.0f}", out[2], out[3], out[4]))  # fmt: skip
    support.table(
        ["features", "RSS after imports MiB", "after one recording", "difference", "s to first features",
         "librosa imported", "numba imported"],
        rows,
        "A fresh process: import, then one recording's features (numba's cache as it is)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=int, default=25, help="take every N-th recording of the data sets")
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args(argv)
    try:
        import librosa  # noqa: F401
    except ImportError:
        print("librosa is not installed: this benchmark compares with it (install the dev extra)")
        return 1
    pinned = support.one_core()
    os.environ["OMP_NUM_THREADS"] = "1"
    print(support.machine())
    support.quiet_warning()
    paths = recordings(args.every)
    print(f"{len(paths)} recordings; {pinned}", flush=True)
    memory()
    speed(args.repeat)
    identity(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
