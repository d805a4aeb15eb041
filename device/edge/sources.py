"""Audio sources behind one interface: the stethoscope (PortAudio via sounddevice) and replayed files.

Both deliver ``Block``s of mono float32 samples; ``fresh`` marks the first block of a continuous piece
(the start, a new replayed file, or the first block after the device came back), so a consumer never
analyses a window that spans a gap. ``record(seconds)`` builds a bedside recording from either.

The live source reads in a thread of its own with back-pressure (a bounded queue), so a slow consumer
never silently loses audio (PortAudio reports the overflow, which is logged) and an untimed device, such
as the ALSA file PCM the tests use, is read exactly once. No audio for ``stall_timeout_s`` (a USB
stethoscope pulled out usually just stops delivering) or a PortAudio error closes the stream; with
``reconnect`` the source then reopens the device by name with bounded, jittered backoff, rescanning
the devices each time so a re-plugged stethoscope is found again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf

from device.core.audio_io import AUDIO_SUFFIXES, CONVERT_HINT, Audio, audio_info, read_audio
from device.core.errors import InvalidAudioError, StethError, UnreadableAudioError

log = logging.getLogger(__name__)


class CaptureError(StethError):
    """The audio input cannot be opened or stopped delivering audio."""


class EndOfSource(Exception):  # noqa: N818 - the end of a replay is not an error
    """A replay source has delivered everything (not an error)."""


@dataclass(frozen=True)
class Block:
    samples: np.ndarray  # float32, mono
    sample_rate: int
    fresh: bool  # the first block after a gap: what came before does not continue into it


def to_mono(data: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32, the same mix as device.core.audio_io.read_audio."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float32)


class AudioSource(ABC):
    """A stream of mono audio. Use as a context manager, or open() ... close()."""

    name: str = "audio"
    live: bool = True  # a live input must not be interrupted during a recording; a replay may end

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def read(self) -> Block:
        """The next block; raises EndOfSource (replay done) or CaptureError."""

    def __enter__(self) -> AudioSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, seconds: float, on_progress: Callable[[float], None] | None = None) -> Audio:
        """``seconds`` of uninterrupted audio (shorter only when a replay runs out); ``on_progress`` is
        told the seconds recorded so far after each block (the bedside countdown)."""
        chunks: list[np.ndarray] = []
        rate = 0
        have = 0
        wanted = 0
        while not rate or have < wanted:
            try:
                block = self.read()
            except EndOfSource:
                break
            if rate and (block.fresh or block.sample_rate != rate):
                if self.live:
                    raise CaptureError(
                        f"the input {self.name} was interrupted during the recording",
                        "check the stethoscope's cable and record again",
                    )
                break  # a replayed file ended: the recording is that file
            rate = block.sample_rate
            wanted = round(seconds * rate)
            chunks.append(block.samples)
            have += len(block.samples)
            if on_progress is not None:
                on_progress(min(have, wanted) / rate)
        if not chunks:
            raise CaptureError(f"{self.name} delivered no audio", "check the input and record again")
        samples = np.concatenate(chunks)[:wanted]
        if len(samples) < wanted:
            log.info("%s ended after %.2f s of the %.2f s asked for", self.name, len(samples) / rate, seconds)
        return Audio(samples=np.ascontiguousarray(samples), sample_rate=rate, source=self.name)


# -- the stethoscope -----------------------------------------------------------------------------------


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library is missing
        raise CaptureError(
            f"PortAudio is not available ({exc})", "install it: sudo apt-get install libportaudio2"
        ) from exc
    return sounddevice


def describe_inputs(devices: Sequence[dict[str, Any]]) -> str:
    inputs = [d for d in devices if d.get("max_input_channels", 0) > 0]
    if not inputs:
        return "no audio inputs at all (is the stethoscope plugged in? is the user in the 'audio' group?)"
    return "inputs present: " + "; ".join(
        f"[{d['index']}] {d['name']!r} ({d['max_input_channels']} ch, {d['default_samplerate']:.0f} Hz)" for d in inputs
    )


def find_input(name: str | None, devices: Sequence[dict[str, Any]], default: int | None = None) -> int:
    """The index of the input device whose name contains ``name`` (case-insensitive); CaptureError if
    there is none or more than one (an exact name match wins)."""
    inputs = [d for d in devices if d.get("max_input_channels", 0) > 0]
    if name is None:
        if default is not None and default >= 0 and any(d["index"] == default for d in inputs):
            return default
        raise CaptureError("there is no default audio input", f"set audio.input_device; {describe_inputs(devices)}")
    wanted = name.casefold()
    exact = [d for d in inputs if d["name"].casefold() == wanted]
    matches = exact or [d for d in inputs if wanted in d["name"].casefold()]
    if len(matches) == 1:
        return int(matches[0]["index"])
    if not matches:
        raise CaptureError(
            f"audio input {name!r} not found",
            f"plug the stethoscope in or set audio.input_device to one of these (part of the name is enough); "
            f"{describe_inputs(devices)}",
        )
    raise CaptureError(
        f"audio input {name!r} matches {len(matches)} devices: " + ", ".join(repr(d["name"]) for d in matches),
        "give more of the name in audio.input_device",
    )


def list_devices() -> list[dict[str, Any]]:
    sd = _sounddevice()
    return [dict(d) for d in sd.query_devices()]


class SoundDeviceSource(AudioSource):
    """The stethoscope, through PortAudio, chosen by name.

    Captured as 16-bit integers, what USB stethoscopes and sound cards deliver natively (no conversion
    plugin between us and the device), scaled exactly as soundfile reads a 16-bit WAV: a recording
    captured here and the same samples saved as a WAV give the same analysis.
    """

    def __init__(
        self,
        device: str | None,
        sample_rate: int,
        *,
        channels: int = 1,
        stall_timeout_s: float = 5.0,
        block_s: float = 0.1,
        reconnect: bool = False,
        stop: threading.Event | None = None,
        backoff: tuple[float, float] = (0.5, 10.0),
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.device = device
        self.on_wait = on_wait  # called while waiting for the device: waiting is progress, not a hang
        self.name = repr(device) if device else "the default input"
        self.sample_rate = sample_rate
        self.channels = channels
        self.stall_timeout_s = stall_timeout_s
        self.block_frames = max(1, round(block_s * sample_rate))
        self.reconnect = reconnect
        self.stop = stop or threading.Event()
        self.backoff = backoff
        self.overflows = 0
        self.reconnects = 0
        self._stream: Any = None
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self._queue: queue.Queue[np.ndarray | BaseException] = queue.Queue(maxsize=max(10, round(30 / block_s)))
        self._fresh = True

    def _open_stream(self, rescan: bool) -> None:
        sd = _sounddevice()
        if rescan:
            # PortAudio lists devices once, at initialisation: re-initialise to see a re-plugged device.
            sd._terminate()
            sd._initialize()
        devices = [dict(d) for d in sd.query_devices()]
        index = find_input(self.device, devices, default=sd.default.device[0])
        try:
            sd.check_input_settings(device=index, channels=self.channels, samplerate=self.sample_rate, dtype="int16")
        except sd.PortAudioError as exc:
            info = devices[index]
            raise CaptureError(
                f"input {info['name']!r} cannot capture {self.channels} channel(s) at {self.sample_rate} Hz: {exc}",
                f"set audio.sample_rate to a rate it supports (its default is {info['default_samplerate']:.0f} Hz) "
                f"and audio.channels to at most {info['max_input_channels']}",
            ) from exc
        try:
            stream = sd.InputStream(
                device=index,
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype="int16",
                blocksize=self.block_frames,
            )
            stream.start()
        except sd.PortAudioError as exc:
            raise CaptureError(
                f"cannot open input {devices[index]['name']!r}: {exc}",
                "is another program using it (the device service in continuous mode)? is the user in 'audio'?",
            ) from exc
        self._stream = stream
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        self._reader_stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="audio-reader", daemon=True)
        self._reader.start()
        log.info("capturing from %r at %d Hz", devices[index]["name"], self.sample_rate)

    def _read_loop(self) -> None:
        stream, out, stop = self._stream, self._queue, self._reader_stop
        try:
            while not stop.is_set():
                data, overflowed = stream.read(self.block_frames)
                if overflowed:
                    self.overflows += 1
                    log.warning("audio input overflow: the analysis fell behind and some audio was lost")
                block = to_mono(np.asarray(data, dtype=np.float32) / 32768.0)
                while not stop.is_set():
                    try:
                        out.put(block, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except Exception as exc:  # handed to the consumer, which decides whether to reconnect
            with contextlib.suppress(queue.Full):
                out.put_nowait(exc)

    def open(self) -> None:
        self._fresh = True
        self._open_stream(rescan=False)

    def _teardown(self) -> None:
        self._reader_stop.set()
        reader, stream = self._reader, self._stream
        self._reader, self._stream = None, None
        if reader is not None:
            reader.join(timeout=1.0)
        if stream is None:
            return
        if reader is not None and reader.is_alive():
            with contextlib.suppress(Exception):
                stream.abort()
            reader.join(timeout=2.0)
            if reader.is_alive():
                # A read stuck inside the driver: closing the stream under it could crash the process.
                log.error("the audio reader is stuck in the driver; abandoning that stream")
                return
        with contextlib.suppress(Exception):
            stream.close()

    def close(self) -> None:
        self._teardown()

    def read(self) -> Block:
        while True:
            if self._stream is None:
                self._reopen()
            try:
                item = self._queue.get(timeout=self.stall_timeout_s)
            except queue.Empty:
                item = CaptureError(f"no audio from {self.name} for {self.stall_timeout_s:g} s")
            if isinstance(item, np.ndarray):
                fresh, self._fresh = self._fresh, False
                return Block(item, self.sample_rate, fresh)
            self._teardown()
            problem = item if isinstance(item, CaptureError) else CaptureError(f"{self.name} failed: {item}")
            if not self.reconnect:
                raise CaptureError(problem.message, "check the stethoscope's cable and try again") from item
            log.error("audio input lost: %s; reopening it", problem.message)

    def _reopen(self) -> None:
        delay = self.backoff[0]
        attempts = 0
        while not self.stop.is_set():
            attempts += 1
            if self.on_wait is not None:
                self.on_wait()
            try:
                self._open_stream(rescan=True)
            except CaptureError as exc:
                if attempts == 1 or attempts % 10 == 0:
                    log.error("audio input still unavailable (attempt %d): %s", attempts, exc)
                self.stop.wait(delay * (0.5 + 0.5 * np.random.random()))
                delay = min(self.backoff[1], delay * 2)
                continue
            self.reconnects += 1
            self._fresh = True
            log.warning("audio input %s is back after %d attempt(s)", self.name, attempts)
            return
        raise CaptureError(f"stopped while waiting for {self.name} to come back")


# -- replayed recordings -------------------------------------------------------------------------------


def recordings(path: Path) -> list[Path]:
    """The WAV/FLAC files of a folder (sorted), or the one file given."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CaptureError(f"replay path {path} does not exist", "set audio.replay_path to a file or folder")
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not found:
        raise CaptureError(f"no .wav or .flac recordings in {path}", "put recordings there or fix audio.replay_path")
    return found


def segments(path: Path, max_segment_s: float) -> Iterator[Audio]:
    """A recording, as one Audio, or, when longer than ``max_segment_s``, as consecutive segments.

    Short recordings go through read_audio exactly as ``steth classify`` does. A long one is read piece
    by piece, so memory stays bounded by the segment length whatever the file's length; the last
    segment takes the remainder (up to twice the length) so there is never a uselessly short tail.
    """
    rate, _, duration = audio_info(path)
    if duration <= max_segment_s * 1.5:
        yield read_audio(path)
        return
    per = int(max_segment_s * rate)
    try:
        with sf.SoundFile(str(path)) as f:
            total = f.frames
            count = max(1, total // per)
            for i in range(count):
                frames = per if i < count - 1 else total - i * per
                data = f.read(frames, dtype="float32", always_2d=True)
                mono = to_mono(data)
                if not np.all(np.isfinite(mono)):
                    raise InvalidAudioError(f"{path}: contains NaN or infinite samples", "re-export the recording")
                start = i * per / rate
                yield Audio(
                    samples=mono,
                    sample_rate=rate,
                    source=f"{path} [{start:.0f}-{start + len(mono) / rate:.0f} s]",
                    channels=f.channels,
                    subtype=f.subtype,
                )
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise UnreadableAudioError(f"{path}: not a readable WAV or FLAC file ({exc})", CONVERT_HINT) from exc


class ReplaySource(AudioSource):
    """Recordings from a file or folder, delivered like a live input (optionally at real-time pace)."""

    live = False

    def __init__(self, path: Path, *, realtime: bool = False, block_s: float = 0.5, loop: bool = False) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.realtime = realtime
        self.block_s = block_s
        self.loop = loop
        self._files: list[Path] = []
        self._iter: Iterator[Block] | None = None
        self._t0 = 0.0
        self._delivered_s = 0.0

    def open(self) -> None:
        self._files = recordings(self.path)
        self._iter = self._blocks()
        self._t0 = time.monotonic()
        self._delivered_s = 0.0

    def close(self) -> None:
        self._iter = None

    def _blocks(self) -> Iterator[Block]:
        while True:
            for path in self._files:
                try:
                    with sf.SoundFile(str(path)) as f:
                        rate = f.samplerate
                        fresh = True
                        for data in f.blocks(
                            blocksize=max(1, round(self.block_s * rate)), dtype="float32", always_2d=True
                        ):
                            yield Block(to_mono(data), rate, fresh)
                            fresh = False
                except (sf.LibsndfileError, RuntimeError) as exc:
                    log.error("replay: skipping %s: not a readable WAV or FLAC file (%s)", path, exc)
            if not self.loop:
                return

    def read(self) -> Block:
        if self._iter is None:
            raise CaptureError(f"replay source {self.name} is not open")
        try:
            block = next(self._iter)
        except StopIteration:
            raise EndOfSource(self.name) from None
        if self.realtime:
            self._delivered_s += len(block.samples) / block.sample_rate
            ahead = self._delivered_s - (time.monotonic() - self._t0)
            if ahead > 0:
                time.sleep(ahead)
        return block
