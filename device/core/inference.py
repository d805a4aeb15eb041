"""The inference path shared by `steth classify`, the device daemon and the dashboard.

A shipped model is a ``.tflite`` file and a sidecar ``.json`` in ``device/models/``: its labels, the
FeatureParams it was trained with, its decision threshold, where it came from and how it scored. The
recording goes through the same pipeline as in training (device.core.features), each window through the
int8 model (LiteRT), and the window probabilities are averaged into one decision per recording.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from device.core import segment
from device.core.analysis import HeartRate, Quality, assess
from device.core.audio_io import Audio, read_audio
from device.core.errors import ClippedAudioError, ModelError, SilentAudioError, TooShortError
from device.core.features import (
    FeatureParams,
    check_samples,
    check_signal,
    preprocess,
    resample,
    signal_features,
)
from device.core.local_threshold import LocalThreshold
from device.core.local_threshold import load as load_local_threshold
from device.core.runtime import interpreter

log = logging.getLogger(__name__)

DEFAULT_MODEL = "screening"
UNSURE = "unsure"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    task: str
    labels: tuple[str, ...]

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Analysis:
    """One recording's result: the model's decision, and what makes it trustworthy or not."""

    label: str
    probabilities: dict[str, float]
    windows: list[tuple[float, dict[str, float]]]
    heart_rate_bpm: float | None
    quality: Quality
    model: ModelInfo
    task: str
    duration_s: float
    sample_rate: int
    periodicity: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # S1 and S2 centres (seconds) of the decoded heart cycles, for drawing them on the waveform
    cycles: dict[str, list[float]] | None = None
    # the model's raw score for its positive label (the mean over windows), before the threshold moves it
    # to 0.5; None for a model without one positive label. `steth calibrate` sets thresholds on it.
    score: float | None = None
    # set when a local threshold (device/core/local_threshold.py), not the model's own, made the decision
    decision: dict[str, Any] | None = None
    # answers of companion models (a sidecar's ``result_field``, e.g. "murmur"), each a result field
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the analysis windows: each window_s long, one every hop_s (the model's FeatureParams)
    window_s: float | None = None
    hop_s: float | None = None

    @property
    def confidence(self) -> float:
        if self.label == UNSURE:
            return max(self.probabilities.values())
        return self.probabilities.get(self.label, 0.0)

    @property
    def rerecord_reason(self) -> str | None:
        return "; ".join(self.quality.issues) if not self.quality.ok else None

    def quality_dict(self) -> dict[str, Any]:
        q: dict[str, Any] = {"score": self.quality.score, "ok": self.quality.ok, "issues": list(self.quality.issues)}
        if self.quality.reason:
            q["reason"] = self.quality.reason
        return q

    def to_result_message(self, device_id: str, **kwargs: Any) -> dict[str, Any]:
        """The result message of the contract: built by device.core.messages.result_message (a shorthand)."""
        from device.core.messages import result_message

        return result_message(self, device_id, **kwargs)

    def to_json(self, file: str | None = None) -> dict[str, Any]:
        """The object `steth classify --json` prints for one recording."""
        return {
            "file": file,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probabilities": self.probabilities,
            "windows": [{"start_s": s, "probabilities": p} for s, p in self.windows],
            "heart_rate_bpm": self.heart_rate_bpm,
            "quality": self.quality_dict(),
            "rerecord": self.rerecord_reason,
            "duration_s": round(self.duration_s, 3),
            "sample_rate": self.sample_rate,
            "task": self.task,
            "model": {**self.model.as_dict(), "task": self.model.task},
            **({"decision": self.decision} if self.decision else {}),
            **({"cycles": self.cycles} if self.cycles else {}),
            **self.fields,
        }


CLIPPING_LEVEL = 0.5  # of full scale: a peak below it cannot be the converter's clipping
MAX_CYCLES = 300  # S1 (and S2) times in a result: 2 minutes at 150 bpm


def cycles_field(seg: segment.Segmentation) -> dict[str, list[float]] | None:
    """The decoded S1 and S2 centres, seconds to 2 decimals, at most MAX_CYCLES each; None when none."""
    if not seg.s1 and not seg.s2:
        return None
    return {"s1": [round(t, 2) for t in seg.s1[:MAX_CYCLES]], "s2": [round(t, 2) for t in seg.s2[:MAX_CYCLES]]}


def models_dir() -> Path:
    return Path(str(resources.files("device").joinpath("models")))


def available_models(directory: Path | None = None) -> list[str]:
    d = directory or models_dir()
    return sorted(p.stem for p in d.glob("*.tflite") if p.with_suffix(".json").exists()) if d.is_dir() else []


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _calibrate(p: np.ndarray, threshold: float) -> np.ndarray:
    """Move the decision threshold to 0.5 (a shift in log-odds) so reported probabilities agree with the label."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    logit = np.log(p / (1 - p)) - np.log(t / (1 - t))
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


class Classifier:
    """A loaded model. Create once per process (loading checks the file's hash) and reuse."""

    def __init__(self, tflite_path: Path, meta: dict[str, Any], num_threads: int = 1) -> None:
        self.path = tflite_path
        self.meta = meta
        try:
            self.params = FeatureParams.from_dict(meta["feature_params"])
            labels = tuple(meta["labels"])
            self.threshold = float(meta.get("threshold", 0.5))
            self.model_threshold = self.threshold
            self.positive = meta.get("positive_label")
            self.task = str(meta["task"])
            # a companion model answers beside another model's result, as this field of it
            self.result_field: str | None = meta.get("result_field")
            if self.result_field is not None and (self.positive is None or len(labels) != 2):
                raise ValueError("result_field needs two labels and a positive_label")
            # labels answered as *unsure* rather than as a finding (sound_type: an artifact)
            self.unsure_labels = frozenset(str(x) for x in meta.get("unsure_labels", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{tflite_path.with_suffix('.json')}: incomplete model description ({exc})") from exc
        digest = sha256_file(tflite_path)
        if meta.get("sha256") and meta["sha256"] != digest:
            raise ModelError(
                f"{tflite_path}: file hash {digest[:12]} does not match its description ({meta['sha256'][:12]})",
                "the model file is corrupt or was replaced; reinstall the package",
            )
        self.info = ModelInfo(str(meta["name"]), str(meta["version"]), digest, self.task, labels)
        self._interp = interpreter(tflite_path, num_threads)
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        expected = (1, *self.params.input_shape)
        if tuple(self._in["shape"]) != expected:
            raise ModelError(f"{tflite_path}: input shape {tuple(self._in['shape'])} != features {expected}")
        self.local: LocalThreshold | None = None
        self.companions: list[Classifier] = []
        self.segmenter = segment.load_default()

    def use_local_threshold(self, folder: Path) -> LocalThreshold | None:
        """Decide at the threshold `steth calibrate` wrote in ``folder`` for this model, if it wrote one."""
        local = load_local_threshold(folder, self.info.name, self.info.sha256)
        if local is not None and self.positive is None:
            raise ModelError(f"{folder}: a local threshold for {self.info.name}, which has no positive label")
        self.local = local
        self.threshold = local.threshold if local else self.model_threshold
        return local

    def predict_windows(self, features: np.ndarray) -> np.ndarray:
        """(n, frames, coeffs) float features -> (n, classes) probabilities from the (int8) model."""
        scale, zero = self._in["quantization"]
        out_scale, out_zero = self._out["quantization"]
        dtype = self._in["dtype"]
        # quantised and dequantised for all windows at once (the same numbers as window by window); the
        # model takes one window a call
        x = features
        if dtype != np.float32 and scale:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        x = np.ascontiguousarray(x, dtype=dtype)
        raw = np.empty((len(features), len(self.info.labels)), dtype=self._out["dtype"])
        for i in range(len(x)):
            self._interp.set_tensor(self._in["index"], x[i : i + 1])
            self._interp.invoke()
            raw[i] = self._interp.get_tensor(self._out["index"])[0]
        y = raw.astype(np.float32)
        probs: np.ndarray = (y - out_zero) * out_scale if out_scale else y
        return probs

    def analyse(self, audio: Audio) -> Analysis:
        """Classify one recording. Unusable signal (silent, clipped, no rhythm) gives label 'unsure'."""
        check_samples(audio)  # EmptyAudioError / InvalidAudioError: nothing to analyse
        blocking: list[str] = []
        reason = ""
        try:
            check_signal(audio, self.params)
        except SilentAudioError as exc:
            blocking.append(f"{exc.message.split(': ', 1)[-1]}: {exc.hint}")
            reason = "silence"
        except ClippedAudioError as exc:
            # many samples at the peak, but far from full scale: a flat-topped signal (a pure tone), not
            # clipping; the segmentation says whether it holds heart sounds
            if float(np.max(np.abs(audio.samples))) >= CLIPPING_LEVEL:
                blocking.append(f"{exc.message.split(': ', 1)[-1]}: {exc.hint}")
                reason = "clipping"
        x = preprocess(audio.samples, audio.sample_rate, self.params)
        # under 2 s: TooShortError propagates, nothing to say; 2-5 s: repeated to one window
        features = signal_features(x, self.params, audio.source)
        probs = self.predict_windows(features)
        rate = self.params.sample_rate
        x2k = x if rate == segment.SAMPLE_RATE else resample(x, rate, segment.SAMPLE_RATE)
        seg = segment.segment(x2k, self.segmenter)
        quality, hr = assess(audio, x, self.params.sample_rate, seg)
        if blocking:
            quality = Quality(0.0, False, blocking + [i for i in quality.issues if i not in blocking], reason)
        analysis = self._decide(probs, quality, hr, audio, seg)
        for companion in self.companions:
            same = companion.params == self.params  # the same features: computed once
            field_features = features if same else None
            analysis.fields[str(companion.result_field)] = companion.field_answer(audio, quality, field_features)
        return analysis

    def field_answer(self, audio: Audio, quality: Quality, features: np.ndarray | None = None) -> dict[str, Any]:
        """This (companion) model's answer as a result field: its positive label's name or the other
        label's, or "unknown" when the signal is unfit (the main model's quality) or too short for it;
        ``probability`` is P(positive), shifted so that 0.5 is the model's threshold."""
        if features is None:
            try:
                x = preprocess(audio.samples, audio.sample_rate, self.params)
                features = signal_features(x, self.params, audio.source)
            except TooShortError:
                return {"label": "unknown", "probability": None}
        labels = self.info.labels
        pos = labels.index(str(self.positive))
        score = float(self.predict_windows(features)[:, pos].mean())
        p = float(_calibrate(np.array([score]), self.threshold)[0])
        label = labels[pos] if score >= self.threshold else labels[1 - pos]
        return {"label": label if quality.ok else "unknown", "probability": round(p, 4)}

    def analyse_file(self, source: str | Path | bytes | BinaryIO) -> Analysis:
        return self.analyse(read_audio(source))

    def _decide(
        self, probs: np.ndarray, quality: Quality, hr: HeartRate, audio: Audio, seg: segment.Segmentation | None = None
    ) -> Analysis:
        labels = self.info.labels
        score: float | None = None
        if self.positive is not None and len(labels) == 2:
            pos = labels.index(self.positive)
            window_pos = _calibrate(probs[:, pos], self.threshold)
            per_window = (
                np.stack([1 - window_pos, window_pos], axis=1)
                if pos == 1
                else np.stack([window_pos, 1 - window_pos], axis=1)
            )
            score = float(probs[:, pos].mean())
            record_pos = float(_calibrate(np.array([score]), self.threshold)[0])
            record = np.array([1 - record_pos, record_pos] if pos == 1 else [record_pos, 1 - record_pos])
            # the threshold's own rule (score >= threshold), also for a score right at it (record_pos 0.5)
            label = labels[pos] if score >= self.threshold else labels[1 - pos]
        else:
            per_window = probs
            record = probs.mean(axis=0)
            label = labels[int(np.argmax(record))]
        if not quality.ok or label in self.unsure_labels:
            label = UNSURE

        def rnd(v: float | np.floating[Any]) -> float:
            return round(float(v), 4)

        return Analysis(
            label=label,
            probabilities={lab: rnd(p) for lab, p in zip(labels, record, strict=True)},
            windows=[
                (round(i * self.params.hop_s, 3), {lab: rnd(p) for lab, p in zip(labels, row, strict=True)})
                for i, row in enumerate(per_window)
            ],
            heart_rate_bpm=hr.bpm if hr.bpm is not None and 20 <= hr.bpm <= 300 else None,
            quality=quality,
            model=self.info,
            task=self.task,
            duration_s=audio.duration_s,
            sample_rate=audio.sample_rate,
            periodicity=round(hr.periodicity, 3),
            score=score,
            decision=self.local.decision() if self.local else None,
            cycles=cycles_field(seg) if seg is not None and quality.ok else None,
            window_s=self.params.window_s,
            hop_s=self.params.hop_s,
        )


def describe_model(name: str | None = None, directory: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The ``.tflite`` path of a shipped model (by name), of a given path, or of the one model in a given
    folder, and its sidecar description."""
    name = name or DEFAULT_MODEL
    candidate = Path(name)
    if candidate.is_dir():  # a folder holding one model, e.g. what `steth convert --dest` wrote
        found = available_models(candidate)
        if len(found) != 1:
            raise ModelError(
                f"{candidate} holds {len(found)} models ({', '.join(found) or 'none'})",
                "give the .tflite file of the one to use",
            )
        candidate = candidate / f"{found[0]}.tflite"
    path = candidate if candidate.suffix == ".tflite" else (directory or models_dir()) / f"{name}.tflite"
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        present = ", ".join(available_models(directory)) or "none"
        raise ModelError(
            f"model {name!r} not found ({path})",
            f"shipped models: {present}; train and convert one with `steth train` and `steth convert`",
        )
    try:
        return path, json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ModelError(f"{meta_path}: not valid JSON ({exc})", "reinstall the package") from exc


def companion_models(directory: Path | None = None) -> list[str]:
    """Shipped models whose sidecar names a ``result_field``: they answer beside every other model."""
    d = directory or models_dir()
    out = []
    for name in available_models(d):
        try:
            meta = json.loads((d / f"{name}.json").read_text())
        except ValueError:
            continue  # load_model reports it when that model itself is asked for
        if isinstance(meta, dict) and meta.get("result_field"):
            out.append(name)
    return out


def load_model(
    name: str | None = None,
    directory: Path | None = None,
    num_threads: int = 1,
    threshold_dir: Path | None = None,
    companions: bool = True,
) -> Classifier:
    """A shipped model by name (default: the screening model), or a .tflite path with its .json beside it;
    deciding at the local threshold in ``threshold_dir`` when `steth calibrate` wrote one there. Unless
    it is one itself, the shipped companion models (e.g. murmur) answer beside it as result fields."""
    clf = Classifier(*describe_model(name, directory), num_threads)
    if threshold_dir is not None:
        clf.use_local_threshold(threshold_dir)
    if companions and clf.result_field is None:
        for other in companion_models(directory):
            companion = Classifier(*describe_model(other, directory), num_threads)
            if companion.info.sha256 != clf.info.sha256:
                clf.companions.append(companion)
    return clf
