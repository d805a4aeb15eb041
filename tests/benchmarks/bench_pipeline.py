"""Benchmark: the device pipeline per 5 s window, int8 LiteRT vs the alternatives, on one core.

    .venv/bin/python -m tests.benchmarks.bench_pipeline [--recording FILE] [--repeat N]

Compares, in one run and on the same real recording:
  features       device.core.features (numpy; the filters and resampler of device/core/dsp.py), the same with
                 scipy.signal's (before device/core/dsp.py: tests/device/scipy_dsp.py), and the features through
                 librosa (before that); on the recording as it is (2 kHz) and resampled to 4 kHz (the
                 device's default capture rate, which the pipeline resamples to 2 kHz)
  int8 LiteRT    the shipped model as the device runs it
  float TFLite   the same architecture converted without quantisation
  Keras float    the same architecture in full TensorFlow/Keras (what a user might run instead)
Speed does not depend on the weights, so the float models are built from the shipped model's
architecture (with its trained weights when a training run folder is given).
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recording", type=Path, default=None, help="a 30 s-ish recording (default: a bundled one, tiled)")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--run-dir", type=Path, default=REPO / "artifacts" / "train" / "screening")
    args = p.parse_args(argv)
    from tests.benchmarks import support

    pinned = support.one_core()
    os.environ["OMP_NUM_THREADS"] = "1"

    print(support.machine())
    support.quiet_warning()

    from device.core.audio_io import Audio, read_audio
    from device.core.features import frame_windows, preprocess, window_features
    from device.core.inference import load_model

    clf = load_model()
    params = clf.params
    if args.recording:
        audio = read_audio(args.recording)
    else:
        base = read_audio(REPO / "device" / "samples" / "a0296.flac")
        reps = int(np.ceil(30 * base.sample_rate / len(base.samples)))
        audio = Audio(np.tile(base.samples, reps)[: 30 * base.sample_rate], base.sample_rate, "a0296 x3 (30 s)")
    path = Path(tempfile.mkdtemp()) / "bench.flac"
    import soundfile as sf

    sf.write(path, audio.samples, audio.sample_rate)

    def features() -> np.ndarray:
        a = read_audio(path)
        x = preprocess(a.samples, a.sample_rate, params)
        return window_features(frame_windows(x, params), params)

    feats = features()  # warm: mel basis, FFT plans
    n = len(feats)
    t_feat = statistics.median(timed(features, args.repeat)) / n

    # The same at the device's capture rate (4 kHz): the resampler runs too.
    from device.core import dsp

    path4k = path.with_name("bench-4k.flac")
    sf.write(path4k, dsp.resample_poly(audio.samples.astype(np.float64), 2, 1), 2 * audio.sample_rate)

    def features_4k() -> np.ndarray:
        a = read_audio(path4k)
        x = preprocess(a.samples, a.sample_rate, params)
        return window_features(frame_windows(x, params), params)

    feats_4k = features_4k()
    t_feat_4k = statistics.median(timed(features_4k, args.repeat)) / n
    # Heart cycles (issue 22): the segmenter (features, classifier, decoder) on the whole recording, per
    # 5 s of it, against what it replaced in the same run: the envelope's heart rate and noise bursts.
    from device.core import analysis, segment

    x2k = preprocess(audio.samples, audio.sample_rate, params)
    segment.segment(x2k)  # warm: loads the weights
    per_5s = audio.duration_s / params.window_s
    t_seg = statistics.median(timed(lambda: segment.segment(x2k), args.repeat)) / per_5s
    t_env = (
        statistics.median(
            timed(
                lambda: (
                    analysis.heart_rate(x2k, params.sample_rate),
                    analysis.spike_fraction(x2k, params.sample_rate),
                ),
                args.repeat,
            )
        )
        / per_5s
    )
    t_classify = statistics.median(timed(lambda: clf.analyse_file(path), args.repeat))
    t_classify_4k = statistics.median(timed(lambda: clf.analyse_file(path4k), args.repeat))

    # Before device/core/dsp.py: the filters, resampler and heart rate through scipy.signal.
    from tests.device.scipy_dsp import scipy_reference

    with scipy_reference():
        diff = max(float(np.max(np.abs(features() - feats))), float(np.max(np.abs(features_4k() - feats_4k))))
        t_feat_scipy = statistics.median(timed(features, args.repeat)) / n
        t_feat_4k_scipy = statistics.median(timed(features_4k, args.repeat)) / n
        t_classify_scipy = statistics.median(timed(lambda: clf.analyse_file(path), args.repeat))
        t_classify_4k_scipy = statistics.median(timed(lambda: clf.analyse_file(path4k), args.repeat))

    # Before: the same features through librosa (tests/device/librosa_features.py), where it is installed.
    t_feat_librosa: float | None = None
    identical: bool | None = None
    try:
        from tests.device import librosa_features

        def features_librosa() -> np.ndarray:
            a = read_audio(path)
            x = preprocess(a.samples, a.sample_rate, params)
            return librosa_features.window_features(frame_windows(x, params), params)

        identical = np.array_equal(features_librosa(), feats)
        t_feat_librosa = statistics.median(timed(features_librosa, args.repeat)) / n
    except ImportError:
        pass

    rows = []
    t_int8 = statistics.median(timed(lambda: clf.predict_windows(feats), args.repeat)) / n
    rows.append(("int8 LiteRT (shipped)", t_int8, clf.path.stat().st_size))

    import tensorflow as tf  # after the LiteRT timing, so its import does not disturb it

    from converter import models

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    arch = clf.meta["architecture"]
    k = models.keras()
    trained = args.run_dir / "model.h5"
    keras_model = (
        k.models.load_model(trained, compile=False)
        if trained.exists()
        else models.build(arch, params.input_shape, len(clf.info.labels))
    )
    one = models.build(arch, params.input_shape, len(clf.info.labels), batch_size=1)
    one.set_weights(keras_model.get_weights())

    def keras_per_window() -> None:
        for w in feats:
            one(w[None], training=False)

    keras_per_window()
    t_keras = statistics.median(timed(keras_per_window, max(3, args.repeat // 4))) / n
    t_keras_batch = statistics.median(timed(lambda: one.predict(feats[:1], verbose=0), 5))
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "m.h5"
        keras_model.save(h5)
        ftfl = Path(tmp) / "float.tflite"
        subprocess.run(
            [sys.executable, "-m", "converter.convert_worker", str(h5), str(h5), str(ftfl), "--float"],
            check=True,
            capture_output=True,
        )
        from device.core.runtime import interpreter

        it = interpreter(ftfl)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]

        def float_tflite() -> None:
            for w in feats:
                it.set_tensor(inp["index"], w[None].astype(np.float32))
                it.invoke()
                it.get_tensor(out["index"])

        float_tflite()
        t_ftfl = statistics.median(timed(float_tflite, args.repeat)) / n
        rows.append(("float TFLite", t_ftfl, ftfl.stat().st_size))
    rows.append(("Keras float (TensorFlow), per window", t_keras, None))

    print(f"recording: {audio.source}, {audio.duration_s:.1f} s -> {n} windows of {params.window_s:g} s; {pinned}")
    print(f"features (read + resample + band-pass + MFCC): {t_feat * 1e3:.2f} ms per window")
    print(
        f"{'model':<40} {'inference ms/window':>20} {'features+inference ms/window':>30} {'x real time':>12} "
        f"{'size':>9}"
    )
    for name, t, size in rows:
        total = t_feat + t
        print(
            f"{name:<40} {t * 1e3:>20.3f} {total * 1e3:>30.2f} {params.window_s / total:>12.0f} "
            f"{(str(size // 1024) + ' KB') if size else '-':>9}"
        )
    print(
        f"int8 LiteRT vs Keras float, inference per window: {t_keras / t_int8:.1f}x faster; "
        f"Keras model.predict on one window: {t_keras_batch * 1e3:.1f} ms"
    )
    print(
        f"steth classify path (read + pipeline + int8 + heart rate + quality) on the {audio.duration_s:.0f} s "
        f"recording, warm: {t_classify * 1e3:.1f} ms"
    )
    support.table(
        ["pipeline", "features ms/window, 2 kHz", "features ms/window, 4 kHz", "classify ms, 2 kHz",
         "classify ms, 4 kHz"],
        [
            ("device/core/dsp.py (numpy)", f"{t_feat * 1e3:.3f}", f"{t_feat_4k * 1e3:.3f}", f"{t_classify * 1e3:.1f}",
             f"{t_classify_4k * 1e3:.1f}"),
            ("scipy.signal (before)", f"{t_feat_scipy * 1e3:.3f}", f"{t_feat_4k_scipy * 1e3:.3f}",
             f"{t_classify_scipy * 1e3:.1f}", f"{t_classify_4k_scipy * 1e3:.1f}"),
        ],
        f"device/core/dsp.py vs scipy.signal, same run (features differ by at most {diff:.3g})",
    )  # fmt: skip
    if t_feat_librosa is not None:
        print(f"features through librosa (before): {t_feat_librosa * 1e3:.2f} ms per window; device.core.features: "
              f"{t_feat * 1e3:.2f} ms per window, bit-identical to librosa's: {identical}")  # fmt: skip
    else:
        print("librosa is not installed: no comparison with the features as they were computed before")
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731
    support.table(
        ["measure", "figure", "target", "met"],
        [
            ("features + int8 inference per 5 s window", f"{(t_feat + t_int8) * 1e3:.2f} ms", "<= 5 ms",
             yes(t_feat + t_int8 <= 0.005)),
            ("x real time (one core)", f"{params.window_s / (t_feat + t_int8):.0f}x", ">= 1000x",
             yes(params.window_s / (t_feat + t_int8) >= 1000)),
            ("int8 LiteRT vs Keras float, inference only", f"{t_keras / t_int8:.0f}x faster", ">= 5x",
             yes(t_keras / t_int8 >= 5)),
            ("int8 vs Keras float, features + inference", f"{(t_feat + t_keras) / (t_feat + t_int8):.0f}x faster",
             ">= 5x", yes((t_feat + t_keras) / (t_feat + t_int8) >= 5)),
            (f"classify a {audio.duration_s:.0f} s recording, warm", f"{t_classify * 1e3:.1f} ms", "<= 100 ms",
             yes(t_classify <= 0.1)),
            ("segmentation per 5 s (segmenter features + MLP + decoder)", f"{t_seg * 1e3:.2f} ms",
             f"(envelope rate + bursts before: {t_env * 1e3:.2f} ms)", "-"),
            ("segmentation + features + int8 inference per 5 s window", f"{(t_seg + t_feat + t_int8) * 1e3:.2f} ms",
             "<= 5 ms", yes(t_seg + t_feat + t_int8 <= 0.005)),
        ],
        "Device pipeline vs targets (one core)",
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
