"""`steth convert`: a trained run -> a checked, shipped int8 TFLite model.

Conversion runs in a subprocess. The int8 model is then checked before anything is written to the
package: it must agree with the float model on >= 99% of the held-out recordings, its MAcc may differ by
at most 0.01, and known non-heart signals (silence, white noise, 50 Hz hum, a pure tone) must come out
'unsure' or low-confidence through the full shipped pipeline. Any failure exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from converter import datasets as ds
from converter import featurestore, thresholds
from converter.metrics import binary_scores
from converter.tasks import DEFAULT_TASK, TASKS, Task, task_of_run
from device.core.audio_io import Audio
from device.core.errors import ModelError, StethError
from device.core.features import FeatureParams
from device.core.inference import Classifier, models_dir, sha256_file

MIN_AGREEMENT = 0.99
MAX_MACC_DELTA = 0.01
MAX_CONFIDENCE_ON_NON_HEART = 0.75
REPRESENTATIVE_WINDOWS = 8000  # calibration windows from the development recordings (2,000 left 98.7% agreement)


class ParityError(StethError):
    """The int8 model does not behave like the float model, or answers confidently on non-heart sounds."""


def known_signals(rate: int = 4000, seconds: float = 10.0) -> dict[str, Audio]:
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    sig = {
        "silence": np.zeros_like(t),
        "white_noise": 0.1 * rng.standard_normal(len(t)),
        "hum_50hz": 0.3 * np.sin(2 * np.pi * 50 * t),
        "tone_200hz": 0.3 * np.sin(2 * np.pi * 200 * t),
    }
    return {k: Audio(v.astype(np.float32), rate, k) for k, v in sig.items()}


def check_known_signals(clf: Classifier) -> dict[str, dict[str, Any]]:
    out = {}
    for name, audio in known_signals().items():
        a = clf.analyse(audio)
        confident = a.label != "unsure" and a.confidence > MAX_CONFIDENCE_ON_NON_HEART
        out[name] = {
            "label": a.label,
            "confidence": round(a.confidence, 3),
            "quality_ok": a.quality.ok,
            "passed": not confident,
        }
    return out


def convert_in_subprocess(keras_path: Path, rep: np.ndarray, out: Path, as_float: bool = False) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        rep_path = Path(tmp) / "rep.npy"
        np.save(rep_path, rep)
        cmd = [sys.executable, "-m", "converter.convert_worker", str(keras_path), str(rep_path), str(out)]
        proc = subprocess.run(
            cmd + (["--float"] if as_float else []), capture_output=True, text=True, check=False, timeout=1800
        )
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ModelError(
            f"TFLite conversion failed (exit {proc.returncode}):\n{tail}",
            "check that tf-keras matches tensorflow and TF_USE_LEGACY_KERAS=1 is honoured",
        )
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "tensorflow ?"


def convert(
    run_dir: Path, data_dir: Path, name: str | None, version: str, dest: Path, allow_shortfall: bool = False
) -> dict[str, Any]:
    """Convert, check, and write ``name``.tflite/.json into ``dest``; ParityError when a check fails.

    ``allow_shortfall`` writes the model even so, with the failures recorded in its sidecar
    (``checks_passed: false``) for everyone to see; the command still exits non-zero.
    """
    report = json.loads((run_dir / "report.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    task = task_of_run(report)  # the run's own definition: a task need not be one of the shipped ones
    name = name or task.name
    # The run's own settings, not the task's defaults: `steth train --set features.X=...` trains with
    # others, and a sidecar naming the defaults would make the device compute features the model never saw.
    if not isinstance(report.get("feature_params"), dict):
        raise ModelError(f"{run_dir / 'report.json'} names no FeatureParams", "retrain with steth train")
    params = FeatureParams.from_dict(report["feature_params"])  # ConfigError, with its fix, if not valid
    recs = {r.key: r for r in task.relabel(task.loader(data_dir))}
    dev = [recs[k] for k in split["dev"] if k in recs]
    test = [recs[k] for k in split["test"] if k in recs]
    dev_fs = (
        featurestore.build(dev, params, name=f"{task.name}-dev-rep", use_cache=False)
        if len(dev) < 50
        else featurestore.build(dev, params, name=f"{task.name}-dev-rep")
    )
    rep = representative_windows(dev_fs.features)

    from converter import models

    keras_model = models.keras().models.load_model(run_dir / "model.h5", compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        tflite = Path(tmp) / f"{name}.tflite"
        tf_version = convert_in_subprocess(run_dir / "model.h5", rep, tflite)
        meta = sidecar(report, task, name, version, tflite, tf_version, params)
        # `steth evaluate` warns when it scores recordings the model was trained on
        meta["training_recordings"] = sorted(k.rsplit("/", 1)[-1] for k in split["dev"])
        check_and_ship(
            keras_model, tflite, meta, test, float(report["threshold"]), dest, allow_shortfall=allow_shortfall
        )
    figures = dest / "figures"
    figures.mkdir(exist_ok=True)
    if (run_dir / "boxplot.png").exists():
        shutil.copy(run_dir / "boxplot.png", figures / f"{name}_boxplot.png")
    return meta


def representative_windows(features: np.ndarray) -> np.ndarray:
    """The int8 calibration windows: a fixed random sample of the development windows."""
    rng = np.random.default_rng(0)
    return features[rng.permutation(len(features))[:REPRESENTATIVE_WINDOWS]]


def model_file_fields(tflite: Path, tf_version: str, params: FeatureParams) -> dict[str, Any]:
    """The sidecar fields every converted model has: its features, its file and how it was made."""
    return {
        "feature_params": params.to_dict(),
        "feature_params_fingerprint": params.fingerprint(),
        "sha256": sha256_file(tflite),
        "size_bytes": tflite.stat().st_size,
        "quantization": "full integer int8 (weights and activations), int8 input and output",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "converter": tf_version,
    }


def check_and_ship(
    keras_model: Any,
    tflite: Path,
    meta: dict[str, Any],
    held_out: list[ds.Recording],
    threshold: float,
    dest: Path,
    *,
    allow_shortfall: bool = False,
) -> dict[str, Any]:
    """Check the int8 ``tflite`` (described by ``meta``, written beside it) against the float model on the
    held-out recordings and on known non-heart signals, record the results in ``meta``, and copy both
    files into ``dest``; ParityError, with nothing copied, when a check fails (unless ``allow_shortfall``:
    then the failures are recorded in the sidecar, ``checks_passed: false``, for everyone to see)."""
    meta_path = tflite.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=1))
    clf = Classifier(tflite, meta)
    labels = tuple(meta["labels"])
    parity = parity_check(keras_model, clf, held_out, labels, meta.get("positive_label"), threshold)
    known = check_known_signals(clf)
    meta["parity"] = parity
    meta["known_signals"] = known
    meta_path.write_text(json.dumps(meta, indent=1))
    failures = []
    if parity["agreement"] < MIN_AGREEMENT:
        failures.append(f"int8 and float agree on {parity['agreement']:.1%} of held-out recordings (< 99%)")
    if parity.get("macc_delta", 0.0) > MAX_MACC_DELTA:
        failures.append(f"MAcc differs by {parity['macc_delta']:.3f} (> {MAX_MACC_DELTA})")
    failures += [f"{k}: confident '{v['label']}' ({v['confidence']})" for k, v in known.items() if not v["passed"]]
    meta["checks_passed"] = not failures
    meta["check_failures"] = failures
    meta_path.write_text(json.dumps(meta, indent=1))
    if failures and not allow_shortfall:
        raise ParityError(
            f"int8 {meta['name']} model refused: " + "; ".join(failures), "nothing was written to the package"
        )
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tflite, dest / tflite.name)
    shutil.copy(meta_path, dest / meta_path.name)
    return meta


def sidecar(
    report: dict[str, Any], t: Task, name: str, version: str, tflite: Path, tf_version: str, params: FeatureParams
) -> dict[str, Any]:
    """The model described as data: everything the device, the dashboard and the model card need."""
    return {
        "name": name,
        "version": version,
        "task": t.name,
        "title": t.title,
        "labels": list(t.labels),
        "positive_label": t.positive,
        # labels answered as *unsure* (record again) rather than as a finding
        **({"unsure_labels": list(t.unsure_labels)} if t.unsure_labels else {}),
        "threshold": report.get("threshold", 0.5),
        "threshold_note": thresholds.threshold_note(report),
        # steth ensemble --transfer-threshold: the shares flagged that moved the threshold, for the model card
        **(
            {"threshold_transfer": report["threshold_choice"]["transfer"]}
            if "transfer" in (report.get("threshold_choice") or {})
            else {}
        ),
        "aggregation": "mean of window probabilities",
        "architecture": report["chosen_arch"],
        # an average of models (steth ensemble): which, and how it was judged
        **({"ensemble": report["ensemble"]} if "ensemble" in report else {}),
        **model_file_fields(tflite, tf_version, params),
        "training_data": t.description,
        "task_definition": t.to_dict(),  # how data sets' labels map onto this model's (steth evaluate)
        "metrics": {k: report.get(k) for k in ("cv_headline_means", "test", *(c.name for c in t.checks))},
        "intended_use": "screening support for clinicians; not a diagnosis",
    }


def parity_check(
    keras_model: Any,
    clf: Classifier,
    recordings: list[ds.Recording],
    labels: tuple[str, ...],
    positive: str | None,
    threshold: float,
) -> dict[str, Any]:
    """Float (Keras) vs int8 (LiteRT) on the same windows of held-out recordings."""
    fs = featurestore.build(recordings, clf.params, name="parity", use_cache=False)
    kept = np.unique(fs.owner)
    float_dec, int8_dec, y, s_float, s_int8 = [], [], [], [], []
    max_diff = 0.0
    for r in kept:
        w = fs.features[fs.owner == r]
        pf = keras_model.predict(w, verbose=0).mean(axis=0)
        pq = clf.predict_windows(w).mean(axis=0)
        max_diff = max(max_diff, float(np.abs(pf - pq).max()))
        if positive is not None:
            pos = labels.index(positive)
            s_float.append(pf[pos])
            s_int8.append(pq[pos])
            float_dec.append(pf[pos] >= threshold)
            int8_dec.append(pq[pos] >= threshold)
            y.append(recordings[r].label == positive)
        else:
            float_dec.append(int(pf.argmax()))
            int8_dec.append(int(pq.argmax()))
    out: dict[str, Any] = {
        "n_recordings": len(kept),
        "agreement": float(np.mean(np.array(float_dec) == np.array(int8_dec))) if len(kept) else 0.0,
        "max_probability_difference": round(max_diff, 4),
    }
    if positive is not None and len(kept):
        f = binary_scores(np.array(y), np.array(s_float), threshold)
        q = binary_scores(np.array(y), np.array(s_int8), threshold)
        out.update({"float": f, "int8": q, "macc_delta": abs(f["macc"] - q["macc"])})
    return out


def register(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a trained run to a checked int8 TFLite model and ship it")
    p.add_argument("run_dir", type=Path, nargs="?", help="run folder of `steth train` (default artifacts/train/TASK)")
    p.add_argument(
        "--task", default=DEFAULT_TASK, help=f"the task whose default run folder to convert ({', '.join(TASKS)})"
    )
    p.add_argument("--data-dir", help=f"data folder (default: ${ds.DATA_ENV})")
    p.add_argument("--name", help="model name (default: the run's task name)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--dest", type=Path, default=None, help="where to write (default: the installed device/models)")
    p.add_argument(
        "--allow-parity-shortfall",
        action="store_true",
        help="write the model even when a check fails, recording the failure in its sidecar (exit status 3)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or Path("artifacts") / "train" / args.task
    meta = convert(
        run_dir,
        ds.resolve_data_dir(args.data_dir),
        args.name,  # default: the run's task name
        args.version,
        args.dest or models_dir(),
        allow_shortfall=args.allow_parity_shortfall,
    )
    p = meta["parity"]
    print(f"shipped {meta['name']} {meta['version']} ({meta['size_bytes']} bytes, sha256 {meta['sha256'][:12]})")
    print(
        f"parity on {p['n_recordings']} held-out recordings: agreement {p['agreement']:.1%}, "
        f"max probability difference {p['max_probability_difference']}"
    )
    for k, v in meta["known_signals"].items():
        print(f"known signal {k}: {v['label']} ({v['confidence']})")
    if meta["check_failures"]:
        print(
            "CHECKS FAILED, model written anyway (--allow-parity-shortfall): " + "; ".join(meta["check_failures"]),
            file=sys.stderr,
        )
        return 3
    return 0
