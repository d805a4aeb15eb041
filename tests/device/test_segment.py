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
from tests.device import segment_reference as ref

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
    # like with like: the decoded S1s inside the annotated spans (model card, "Heart cycles")
    assert scores["heart_rate"]["annotated_span"]["within_10pct"] >= 0.98


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


def test_heart_rate_against_the_annotated_cycles_on_unseen_circor_patients(unseen_slice, model):
    """The reading of the whole recording, and the decoded S1s inside the annotated spans only (the
    annotations cover a few seconds of 20-30 s; an infant's rate moves more than 10 % in that time)."""
    hr = tr.score(model, unseen_slice).heart_rate()
    print(hr)
    fast = [it for it in unseen_slice if (tr.annotated_bpm(it.rec.spans) or 0) >= 100]
    assert len(fast) >= 5  # children's fast rates are in it
    for figures in (hr, hr["annotated_span"]):
        assert figures["recordings"] >= 20 and figures["no_estimate"] == 0
        assert figures["within_10pct"] >= 0.95 and figures["within_10pct_over_100bpm"] >= 0.95
        assert figures["octave_errors"] == 0
    assert hr["median_abs_error_bpm"] <= 2.0 and hr["annotated_span"]["median_abs_error_bpm"] <= 1.5


# The shipped samples' rates, from their sounds: the envelope autocorrelation agrees with these for all but
# e00152, whose beats were counted on the waveform (a loud S1 and S2, a soft sound 0.70 s after the S1, then
# 0.98 s of silence: a premature beat every other beat, 14 beats from 0.14 to 11.06 s, 71 bpm; read 35 bpm,
# one cycle per pair, before the half-cycle check).
SAMPLE_BPM = {"a0296": 81.1, "a0405": 70.6, "d0016": 46.0, "d0017": 84.1, "e00008": 97.0, "e00152": 71.4}


@pytest.mark.parametrize("name", sorted(SAMPLE_BPM))
def test_the_shipped_samples_are_read_at_their_rate(samples_dir, model, name):
    audio = read_audio(samples_dir / f"{name}.flac")
    seg = sg.segment(preprocess(audio.samples, audio.sample_rate, FeatureParams()), model)
    assert seg.heart_rate_bpm == pytest.approx(SAMPLE_BPM[name], rel=0.1)


def _posteriors(beats: list[list[int]], weights: list[float], seed: int) -> np.ndarray:
    """Frame posteriors of a sequence of beats (frames of S1, systole, S2, diastole each), the true state
    given ``weight`` over a noisy floor, the rest of the weight on diastole (a quiet beat is mostly
    silence)."""
    rng = np.random.default_rng(seed)
    truth = np.concatenate([np.full(d, j) for beat in beats for j, d in enumerate(beat)])
    weight = np.concatenate([np.full(sum(beat), w) for beat, w in zip(beats, weights, strict=True)])
    post = 0.05 + rng.uniform(0, 0.1, (len(truth), 4))
    post[np.arange(len(truth)), truth] += weight
    post[:, 3] += 0.8 - weight
    return np.asarray(post / post.sum(axis=1, keepdims=True))


def _sample_signals(samples_dir: Path) -> dict[str, np.ndarray]:
    """The shipped samples preprocessed as the device does, and a 0.9 s cut of one (a short recording)."""
    params = FeatureParams(band_high_hz=700.0, fmax=800.0)
    out = {}
    for path in sorted(samples_dir.glob("*.flac")):
        audio = read_audio(path)
        out[path.stem] = preprocess(audio.samples, audio.sample_rate, params)
    out["short"] = out["a0296"][:1800]
    return out


def test_the_band_energies_and_their_context_are_the_reference_ones_bit_for_bit(samples_dir):
    for name, x in _sample_signals(samples_dir).items():
        feats = sg.frame_features(x)
        expected = ref.frame_features(x)
        assert feats.dtype == expected.dtype and np.array_equal(feats, expected), name
        context, expected_context = sg.with_context(feats), ref.with_context(feats)
        assert context.shape == expected_context.shape and np.array_equal(context, expected_context), name


def test_the_decoder_gives_the_reference_decoders_states_and_score_bit_for_bit(samples_dir, model):
    """At the recording's own cycle and at fast, slow and very slow ones (long and short duration windows,
    the first segment's rule ending inside and beyond the first step)."""
    for name, x in _sample_signals(samples_dir).items():
        post = model.posteriors(sg.frame_features(x))
        log_b = np.log(np.clip(post / model.priors, 1e-8, None))
        candidates = sg.cycle_candidates(post, 1)
        for cycle in [c for c, _ in candidates] + [0.3, 0.8, 1.7, 2.4]:
            durations, dmax = model.durations.frames(cycle)
            states, score = sg.decode(log_b, durations, dmax)
            expected_states, expected_score = ref.decode(log_b, durations, dmax)
            assert np.array_equal(states, expected_states), (name, cycle)
            assert score == expected_score, (name, cycle)
            # with the half length in the same pass (as segment_posteriors tries it), in either order
            half = model.durations.frames(cycle / 2)
            for pair, which in (([(durations, dmax), half], 0), ([half, (durations, dmax)], 1)):
                got_states, got_score = sg.decode_many(log_b, pair)[which]
                assert np.array_equal(got_states, expected_states) and got_score == expected_score, (name, cycle)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_other_beat_premature_is_read_at_the_beats_not_the_pairs(model, seed):
    """A normal beat, a soft premature one 0.70 s later, a 1.0 s pause: the pair repeats best (35 bpm),
    the heart beats twice in it (70.6 bpm); decoding at half the length explains every sound. The check
    is made only when more than two sounds a pair are heard (here three: S1, S2, the premature S1)."""
    normal, premature = [5, 9, 4, 17], [5, 9, 4, 32]
    post = _posteriors([normal, premature] * 8, [0.8, 0.35] * 8, seed)
    assert 60 / sg.cycle_candidates(post, 1)[0][0] == pytest.approx(35.3, abs=1)  # what the autocorrelation says
    seg = sg.segment_posteriors(post, model, lambda: 3 / 1.7)
    assert seg.heart_rate_bpm == pytest.approx(70.6, abs=2)
    assert len(seg.s1) >= 14
    # two sounds a pair: a slow heart's S1 and S2 with silence between, left at its rate
    assert sg.segment_posteriors(post, model, lambda: 2 / 1.7).heart_rate_bpm == pytest.approx(35.3, abs=1)
    assert sg.segment_posteriors(post, model).heart_rate_bpm == pytest.approx(35.3, abs=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_regular_slow_rhythm_stays_slow(model, seed):
    # even if the envelope heard more than S1 and S2 (a murmur): the decoder keeps the slow cycle
    seg = sg.segment_posteriors(_posteriors([[5, 16, 5, 41]] * 10, [0.8] * 10, seed), model, lambda: 3 / 1.34)
    assert seg.heart_rate_bpm == pytest.approx(44.8, abs=1.5)


def test_the_rate_is_beats_over_time_when_intervals_alternate():
    iv = [0.7, 1.0] * 6 + [0.7]  # the median is 0.7 s (85.7 bpm)
    s1 = np.cumsum([0.5, *iv]).tolist()
    assert sg.heart_rate_from_s1(s1) == pytest.approx(60 * len(iv) / sum(iv), abs=0.2)  # 71.6


def test_the_rate_ignores_a_missed_and_an_extra_beat_and_is_finer_than_the_frame_grid():
    iv = [0.41, 0.42] * 8 + [0.83, 0.2, 0.22]  # 10 ms grid; one beat missed, one split in two
    s1 = np.round(np.cumsum([0.3, *iv]), 2).tolist()
    assert sg.heart_rate_from_s1(s1) == pytest.approx(60 / 0.415, abs=0.3)  # the median alone: 142.9 or 146.3


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
