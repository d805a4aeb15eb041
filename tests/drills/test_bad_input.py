"""Bad input, tried systematically: whatever arrives, the answer is a valid result or one of our own
errors (device.core.errors.StethError) with a message, and at ingest a dead letter, never a crash.

Targets: the audio reader, the signal pipeline and classifier, the message validator, the ingest
handlers. Each example is counted per target (artifacts/drills/bad-input.json, quoted in RELIABILITY.md).
The light form runs a few hundred examples per target; the full form (``-m "drill and full"``) thousands.
"""

from __future__ import annotations

import copy
import io
import json
import uuid
from collections import Counter
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.core import contract
from device.core.audio_io import Audio, read_audio
from device.core.errors import ContractError, EmptyAudioError, InvalidAudioError, StethError
from tests.conftest import SAMPLES

pytestmark = pytest.mark.drill

TRIED: Counter[str] = Counter()
LIGHT = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
FULL = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))

REAL_FILES = [p.read_bytes() for p in sorted(SAMPLES.glob("*.flac"))[:2]]


def _wav(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


REAL_FILES.append(_wav(read_audio(sorted(SAMPLES.glob("*.flac"))[0]).samples[:8000], 2000, "PCM_16"))


@pytest.fixture(scope="module", autouse=True)
def _report(record_figures, request):
    yield
    expr = request.config.option.markexpr or ""
    full = "full" in expr and "not full" not in expr
    record_figures("bad-input-full" if full else "bad-input", dict(TRIED))


@pytest.fixture(scope="module")
def classifier():
    from device.core.inference import available_models, load_model

    if "screening" not in available_models():
        pytest.skip("no shipped screening model in device/models")
    return load_model()


# -- strategies ------------------------------------------------------------------------------------------------


def mutated(data: bytes, draw: Any) -> bytes:
    """A real file with bytes flipped, cut short, or junk spliced in."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "header"]))
        if not out:
            break
        if kind == "flip":
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            out = out[: draw(st.integers(0, len(out)))]
        elif kind == "splice":
            i = draw(st.integers(0, len(out)))
            out[i:i] = draw(st.binary(max_size=64))
        else:  # the header is where the sizes, rates and channel counts are
            i = draw(st.integers(0, min(80, len(out) - 1)))
            out[i] = draw(st.integers(0, 255))
    return bytes(out)


EXTREMES = st.sampled_from([0.0, 1.0, -1.0, 1e-38, -1e38, 1e38, np.nan, np.inf, -np.inf, 3.4e38])


@st.composite
def synthetic_audio(draw: Any) -> tuple[np.ndarray, int]:
    """Samples of random length, rate and channel count, some non-finite or huge."""
    rate = draw(st.sampled_from([1, 8, 100, 500, 1000, 2000, 4000, 8000, 22050, 44100, 96000, 192000]))
    channels = draw(st.integers(1, 4))
    n = draw(st.sampled_from([0, 1, 2, 10, 100, 1000, rate, rate * 3, rate * 6, rate * 12]))
    n = min(n, 400_000)
    kind = draw(st.sampled_from(["noise", "silence", "constant", "extreme", "sparse-nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        x = rng.normal(0, draw(st.sampled_from([1e-6, 0.1, 1.0, 50.0])), (n, channels))
    elif kind == "silence":
        x = np.zeros((n, channels))
    elif kind == "constant":
        x = np.full((n, channels), draw(st.floats(-2, 2)))
    elif kind == "extreme":
        x = np.full((n, channels), draw(EXTREMES))
    else:
        x = rng.normal(0, 0.3, (n, channels))
        if n:
            x[rng.integers(0, n, size=max(1, n // 100)), 0] = draw(EXTREMES)
    return x.astype(np.float32), rate


def _outcome(target: str, call: Any) -> Any:
    """Run ``call``; our own error is a correct answer, anything else escapes and fails the test."""
    TRIED[target] += 1
    try:
        value = call()
    except StethError as exc:
        assert exc.message, f"{type(exc).__name__} without a message"
        TRIED[f"{target}: refused ({type(exc).__name__})"] += 1
        return None
    TRIED[f"{target}: accepted"] += 1
    return value


def _check_analysis(a: Any) -> None:
    assert a.label in contract.SCREENING_LABELS
    assert all(0.0 <= p <= 1.0 for p in a.probabilities.values()), a.probabilities
    assert abs(sum(a.probabilities.values()) - 1.0) < 1e-3
    if a.heart_rate_bpm is not None:
        assert np.isfinite(a.heart_rate_bpm)
    contract.validate("result", a.to_result_message("drill-pi"))


# -- the audio reader and the pipeline --------------------------------------------------------------------------


def _reader_and_pipeline(classifier: Any, data: bytes) -> None:
    audio = _outcome("audio reader (random or mutated bytes)", lambda: read_audio(data, name="drill"))
    if audio is not None:
        assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
        assert np.all(np.isfinite(audio.samples)) and audio.sample_rate > 0
        a = _outcome("pipeline + classifier (decoded files)", lambda: classifier.analyse(audio))
        if a is not None:
            _check_analysis(a)


@LIGHT
@given(data=st.data())
def test_the_reader_and_pipeline_survive_random_and_mutated_files(classifier, data):
    raw = data.draw(st.binary(max_size=4096) | st.sampled_from(REAL_FILES).map(lambda f: mutated(f, data.draw)))
    _reader_and_pipeline(classifier, raw)


@pytest.mark.full
@FULL
@given(data=st.data())
def test_the_reader_and_pipeline_survive_random_and_mutated_files_at_length(classifier, data):
    raw = data.draw(st.binary(max_size=65536) | st.sampled_from(REAL_FILES).map(lambda f: mutated(f, data.draw)))
    _reader_and_pipeline(classifier, raw)


def _synthetic(classifier: Any, samples: np.ndarray, rate: int, subtype: str) -> None:
    try:
        buf = io.BytesIO()
        sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    except (sf.LibsndfileError, ValueError, RuntimeError):
        TRIED["synthetic files libsndfile would not write"] += 1
        return
    _reader_and_pipeline(classifier, buf.getvalue())
    # the pipeline straight from samples (a live capture never goes through a file)
    mono = samples.mean(axis=1) if samples.size else np.zeros(0, np.float32)
    audio = Audio(samples=mono.astype(np.float32), sample_rate=rate, source="drill capture")
    a = _outcome("pipeline + classifier (raw samples, NaN/inf included)", lambda: classifier.analyse(audio))
    if a is not None:
        _check_analysis(a)


@LIGHT
@given(sig=synthetic_audio(), subtype=st.sampled_from(["PCM_16", "PCM_24", "FLOAT", "DOUBLE", "PCM_U8"]))
def test_the_pipeline_answers_any_length_rate_channels_and_values(classifier, sig, subtype):
    _synthetic(classifier, sig[0], sig[1], subtype)


@pytest.mark.full
@FULL
@given(sig=synthetic_audio(), subtype=st.sampled_from(["PCM_16", "PCM_24", "FLOAT", "DOUBLE", "PCM_U8"]))
def test_the_pipeline_answers_any_length_rate_channels_and_values_at_length(classifier, sig, subtype):
    _synthetic(classifier, sig[0], sig[1], subtype)


# -- the message validator ----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
HOSTILE_PAYLOADS = [
    b"[" * 100_000,  # deeper than Python's recursion limit
    b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    b"\xff\xfe\x00garbage",
    b"NaN",
    b'{"schema_version": 1e400}',
    b"",
    b"\x00" * 1000,
]


def _payload_variants(message: dict[str, Any], draw: Any) -> bytes:
    kind = draw(st.sampled_from(["json", "mutated", "huge-field", "nan", "raw"]))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "raw":
        return draw(st.binary(max_size=512) | st.sampled_from(HOSTILE_PAYLOADS))
    m = copy.deepcopy(message)
    key = draw(st.sampled_from(sorted(m)))
    if kind == "mutated":
        if draw(st.booleans()):
            m.pop(key)
        else:
            m[key] = draw(JSON)
    elif kind == "huge-field":
        m[key] = "x" * draw(st.sampled_from([10_000, 300_000]))
    else:  # NaN and infinity are not JSON, but Python's json module writes and reads them
        m[key] = draw(st.sampled_from([float("nan"), float("inf")]))
    return json.dumps(m).encode()


def _validator(payload: bytes) -> None:
    message = _outcome("message validator (contract.decode)", lambda: contract.decode("result", payload))
    if message is not None:
        assert contract.errors("result", message) == []
        json.dumps(message, allow_nan=False)  # what it accepts is real JSON: no NaN, no infinity


def test_hostile_payloads_are_refused_by_the_validator():
    for payload in HOSTILE_PAYLOADS:
        with pytest.raises(ContractError):
            contract.decode("result", payload)
        TRIED["message validator (contract.decode)"] += 1
    nan = json.dumps({**contract.EXAMPLE_RESULT, "heart_rate_bpm": float("nan")})
    with pytest.raises(ContractError, match="NaN"):
        contract.decode("result", nan)


@LIGHT
@given(data=st.data())
def test_the_validator_answers_random_and_mutated_messages(data):
    _validator(_payload_variants(contract.EXAMPLE_RESULT, data.draw))


@pytest.mark.full
@FULL
@given(data=st.data())
def test_the_validator_answers_random_and_mutated_messages_at_length(data):
    _validator(_payload_variants(contract.EXAMPLE_RESULT, data.draw))


# -- the ingest handlers (real database) -------------------------------------------------------------------------

DEVICE = "clinic-a-pi-01"
TOPICS = st.sampled_from(
    [
        contract.results_topic(DEVICE),
        contract.status_topic(DEVICE),
        contract.audio_topic(DEVICE, str(uuid.uuid4())),
        contract.results_topic("clinic-b-pi-01"),
        f"{contract.TOPIC_ROOT}/{DEVICE}/audio/not-a-uuid",
        f"{contract.TOPIC_ROOT}/{DEVICE}/elsewhere",
        "steth/v1/devices/../../etc/results",
        "",
    ]
) | st.text(max_size=80)


def _ingest(ingestor: Any, topic: str, payload: bytes) -> None:
    from dashboard.clinic.models import DeadLetter

    letters = DeadLetter.objects.count()
    outcome = _outcome("ingest handler (Ingestor.handle)", lambda: ingestor.handle(topic, payload))
    assert isinstance(outcome, str) and outcome
    TRIED[f"ingest outcome: {outcome}"] += 1
    if outcome.startswith("dead_"):
        assert DeadLetter.objects.count() >= letters  # kept, with its reason (or its counter bumped)


@pytest.fixture
def ingestor(settings, tmp_path, device_a, clinic_b):
    from dashboard.clinic.models import Device
    from dashboard.ingest.handlers import Ingestor

    Device.objects.create(device_id="clinic-b-pi-01", clinic=clinic_b)
    settings.MEDIA_ROOT = tmp_path
    return Ingestor(client_id="drill", auto_register=False, max_audio_bytes=contract.MAX_AUDIO_BYTES)


def _valid(device_id: str = DEVICE) -> dict[str, Any]:
    return {**contract.EXAMPLE_RESULT, "result_id": str(uuid.uuid4()), "device_id": device_id}


def _ingest_drawn(ingestor, data) -> None:
    """One drawn message: half the time a valid result bent out of shape, else hostile bytes or a real file."""
    topic = data.draw(TOPICS)
    if data.draw(st.booleans()):
        payload = _payload_variants(_valid(), data.draw)
    else:
        payload = data.draw(st.sampled_from([*HOSTILE_PAYLOADS, *REAL_FILES]) | st.binary(max_size=256))
    _ingest(ingestor, topic, payload)


@pytest.mark.django_db
@LIGHT
@given(data=st.data())
def test_ingest_answers_every_message_with_a_row_or_a_dead_letter(ingestor, data):
    _ingest_drawn(ingestor, data)


@pytest.mark.full
@pytest.mark.django_db
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_ingest_answers_every_message_with_a_row_or_a_dead_letter_at_length(ingestor, data):
    _ingest_drawn(ingestor, data)


@pytest.mark.django_db
def test_a_hostile_batch_is_stored_or_dead_lettered_message_by_message(ingestor):
    from dashboard.clinic.models import DeadLetter, Result

    good = [_valid() for _ in range(3)]
    batch = [(contract.results_topic(DEVICE), json.dumps(m).encode()) for m in good]
    batch += [(contract.results_topic(DEVICE), p) for p in HOSTILE_PAYLOADS]
    outcomes = ingestor.handle_batch(batch)
    TRIED["ingest handler (Ingestor.handle_batch)"] += len(batch)
    assert outcomes[:3] == ["result_created"] * 3
    assert all(o.startswith("dead_") for o in outcomes[3:]), outcomes
    assert Result.objects.count() == 3 and DeadLetter.objects.count() >= 1


def test_what_the_pipeline_cannot_use_is_refused_with_a_reason(classifier):
    """Found by the drill: a 1 Hz file gave a result the contract refuses, and empty samples crashed."""
    noise = np.random.default_rng(1).normal(0, 0.1, 4000 * 12).astype(np.float32)
    with pytest.raises(InvalidAudioError, match="sample rate 1 Hz"):
        classifier.analyse(Audio(samples=noise[:20], sample_rate=1, source="x"))
    with pytest.raises(EmptyAudioError):
        classifier.analyse(Audio(samples=np.zeros(0, np.float32), sample_rate=4000, source="x"))
    with pytest.raises(InvalidAudioError, match="beyond full scale"):  # found by the full form
        classifier.analyse(Audio(samples=np.full(3000, 3.4e38, np.float32), sample_rate=500, source="x"))
    noise[100] = np.nan
    with pytest.raises(InvalidAudioError, match="NaN"):
        classifier.analyse(Audio(samples=noise, sample_rate=4000, source="x"))


def test_a_header_claiming_billions_of_frames_allocates_nothing_of_the_kind():
    """Found by the full form: 42 bytes of FLAC header claiming 8.6 billion frames made read_audio ask
    for 32 GiB (a MemoryError, or the OOM killer on a Pi, from one tiny upload)."""
    lying = b'fLaC\x00\x00\x00"' + bytes(12) + b"\x10r" + bytes(20)
    with pytest.raises(StethError):
        read_audio(lying, name="lying header")
