"""Benchmark: the device's footprint: memory over an hour of replayed audio, cold start, outbox rates.

    .venv/bin/python -m tests.benchmarks.bench_device [--hours 1] [--model screening] [--only outbox,start,peak,memory]

outbox   results/s into the SQLite outbox: one transaction per result with synchronous=FULL (what the
         device does: every result fsynced before the nurse is told it is saved), against
         synchronous=NORMAL and against batches of 100 per transaction; then results/s drained to a
         real local Mosquitto (QoS 1, deleted on PUBACK) with 1, 10 (the default) and 100 in flight.
start    `steth device run` (replay mode, one 15 s recording) from exec to READY=1 (sd_notify) and to
         the first result stored in the outbox and received by the broker: a first start, then three more,
         as shipped and with the librosa features of before (whose first start, with an empty
         NUMBA_CACHE_DIR, compiled librosa's numba functions).
peak     peak memory of one process analysing a 12 s recording, a 1-hour file whole and in the daemon's
         300 s segments, at 2 and 4 kHz, with device/core/dsp.py and with scipy.signal (before)
memory   `steth device run` in replay mode over a folder of real PhysioNet recordings adding up to
         --hours of audio (each analysed once, as fast as the daemon goes: replay is not paced), its
         resident memory (VmRSS) sampled every 0.5 s and reported against the audio analysed so far.
The broker is a Mosquitto started on a free port. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.benchmarks import support

SAMPLE = support.REPO / "device" / "samples" / "a0405.flac"


# -- outbox --------------------------------------------------------------------------------------------


def outbox_rates(tmp: Path, n: int) -> None:
    from device.edge.config import BrokerConfig
    from device.edge.outbox import Entry, Outbox
    from device.edge.publisher import Publisher

    messages = support.result_messages(3 * n, ["pi-bench"])
    rows = []

    def fresh(name: str, sync: str = "FULL") -> Outbox:
        box = Outbox(tmp / f"{name}.sqlite", tmp / f"{name}-audio", 1 << 30)
        box._db.execute(f"PRAGMA synchronous = {sync}")  # the alternative: NORMAL (no fsync per commit)
        return box

    variants = [
        ("one transaction per result, synchronous=FULL (the device)", "FULL", 1),
        ("one transaction per result, synchronous=NORMAL", "NORMAL", 1),
        ("100 results per transaction, synchronous=FULL", "FULL", 100),
    ]
    for i, (name, sync, per) in enumerate(variants):
        box = fresh(f"write{i}", sync)
        chunk = messages[i * n : (i + 1) * n]
        t0 = time.perf_counter()
        for k in range(0, len(chunk), per):
            box.add([Entry(m) for m in chunk[k : k + per]])
        dt = time.perf_counter() - t0
        box.close()
        rows.append((name, n, n / dt, 1000 * dt / n))
    support.table(["outbox write", "results", "results/s", "ms/result"], rows, "Outbox write rate (SQLite, WAL)")

    broker = support.BenchBroker(tmp / "broker").start()
    rows = []
    try:
        for inflight in (1, 10, 100):
            box = fresh(f"drain{inflight}")
            batch = support.result_messages(n, ["pi-bench"])
            for k in range(0, n, 500):
                box.add([Entry(m) for m in batch[k : k + 500]])
            # The broker's PUBACK ends a message's life here: nothing in this run sends ingest's acks.
            # The drain with end-to-end acks (an acking subscriber) is tests/device/bench_delivery.py.
            cfg = BrokerConfig(url=broker.url, reconnect_min_s=0.1, reconnect_max_s=0.5, delivery_ack="broker")
            pub = Publisher(cfg, "pi-bench", box, max_inflight=inflight, announce=False)
            while pub.state != "up":
                pub.step(0.05)
            t0 = time.perf_counter()
            done = pub.drain(300)
            dt = time.perf_counter() - t0
            pub.close()
            left = box.stats().pending_results
            box.close()
            rows.append((f"{inflight} in flight" + (" (default)" if inflight == 10 else ""), n, n / dt,
                         "all" if done and left == 0 else f"{left} left"))  # fmt: skip
    finally:
        broker.stop()
    support.table(
        ["drain to Mosquitto (QoS 1, PUBACK)", "results", "results/s", "delivered"], rows, "Outbox drain rate"
    )


# -- the daemon ----------------------------------------------------------------------------------------


def write_config(tmp: Path, broker_url: str, replay: Path, model: str) -> Path:
    path = tmp / "device.toml"
    path.write_text(
        f'device_id = "pi-bench"\nmode = "replay"\nlog_level = "INFO"\n'
        f'[broker]\nurl = "{broker_url}"\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n'
        f'[audio]\nsource = "replay"\nreplay_path = "{replay}"\ntransient_dir = "{tmp / "run"}"\n'
        f'[models]\nrun = ["{model}"]\n'
        f'[outbox]\npath = "{tmp / "state" / "outbox.sqlite"}"\n'
    )
    return path


# `steth device run` as on a Raspberry Pi, where only the [device] extra is installed: without Django the
# dashboard's commands are simply absent (device/cli.py); "librosa" also swaps in the features as they were
# computed before (through librosa: tests/device/librosa_features.py), for the before/after comparison;
# "scipy" runs the filters, resampler and peak finder through scipy.signal, as before device/core/dsp.py
# (tests/device/scipy_dsp.py).
LAUNCHER = """
import sys
variant = sys.argv.pop(1)
sys.modules["django"] = None  # not installed on the device
if "scipy" in variant:
    from tests.device.scipy_dsp import scipy_reference
    scipy_reference().__enter__()  # for the daemon's whole life
if "librosa" in variant:
    import device.core.features, device.core.inference
    from tests.device import librosa_features
    device.core.features.window_features = librosa_features.window_features
    device.core.inference.signal_features = lambda x, params, source="recording": librosa_features.window_features(
        device.core.features.analysis_windows(x, params, source), params)
from device.cli import main
sys.exit(main(sys.argv[1:]))
"""

VARIANTS = {
    "shipped": "`steth device run`, as shipped (this venv: every extra)",
    "device-only": "as shipped, `[device]` extra only (no Django), as on the Pi",
    "device-only-librosa": "`[device]` only, features through librosa (before)",
    "device-only-scipy": "`[device]` only, filters through scipy.signal (before)",
}


class Subscriber:
    """Counts result messages arriving at the broker, with the time of the first."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        from device.core import contract

        self.count = 0
        self.first: float | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(contract.ALL_RESULTS, qos=1)
        self.client.loop_start()

    def _on_message(self, *args: Any) -> None:
        self.count += 1
        if self.first is None:
            self.first = time.time()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Daemon:
    """`python -m device device run` as systemd starts it, with $NOTIFY_SOCKET to catch READY=1."""

    def __init__(self, config: Path, env: dict[str, str], variant: str = "shipped") -> None:
        import socket

        self.notify_path = config.parent / f"notify-{time.monotonic_ns()}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        self.sock.settimeout(0.05)
        self.ready: float | None = None
        self.log = config.parent / "daemon.log"
        self.t0 = time.time()
        with self.log.open("ab") as log:
            argv = [support.PYTHON, "-m", "device", "device", "run", "--config", str(config)]
            if variant != "shipped":  # the same command through a launcher (see LAUNCHER)
                argv = [support.PYTHON, "-c", LAUNCHER, variant, "device", "run", "--config", str(config)]
            self.proc = subprocess.Popen(
                argv,
                cwd=support.REPO, env={**env, "NOTIFY_SOCKET": str(self.notify_path)}, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._stop = threading.Event()
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except OSError:
                continue
            if "READY=1" in data and self.ready is None:
                self.ready = time.time()

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()
        self.notify_path.unlink(missing_ok=True)


def stored_results(outbox: Path) -> int:
    """Results the daemon has stored so far (waiting + delivered), read from its outbox."""
    if not outbox.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5) as db:
            waiting = db.execute("SELECT count(*) FROM messages WHERE kind = 'result'").fetchone()[0]
            row = db.execute("SELECT value FROM counters WHERE name = 'delivered_results'").fetchone()
            return int(waiting) + (int(row[0]) if row else 0)
    except sqlite3.Error:
        return 0


def cold_start(tmp: Path, model: str, variants: list[str], runs: int = 3) -> None:
    replay = tmp / "one"
    replay.mkdir()
    (replay / SAMPLE.name).symlink_to(SAMPLE)
    rows = []
    for variant in variants:
        numba_cache = tmp / f"numba-cache-{variant}"  # empty at the first start: what a fresh install has
        for i in range(runs + 1):
            work = tmp / f"start-{variant}-{i}"
            work.mkdir()
            broker = support.BenchBroker(work / "broker").start()
            sub = Subscriber(broker.port)
            env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache), "PYTHONDONTWRITEBYTECODE": "0",
                   "PYTHONPATH": str(support.REPO)}  # fmt: skip
            daemon = Daemon(write_config(work, broker.url, replay, model), env, variant)
            outbox = work / "state" / "outbox.sqlite"
            stored_at = None
            try:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and (stored_at is None or sub.first is None):
                    if stored_at is None and stored_results(outbox) > 0:
                        stored_at = time.time()
                    if daemon.proc.poll() is not None:
                        raise RuntimeError(f"the daemon exited:\n{daemon.log.read_text()[-3000:]}")
                    time.sleep(0.01)
            finally:
                daemon.stop()
                sub.close()
                broker.stop()
            if i == 0:
                name = f"{VARIANTS[variant]}: first start" + (", empty NUMBA_CACHE_DIR" if "librosa" in variant else "")
            else:
                name = f"{VARIANTS[variant]}: start {i + 1}"
            ready = (daemon.ready or float("nan")) - daemon.t0
            first = (stored_at or float("nan")) - daemon.t0
            delivered = (sub.first or float("nan")) - daemon.t0
            rows.append((name, ready, first, delivered, "yes" if first <= 3 else "NO"))
            print(f"  {name}: READY {ready:.2f} s, first result stored {first:.2f} s, at the broker "
                  f"{delivered:.2f} s", flush=True)  # fmt: skip
    support.table(
        ["start", "to READY=1 s", "to first result stored s", "to first result at broker s", "<= 3 s"],
        rows,
        "Cold start of `steth device run` (replay of one 15 s recording, exec to result)",
    )


def hour_of_recordings(folder: Path, seconds: float) -> tuple[int, float]:
    """Symlink real recordings (PhysioNet 2016, then the bundled samples) into ``folder`` up to ``seconds``."""
    from device.core.audio_io import AUDIO_SUFFIXES, audio_info

    data = Path(os.environ.get("STETH_DATA_DIR", support.REPO.parent / "shared" / "data")) / "physionet2016"
    sources = sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if data.is_dir() else []
    sources = sources or sorted((support.REPO / "device" / "samples").glob("*.flac"))
    total, count, k = 0.0, 0, 0
    while total < seconds:
        src = sources[k % len(sources)]
        duration = audio_info(src)[2]
        (folder / f"{count:05d}-{src.name}").symlink_to(src)
        total += duration
        count += 1
        k += 1
    return count, total


def warm_numba(cache: Path) -> None:
    """Fill a numba cache for the librosa variant as its first start would (the memory runs measure the
    steady state)."""
    code = (
        "import numpy as np; from device.core.features import FeatureParams as P; "
        "from tests.device.librosa_features import window_features; "
        "window_features(np.zeros((2, P().window_samples), dtype=np.float32), P())"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(support.REPO)}
    subprocess.run([support.PYTHON, "-c", code], cwd=support.REPO, env=env, check=True, capture_output=True)


def memory_run(tmp: Path, model: str, replay: Path, files: int, variant: str) -> dict[str, Any]:
    tmp.mkdir()
    broker = support.BenchBroker(tmp / "broker").start()
    sub = Subscriber(broker.port)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp.parent / "numba-cache"), "PYTHONPATH": str(support.REPO)}
    daemon = Daemon(write_config(tmp, broker.url, replay, model), env, variant)
    outbox = tmp / "state" / "outbox.sqlite"
    samples: list[tuple[float, int, int]] = []  # (seconds since start, results stored, RSS KiB)
    try:
        deadline = time.monotonic() + 6 * 3600
        while time.monotonic() < deadline:
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited:\n{daemon.log.read_text()[-3000:]}")
            samples.append((time.time() - daemon.t0, stored_results(outbox), support.rss_kib(daemon.proc.pid)))
            if samples[-1][1] >= files and sub.count >= files:
                break
            time.sleep(0.25)
        for _ in range(20):  # idle afterwards: does it give memory back, or keep growing?
            time.sleep(0.25)
            samples.append((time.time() - daemon.t0, stored_results(outbox), support.rss_kib(daemon.proc.pid)))
    finally:
        daemon.stop()
        sub.close()
        broker.stop()
    first = next((s for s in samples if s[1] > 0), samples[0])
    last = next((s for s in samples if s[1] >= files), samples[-1])
    at = {frac: next((s for s in samples if s[1] >= frac * files), samples[-1]) for frac in (0.25, 0.5, 0.75, 1.0)}
    return {
        "variant": variant,
        "first": first,
        "at": at,
        "idle": samples[-1],
        "peak": max(s[2] for s in samples),
        "growth": (samples[-1][2] - at[0.25][2]) / 1024,
        "seconds": last[0] - first[0],
        "delivered": sub.count,
    }


def memory(tmp: Path, model: str, hours: float, variants: list[str]) -> None:
    replay = tmp / "hour"
    replay.mkdir()
    files, audio_s = hour_of_recordings(replay, hours * 3600)
    print(f"replay folder: {files} recordings, {audio_s / 3600:.2f} h of audio", flush=True)
    warm_numba(tmp / "numba-cache")
    runs = [memory_run(tmp / f"run-{v}", model, replay, files, v) for v in variants]
    names = VARIANTS
    rows = []
    for r in runs:
        mib = lambda s: s[2] / 1024  # noqa: E731
        rows.append((names[r["variant"]], mib(r["first"]), mib(r["at"][0.25]), mib(r["at"][0.5]), mib(r["at"][0.75]),
                     mib(r["at"][1.0]), mib(r["idle"]), r["peak"] / 1024, f"{r['growth']:+.1f}",
                     f"{audio_s / max(r['seconds'], 1e-9):.0f}x", f"{r['delivered']}/{files}"))  # fmt: skip
    support.table(
        ["daemon", "RSS at 1st result MiB", "at 25 %", "50 %", "75 %", "100 %", "5 s idle after", "peak",
         "growth 25 %->end MiB", "speed vs real time", "delivered"],
        rows,
        f"Resident memory of `steth device run`, replay of {audio_s / 3600:.2f} h of real recordings ({files} "
        "files, analysed as fast as the daemon goes), numba's cache warm for librosa (target <= 150 MB, flat)",
    )  # fmt: skip


# -- peak memory of one analysis ------------------------------------------------------------------------


def peak_rss(code: str, scipy: bool) -> float:
    """Peak resident memory (MiB) of a fresh interpreter running ``code``, with device/core/dsp.py's functions
    or (``scipy``) scipy.signal's swapped in as before.
    """
    swap = "from tests.device.scipy_dsp import scipy_reference\nscipy_reference().__enter__()\n" if scipy else ""
    probe = (
        "import sys\nsys.modules['django'] = None\n" + swap + code + "\n"
        # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork and exec into the latter
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
    )
    proc = subprocess.run([support.PYTHON, "-c", probe], capture_output=True, text=True, cwd=support.REPO, check=True)
    return int(proc.stdout.split()[-1]) / 1024


def peak(tmp: Path, model: str) -> None:
    """Peak memory of one process analysing a 12 s recording, a 1-hour file whole (`steth classify`) and
    the same hour in the daemon's 300 s segments, at 2 kHz and at 4 kHz (the device's capture rate).
    """
    import numpy as np
    import soundfile as sf

    from device.core import dsp

    x, rate = sf.read(str(SAMPLE), dtype="float64")
    hour = np.tile(x, int(np.ceil(3600 * rate / len(x))))[: 3600 * rate]
    sf.write(str(tmp / "hour.flac"), hour, rate, subtype="PCM_16")
    sf.write(str(tmp / "hour-4k.flac"), dsp.resample_poly(hour, 2, 1), 2 * rate, subtype="PCM_16")
    load = f"from device.core.inference import load_model\nclf = load_model({model!r})\n"
    cases = [("one 12 s recording (2 kHz)", load + f"clf.analyse_file({str(SAMPLE)!r})")]
    for name in ("hour.flac", "hour-4k.flac"):
        khz = "4 kHz" if "4k" in name else "2 kHz"
        cases.append((f"a 1-hour file ({khz}), whole", load + f"clf.analyse_file({str(tmp / name)!r})"))
        cases.append(
            (
                f"a 1-hour file ({khz}) in 300 s segments (the daemon)",
                load + "from device.edge.sources import segments\n"
                f"for audio in segments(__import__('pathlib').Path({str(tmp / name)!r}), 300):\n"
                "    clf.analyse(audio)",
            )
        )
    rows = [(name, f"{peak_rss(code, True):.0f}", f"{peak_rss(code, False):.0f}") for name, code in cases]
    support.table(
        ["analysis, one process", "scipy.signal (before) MiB", "device/core/dsp.py MiB"], rows, "Peak resident memory"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=1.0, help="hours of replayed audio for the memory run")
    p.add_argument("--model", default="screening")
    p.add_argument("--results", type=int, default=2000, help="results for the outbox rates")
    p.add_argument("--only", default="outbox,start,peak,memory")
    p.add_argument(
        "--variants",
        default="shipped,device-only,device-only-scipy",
        help="daemons for the memory runs: shipped (this venv), device-only (no Django, as on the Pi), "
        "device-only-scipy (and the filters through scipy.signal, as before), device-only-librosa (and the "
        "features through librosa)",
    )
    p.add_argument("--start-variants", default="device-only,device-only-scipy", help="daemons for the start runs")
    args = p.parse_args(argv)
    support.stop_on_sigterm()
    print(support.machine())
    support.quiet_warning()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="steth-bench-device-") as tmp:
        if "outbox" in only:
            (Path(tmp) / "outbox").mkdir()
            outbox_rates(Path(tmp) / "outbox", args.results)
        if "start" in only:
            (Path(tmp) / "start").mkdir()
            cold_start(Path(tmp) / "start", args.model, args.start_variants.split(","))
        if "peak" in only:
            (Path(tmp) / "peak").mkdir()
            peak(Path(tmp) / "peak", args.model)
        if "memory" in only:
            (Path(tmp) / "memory").mkdir()
            memory(Path(tmp) / "memory", args.model, args.hours, args.variants.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
