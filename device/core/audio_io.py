"""Reading recordings: the one seam between files and the signal pipeline.

Any WAV or FLAC libsndfile can decode (16/24/32-bit integer or float, any rate, any channel count) comes
out as mono float32 in [-1, 1] with its sample rate. Nothing here resamples or filters: that is
``device.core.features``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from device.core.errors import EmptyAudioError, InvalidAudioError, UnreadableAudioError

AUDIO_SUFFIXES = (".wav", ".flac")
CONVERT_HINT = "give a WAV or FLAC recording; convert other formats with e.g. `ffmpeg -i in.mp3 out.wav`"


@dataclass(frozen=True)
class Audio:
    """Decoded mono samples and where they came from."""

    samples: np.ndarray  # float32, 1-D
    sample_rate: int
    source: str
    channels: int = 1
    subtype: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def read_audio(source: str | Path | bytes | BinaryIO, name: str | None = None) -> Audio:
    """Decode a WAV/FLAC file (path, bytes or file object) to mono float32.

    Raises UnreadableAudioError, EmptyAudioError or InvalidAudioError with a message naming the source.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<upload>")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise UnreadableAudioError(f"{label}: no such file", "check the path")
        if path.is_dir():
            raise UnreadableAudioError(f"{label}: is a folder, not a recording", "name a .wav or .flac file")
        stream: str | BinaryIO = str(path)
    elif isinstance(source, bytes):
        stream = io.BytesIO(source)
    else:
        stream = source
    try:
        with sf.SoundFile(stream) as f:
            channels, rate, subtype = f.channels, f.samplerate, f.subtype
            data = _read_blocks(f)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise UnreadableAudioError(f"{label}: not a readable WAV or FLAC file ({exc})", CONVERT_HINT) from exc
    if rate <= 0:
        raise InvalidAudioError(f"{label}: impossible sample rate {rate} Hz", "re-export the recording")
    if data.shape[0] == 0:
        raise EmptyAudioError(f"{label}: the file holds no samples", "record again; the capture was empty")
    mono = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise InvalidAudioError(
            f"{label}: contains NaN or infinite samples", "the file is corrupt; re-export or record again"
        )
    return Audio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        sample_rate=int(rate),
        source=label,
        channels=int(channels),
        subtype=str(subtype),
    )


BLOCK_FRAMES = 1 << 20


def _read_blocks(f: sf.SoundFile) -> np.ndarray:
    """Every frame the file really holds, read a block at a time.

    Reading "all" at once allocates what the header claims, and a header can lie: a 42-byte FLAC
    claiming 8 billion frames asked for 32 GiB (found by the bad-input drill).
    """
    chunks = []
    while True:
        block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        chunks.append(block)
    return np.concatenate(chunks) if chunks else np.zeros((0, f.channels), dtype=np.float32)


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """(sample rate, channels, duration in s) from the header only; raises UnreadableAudioError."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise UnreadableAudioError(f"{path}: not a readable WAV or FLAC file ({exc})", CONVERT_HINT) from exc
    return int(info.samplerate), int(info.channels), float(info.frames) / max(int(info.samplerate), 1)


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """Lossless 16-bit FLAC bytes of float samples in [-1, 1] (for audio upload)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
