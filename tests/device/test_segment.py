"""The heart-cycle segmenter: the shipped weights, the decoder, and real annotated CirCor recordings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter import circor
from converter import segmenter as tr
from device.core import segment as sg
from device.core.audio_io import read_audio
from device.core.features import FeatureParams, preprocess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> sg.SegmenterModel:
    return sg.load_default()


@pytest.fixture(scope="module")
def unseen_slice(data_dir: Path, model: sg.SegmenterModel) -> list[tr.Prepared]:
    """The shared CirCor slice's recordings of patients the shipped segmenter never trained on."""
    if not (data_dir / "circor2022" / "training_data").is_dir():
        pytest.skip(f"CirCor slice not found under {data_dir}")
    unseen = set(model.meta["data"]["split"]["unseen_patients"])
    recs = [r for r in circor.load_circor2022(data_dir) if r.patient in unseen]
    if len(recs) < 5:
        pytest.skip("fewer than 5 slice recordings of unseen patients")
    return [tr.prepare(r) for r in recs]


def test_the_shipped_segmenter_is_small_numpy_and_describes_its_data_and_scores(model):
    npz = sg.default_path()
    assert npz.stat().st_size <= 200 * 1024
    meta = model.meta
    assert meta["data"]["dataset"] == "circor2022" and meta["data"]["split"]["trained_on"] == "train"
    split = meta["data"]["split"]
    assert split["test_patients"] >= 100 and split["val_patients"] >= 50
    scores = meta["scores"]["test"]
    assert scores["f1_s1"] >= 0.93 and scores["f1_s2"] >= 0.93
    assert scores["heart_rate"]["median_abs_error_bpm"] <= 2.0


def test_it_runs_without_tensorflow_or_litert():
    code = (
        "import sys, numpy as np; from device.core import segment as sg; "
        "sg.segment(np.random.default_rng(0).standard_normal(20000).astype('float32')); "
        "print(any(m.startswith(('tensorflow', 'ai_edge_litert', 'tflite_runtime')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_the_decoder_recovers_a_known_cycle_sequence():
    rng = np.random.default_rng(0)
    durations = [6, 8, 5, 16]  # frames: S1, systole, S2, diastole (0.7 s cycle)
    truth = np.concatenate([np.full(d, j) for _ in range(12) for j, d in enumerate(durations)])[7:]
    post = np.full((len(truth), 4), 0.1) + rng.uniform(0, 0.2, (len(truth), 4))
    post[np.arange(len(truth)), truth] += 0.5
    post /= post.sum(axis=1, keepdims=True)
    dm = sg.DurationModel((0.12, 0.16, 0.1, -0.4), (0, 0, 0, 1.0), (0.02, 0.03, 0.02, 0.04), (0, 0, 0, 0))
    d, dmax = dm.frames(0.7)
    states, _ = sg.decode(np.log(post / 0.25), d, dmax)
    assert np.mean(states == truth) > 0.95


def test_s1_and_s2_are_found_within_60_ms_on_unseen_circor_patients(unseen_slice, model):
    scores = tr.score(model, unseen_slice)
    print(f"{len(unseen_slice)} recordings: {scores.as_dict()}")
    assert scores.f1("S1") >= 0.9 and scores.f1("S2") >= 0.9
    hr = scores.heart_rate()
    assert hr["median_abs_error_bpm"] <= 3.0 and hr["octave_errors"] == 0


def test_heart_rate_comes_from_the_decoded_cycles(samples_dir, model):
    audio = read_audio(samples_dir / "e00008.flac")
    seg = sg.segment(preprocess(audio.samples, audio.sample_rate, FeatureParams()), model)
    intervals = np.diff(seg.s1)
    assert seg.heart_rate_bpm == pytest.approx(60 / np.median(intervals), abs=0.1)
    assert len(seg.s1) >= 0.8 * audio.duration_s * seg.heart_rate_bpm / 60
    # S2 follows each S1 within a systole
    after = [min((t for t in seg.s2 if t > s), default=np.inf) - s for s in seg.s1[:-1]]
    assert all(0.15 < a < 0.5 for a in after)


def test_a_model_with_other_features_is_refused(tmp_path, model):
    meta = dict(model.meta)
    model.save(tmp_path / "seg", {k: v for k, v in meta.items() if k not in ("durations", "features")})
    sidecar = tmp_path / "seg.json"
    d = json.loads(sidecar.read_text())
    d["features"]["nfft"] = 256
    sidecar.write_text(json.dumps(d))
    from device.core.errors import ModelError

    with pytest.raises(ModelError, match="other features"):
        sg.SegmenterModel.load(tmp_path / "seg.npz")
