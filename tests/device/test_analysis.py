"""Heart rate and signal quality, checked against annotated real recordings and known signals."""

from __future__ import annotations

import numpy as np
import pytest

from device.core.analysis import (
    MAX_PITCHED_SHARE,
    SHOWN_SHARE,
    STANDOUT_SHARE,
    assess,
    envelope,
    heart_rate,
    heart_sound_share,
    heart_sounds,
    pitched_share,
    sound_standout,
)
from device.core.audio_io import Audio, read_audio
from device.core.errors import AudioError
from device.core.features import FeatureParams, preprocess
from tests.benchmarks import eval_heart_rate

PARAMS = FeatureParams()


def _beats(
    bpm: float,
    seconds: float = 12.0,
    rate: int = 2000,
    seed: int = 0,
    jitter: float = 0.0,
    systole: float | None = None,
) -> np.ndarray:
    """A synthetic phonocardiogram: S1 and S2 as short 50 Hz / 70 Hz bursts, with a little noise.

    S2 follows S1 by ``systole`` seconds (default 0.3 of the period); each beat-to-beat interval varies
    by up to ``jitter`` (a share of the period) when asked.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.02 * rng.standard_normal(len(t))
    period = 60.0 / bpm
    start = 0.2
    while start < seconds - 0.5:
        for offset, freq, amp in ((0.0, 50, 1.0), (systole or 0.3 * period, 70, 0.6)):
            m = (t >= start + offset) & (t < start + offset + 0.08)
            x[m] += amp * np.sin(2 * np.pi * freq * t[m]) * np.hanning(m.sum())
        start += period * (1 + jitter * rng.uniform(-1, 1)) if jitter else period
    return x.astype(np.float32)


@pytest.mark.parametrize("bpm", [48, 60, 75, 95, 120, 150])
def test_it_finds_the_rate_of_a_synthetic_heartbeat(bpm):
    x = preprocess(_beats(bpm), 2000, PARAMS)
    hr = heart_rate(x, PARAMS.sample_rate)
    assert hr.bpm == pytest.approx(bpm, rel=0.03)
    assert hr.periodicity > 0.5


def test_heart_rate_against_pascal_s1_annotations(data_dir):
    """PASCAL set A's S1 positions give the true rate: median error, share within 10%, no octave error."""
    rows = eval_heart_rate.pascal_annotated(data_dir, lambda x, rate: heart_rate(x, rate).bpm)
    assert len(rows) == 21
    assert all(r.got is not None for r in rows)
    median, within, worst = eval_heart_rate.summary(rows)
    print(
        f"heart rate on {len(rows)} annotated recordings: median error {median:.1f} bpm, within 10%: "
        f"{within:.0%}, worst: " + "; ".join(f"{r.name} {r.got} for {r.true_bpm:.1f}" for r in worst)
    )
    assert median <= 2.0
    assert within >= 0.95
    # No reading at a multiple of the rate (it read one at 3.35x before the cycle check).
    assert all(0.8 <= (r.got or 0) / r.true_bpm <= 1.25 for r in rows), [(r.name, r.got, r.true_bpm) for r in rows]


def test_the_known_octave_errors_are_gone(data_dir):
    """Recordings that were read at twice, three times or half their rate (eval_heart_rate.KNOWN)."""
    for path, (low, high) in eval_heart_rate.KNOWN.items():
        x = eval_heart_rate.processed(eval_heart_rate.find(data_dir, path))
        assert low <= (heart_rate(x, PARAMS.sample_rate).bpm or 0) <= high, path


def test_readings_above_150_bpm_are_rare_across_the_data_sets(data_dir):
    """Every 4th recording: an S1-S2 interval read as a cycle gives 130-240 bpm, which at rest is rare.

    Before the cycle check 10.7% of the recordings read above 150 bpm (384 of 3,582); after, 0.7%.
    """
    bpm = []
    for path in eval_heart_rate.all_recordings(data_dir, 4):
        try:
            x = eval_heart_rate.processed(path)
        except AudioError:
            continue
        bpm.append(heart_rate(x, PARAMS.sample_rate).bpm or 0.0)
    fast = float(np.mean(np.array(bpm) > 150))
    print(f"\n{len(bpm)} recordings, {fast:.1%} above 150 bpm")
    assert len(bpm) > 800
    assert fast <= 0.02


def test_the_bundled_d0017_is_not_read_at_its_s1_s2_interval(samples_dir):
    audio = read_audio(samples_dir / "d0017.flac")  # irregular: S1-S2 (0.3 s) repeats best, read as 199 bpm
    hr = heart_rate(preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate)
    assert hr.bpm is not None and 60 <= hr.bpm <= 110


@pytest.mark.parametrize("bpm", [50, 65, 75])
@pytest.mark.parametrize("seed", [0, 1])
def test_an_irregular_rhythm_is_not_read_at_its_s1_s2_interval(bpm, seed):
    """Beat-to-beat intervals vary by up to 10%, S1-S2 stays 0.33 s: that interval repeats best (the
    autocorrelation alone read 180 bpm), but one cycle holds two sounds."""
    x = preprocess(_beats(bpm, seconds=15.0, seed=seed, jitter=0.1, systole=0.33), 2000, PARAMS)
    assert heart_rate(x, PARAMS.sample_rate).bpm == pytest.approx(bpm, rel=0.15)


def test_heart_sounds_are_found_beside_far_louder_knocks():
    x = _beats(70, seconds=12.0)
    x[5000:5400] += 40 * np.hanning(400).astype(np.float32)  # a knock 40 times as loud as S1
    env = envelope(preprocess(x, 2000, PARAMS), PARAMS.sample_rate)
    beats = 12.0 * 70 / 60
    assert 1.6 * beats <= len(heart_sounds(env)) <= 2.4 * beats  # S1 and S2 of each beat, give or take


def test_a_clean_recording_is_fit_and_noise_is_not(samples_dir):
    audio = read_audio(samples_dir / "e00008.flac")
    quality, hr = assess(audio, preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate)
    assert quality.ok and quality.score > 0.7 and hr.bpm is not None
    noise = Audio((0.1 * np.random.default_rng(1).standard_normal(40000)).astype(np.float32), 4000, "noise")
    q, _ = assess(noise, preprocess(noise.samples, 4000, PARAMS), PARAMS.sample_rate)
    assert not q.ok and q.reason == "no_heart_sounds" and any("no heart sounds" in i for i in q.issues)
    assert quality.reason is None


def test_clipping_and_a_weak_signal_are_named(samples_dir):
    audio = read_audio(samples_dir / "a0405.flac")
    x = preprocess(audio.samples, audio.sample_rate, PARAMS)
    loud = Audio(np.clip(audio.samples * 8, -1, 1), audio.sample_rate, "loud")
    q, _ = assess(loud, x, PARAMS.sample_rate)
    assert any("clipping" in i for i in q.issues) and not q.ok and q.reason == "clipping"
    weak = Audio(audio.samples * 1e-3, audio.sample_rate, "weak")
    q, _ = assess(weak, x, PARAMS.sample_rate)
    assert any("weak" in i for i in q.issues) and q.reason == "silence"


def test_noise_over_most_of_a_recording_is_flagged(samples_dir):
    audio = read_audio(samples_dir / "e00008.flac")  # 2 kHz
    x = audio.samples.copy()
    rng = np.random.default_rng(2)
    for start in range(0, len(x) - 1500, 2000):  # rubbing 10 times as loud as the heart, 0.75 s of every 1 s
        x[start : start + 1500] += 0.25 * rng.standard_normal(1500).astype(np.float32)
    bumped = Audio(np.clip(x, -1, 1), audio.sample_rate, "rubbing")
    q, _ = assess(bumped, preprocess(bumped.samples, bumped.sample_rate, PARAMS), PARAMS.sample_rate)
    assert not q.ok and q.reason in ("noise", "no_heart_sounds")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_known_non_heart_signals_are_unsure_with_a_reason(seed):
    from tests.benchmarks.eval_quality import known_signals, speech_like

    signals = dict(known_signals()) if seed == 0 else {}
    signals["speech_like"] = Audio(speech_like(seed=seed), 8000, "speech")
    for name, audio in signals.items():
        x = preprocess(audio.samples, audio.sample_rate, PARAMS)
        q, _ = assess(audio, x, PARAMS.sample_rate)
        assert not q.ok and q.reason in ("silence", "no_heart_sounds", "noise"), (name, q)


def test_real_heart_recordings_pass_the_gate_whatever_their_label(samples_dir, sample_labels):
    # abnormal and normal shipped samples alike: the gate measures the recording, not the heart
    for path in sorted(samples_dir.glob("*.flac")):
        audio = read_audio(path)
        q, hr = assess(audio, preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate)
        assert q.ok and q.reason is None and hr.bpm is not None, (path.name, sample_labels[path.stem], q)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("jitter", [0.2, 0.35])
def test_an_irregular_heart_passes_the_gate(seed, jitter):
    """Beat-to-beat intervals varying by up to 20% (35%), S1-S2 steady at 0.32 s: the rhythm is weak (the
    S1/S2 probabilities repeat at 0.13-0.26), the heart sounds are clear, so the recording can be assessed.
    At 35% the decoder, which assumes one cycle length, puts extra cycles into the long pauses and the
    share of decoded sounds that stand out falls to about 0.7 (two of four were unsure before the heart
    sound share, 0.66-0.68 of them short and as loud as the rest, exempted them)."""
    x = _beats(75, seconds=20.0, seed=seed, jitter=jitter, systole=0.32)
    audio = Audio(x, 2000, "irregular")
    q, _ = assess(audio, preprocess(x, 2000, PARAMS), PARAMS.sample_rate)
    assert q.ok and q.reason is None, q


# abnormal PhysioNet recordings (of the half the gate was designed on) with a heart sound in nearly every
# decoded S1/S2 slot and an irregular rhythm: the weak-rhythm rule alone made each of them unsure
IRREGULAR_ABNORMAL = (
    "training-a/a0111",
    "training-d/d0052",
    "training-e/e01637",
    "training-e/e01995",
    "training-f/f0060",
)


# abnormal training-e recordings (adults with coronary disease; design half) whose cycles the segmenter,
# trained on children, fits loosely (fit 0.52-0.64, or few clear seconds), with a heart sound in nearly every
# decoded slot on the waveform: unsure before the heart sound share (device/core/analysis.py, SHOWN_SHARE)
LOOSE_ABNORMAL = (
    "training-e/e00176",
    "training-e/e00388",
    "training-e/e00475",
    "training-e/e01205",
    "training-e/e01684",
    "training-e/e01732",
    "training-e/e01787",
)


def test_real_irregular_abnormal_recordings_are_not_unsure(data_dir):
    for name in IRREGULAR_ABNORMAL + LOOSE_ABNORMAL:
        audio = read_audio(data_dir / "physionet2016" / f"{name}.flac")
        q, _ = assess(audio, preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate)
        assert q.ok, (name, q)


def test_voiced_sound_is_told_from_heart_sounds(samples_dir):
    from tests.benchmarks.eval_quality import speech_like

    for seed in range(4):
        speech = preprocess(speech_like(seed=seed), 8000, PARAMS)
        assert pitched_share(speech, PARAMS.sample_rate) >= MAX_PITCHED_SHARE
    for path in sorted(samples_dir.glob("*.flac")):
        audio = read_audio(path)
        x = preprocess(audio.samples, audio.sample_rate, PARAMS)
        assert pitched_share(x, PARAMS.sample_rate) < 0.5 * MAX_PITCHED_SHARE, path.name


def _voicing_at_once(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pitched_share's per-frame power and voicing as computed before session 16: all frames at once."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 80)[::40][: (len(x) - 80) // 40]
    frames = frames - frames.mean(axis=1, keepdims=True)
    power = (frames**2).mean(axis=1)
    spectra = np.fft.rfft(frames, 160, axis=1)
    ac = np.fft.irfft((spectra.real**2 + spectra.imag**2).astype(np.complex128), 160, axis=1)[:, :27]
    ac = ac / np.maximum(ac[:, :1], 1e-20) * (80 / (80 - np.arange(27)))
    band = ac[:, 5:27]
    is_peak = (band[:, 1:-1] >= band[:, :-2]) & (band[:, 1:-1] > band[:, 2:])
    best = np.where(is_peak, band[:, 1:-1], -1.0).max(axis=1)
    return power, (best >= 0.5) & (ac[:, 1:26].min(axis=1) < 0)


@pytest.mark.parametrize("chunk", [1, 7, 256, 100_000])
def test_the_voicing_of_each_frame_does_not_depend_on_how_many_are_computed_together(samples_dir, monkeypatch, chunk):
    """frame_voicing works PITCH_CHUNK frames at a time; every frame's power and voicing are those of all
    frames at once (as before session 16), bit for bit, whatever the chunk."""
    from device.core import analysis
    from tests.benchmarks.eval_quality import speech_like

    monkeypatch.setattr(analysis, "PITCH_CHUNK", chunk)
    signals = [preprocess(speech_like(seed=0), 8000, PARAMS)]
    signals += [
        preprocess(a.samples, a.sample_rate, PARAMS) for a in map(read_audio, sorted(samples_dir.glob("*.flac")))
    ]
    for x in signals:
        power, voiced = analysis.frame_voicing(x, PARAMS.sample_rate)
        expected_power, expected_voiced = _voicing_at_once(x)
        assert np.array_equal(power, expected_power) and np.array_equal(voiced, expected_voiced)
    assert analysis.frame_voicing(signals[0], PARAMS.sample_rate)[1].mean() > 0.3  # speech: mostly voiced


def test_unsure_does_not_follow_disease_on_physionet(data_dir):
    """Every 4th PhysioNet recording through the gate: abnormal recordings may be unsure a little more
    often than normal ones (more of them are noisy), not several times as often. The weak-rhythm rule
    alone gave 11.8% against 2.7% on all 2,750."""
    from converter.datasets import load_physionet2016

    unsure: dict[str, list[bool]] = {"normal": [], "abnormal": []}
    for r in load_physionet2016(data_dir)[::4]:
        audio = read_audio(r.path)
        q, _ = assess(audio, preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate)
        unsure[str(r.label)].append(not q.ok)
    normal, abnormal = (float(np.mean(unsure[k])) for k in ("normal", "abnormal"))
    counts = {k: len(v) for k, v in unsure.items()}
    print(f"\nunsure: normal {normal:.1%} of {counts['normal']}, abnormal {abnormal:.1%} of {counts['abnormal']}")
    assert len(unsure["abnormal"]) > 100
    assert abnormal <= 0.07 and abnormal - normal <= 0.05


def test_heart_sounds_stand_out_and_noise_does_not():
    from device.core import segment

    beats = preprocess(_beats(70, seconds=15.0, jitter=0.2), 2000, PARAMS)
    assert sound_standout(beats, PARAMS.sample_rate, segment.segment(beats)) >= 0.9
    noise = preprocess(np.random.default_rng(3).standard_normal(30000).astype(np.float32), 2000, PARAMS)
    assert sound_standout(noise, PARAMS.sample_rate, segment.segment(noise)) < 0.5 * STANDOUT_SHARE


def test_heart_sounds_are_short_and_alike_and_bursts_and_knocks_are_not():
    """The heart sound share: nearly all of a synthetic heartbeat's decoded sounds; few where the decoded
    sounds land on the edges of 0.5 s bursts of noise (rubbing, breath) or on a few knocks in near
    silence, which the standout share alone can count as heart sounds."""
    from device.core import segment

    beats = preprocess(_beats(70, seconds=15.0, jitter=0.2), 2000, PARAMS)
    assert heart_sound_share(beats, PARAMS.sample_rate, segment.segment(beats)) >= 0.9
    rng = np.random.default_rng(4)
    x = 0.01 * rng.standard_normal(30000)
    for start in range(1000, 29000, 1700):  # 0.5 s of noise every 0.85 s
        x[start : start + 1000] += rng.standard_normal(1000) * np.hanning(1000) ** 0.2
    bursts = preprocess(x.astype(np.float32), 2000, PARAMS)
    assert heart_sound_share(bursts, PARAMS.sample_rate, segment.segment(bursts)) < 0.5 * SHOWN_SHARE
    # 30 ms knocks every 0.3-0.9 s in near silence, their amplitudes spread over 1000x (standout 0.66)
    rng = np.random.default_rng(0)
    x = 0.002 * rng.standard_normal(30000)
    start = 500
    while start < 29500:
        x[start : start + 60] += 10 ** rng.uniform(-1.5, 1.5) * np.hanning(60) * rng.standard_normal(60)
        start += int(rng.uniform(0.3, 0.9) * 2000)
    knocks = preprocess(x.astype(np.float32), 2000, PARAMS)
    assert heart_sound_share(knocks, PARAMS.sample_rate, segment.segment(knocks)) < 0.5 * SHOWN_SHARE


def test_pascal_artifacts_are_unsure(data_dir):
    """PASCAL set A's 40 artifact recordings (all of them were seen when the gate was set): at least 80%
    unsure (33 by the gate alone and 34, 85%, through the pipeline when the heart sound share was added,
    as before it)."""
    from converter.datasets import load_pascal2011

    artifacts = [r for r in load_pascal2011(data_dir) if r.subset == "set_a" and r.label == "artifact"]
    unsure = 0
    for r in artifacts:
        audio = read_audio(r.path)
        q, _ = assess(audio, preprocess(audio.samples, audio.sample_rate, PARAMS), PARAMS.sample_rate)
        unsure += not q.ok
    assert len(artifacts) == 40 and unsure >= 32, unsure
