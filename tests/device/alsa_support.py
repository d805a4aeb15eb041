"""A real PortAudio input without a microphone: an ALSA PCM of ``type file`` that reads a raw recording.

The test writes ``$HOME/.asoundrc`` in a folder of its own and runs the capturing process with that
HOME. ALSA's ``file`` plugin over the ``null`` PCM hands PortAudio the bytes of ``infile`` as captured
audio (and writes what was captured to ``file``). The ``null`` PCM has no clock, so capture runs as fast
as it is read, which keeps the tests quick; the samples are exactly those of the recording.

ALSA's rate plugin cannot go below 4 kHz, so captures use 4 kHz: the 2 kHz bundled recordings are
resampled by exactly 2 (polyphase) into the raw file, and the same 16-bit samples are kept as a WAV for
comparison with `steth classify`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

REPO = Path(__file__).resolve().parents[2]
CAPTURE_RATE = 4000


def pcm_16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")


def raw_recording(source: Path, folder: Path, repeat: int = 1) -> tuple[Path, Path, np.ndarray]:
    """(raw S16_LE file, WAV of the same samples, the samples) of ``source`` at CAPTURE_RATE."""
    x, rate = sf.read(str(source), dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    y = signal.resample_poly(x.astype(np.float64), CAPTURE_RATE // 1000, rate // 1000) if rate != CAPTURE_RATE else x
    samples = np.tile(pcm_16(np.asarray(y)), repeat)
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"{source.stem}.raw"
    samples.tofile(raw)
    wav = folder / f"{source.stem}-{CAPTURE_RATE}.wav"
    sf.write(str(wav), samples, CAPTURE_RATE, subtype="PCM_16")
    return raw, wav, samples


def alsa_home(folder: Path, devices: dict[str, Path]) -> Path:
    """A HOME whose .asoundrc defines one capture PCM per name, each reading its raw file."""
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    blocks = []
    for name, infile in devices.items():
        blocks.append(
            f"pcm.{name} {{\n"
            "    type file\n"
            '    slave.pcm "null"\n'
            f'    file "{folder / (name + ".captured")}"\n'
            f'    infile "{infile}"\n'
            '    format "raw"\n'
            "}\n"
        )
    (home / ".asoundrc").write_text("".join(blocks))
    return home


def alsa_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "ALSA_CONFIG_PATH")}
    env["HOME"] = str(home)
    return env


def run_python(code: str, home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` with the test's ALSA configuration."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=alsa_env(home),
        timeout=timeout,
        check=False,
    )
