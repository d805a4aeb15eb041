"""Benchmarks for the device daemon (not a test: timings never gate CI).

    .venv/bin/python -m tests.device.bench_delivery [--model PATH_OR_NAME]

Prints: outbox write rate (each insert fsynced), drain rate through a real Mosquitto (QoS 1, marked sent
on PUBACK, deleted on the ack of a subscriber playing ingest's part), peak memory analysing a 1-hour
recording whole versus in the daemon's segments, and the bedside answer latency of `steth record`
(replayed recording at real-time pace).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from device.edge.config import BrokerConfig
from device.edge.outbox import Entry, Outbox
from device.edge.publisher import Publisher
from tests.device.daemon_support import REPO, write_config
from tests.device.outbox_support import Subscriber, broker, make_result

SAMPLE = REPO / "device" / "samples" / "a0405.flac"


def outbox_rates(tmp: Path, n: int = 2000) -> None:
    results = [make_result("pi-bench") for _ in range(n)]
    box = Outbox(tmp / "outbox.sqlite", tmp / "audio", 1 << 30)
    t = time.perf_counter()
    for r in results:
        box.add([Entry(r)])
    write = n / (time.perf_counter() - t)
    print(f"outbox write: {write:.0f} results/s (one transaction + fsync each)")
    mosquitto = broker(tmp / "broker").start()
    ingest = Subscriber(mosquitto.port)  # acknowledges every result it receives, as ingest does
    try:
        for inflight in (10, 1):
            if inflight == 1:
                box.add([Entry(make_result("pi-bench")) for _ in range(n)])
            cfg = BrokerConfig(url=mosquitto.url, reconnect_min_s=0.1, reconnect_max_s=0.5)
            pub = Publisher(cfg, "pi-bench", box, max_inflight=inflight)
            t = time.perf_counter()
            done = pub.drain(120)
            rate = n / (time.perf_counter() - t)
            pub.close()
            print(f"drain to Mosquitto, {inflight:2d} in flight: {rate:.0f} results/s (complete: {done})")
    finally:
        ingest.close()
        mosquitto.stop()
        box.close()


def peak_rss(code: str) -> float:
    probe = code + "\nimport resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    return int(proc.stdout.split()[-1]) / 1024


def memory(tmp: Path, model: str) -> None:
    x, rate = sf.read(str(SAMPLE), dtype="float32")
    hour = tmp / "hour.flac"
    sf.write(str(hour), np.tile(x, int(np.ceil(3600 * rate / len(x))))[: 3600 * rate], rate, subtype="PCM_16")
    load = f"from device.core.inference import load_model\nclf = load_model({model!r})\n"
    base = peak_rss(load + f"clf.analyse_file({str(SAMPLE)!r})")
    whole = peak_rss(load + f"clf.analyse_file({str(hour)!r})")
    segmented = peak_rss(
        load + "from device.edge.sources import segments\n"
        f"for audio in segments(__import__('pathlib').Path({str(hour)!r}), 300):\n    clf.analyse(audio)"
    )
    print(f"peak RSS: one 12 s recording {base:.0f} MiB; 1-hour file whole {whole:.0f} MiB; "
          f"1-hour file in 300 s segments (the daemon) {segmented:.0f} MiB")  # fmt: skip


def latency(tmp: Path, model: str) -> None:
    config = write_config(tmp, "mqtt://127.0.0.1:9", model=model)
    out = []
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-m", "device", "record", "--patient", "P-1", "--site", "mitral", "--seconds", "10",
             "--config", str(config), "--replay", str(SAMPLE), "--json"],
            capture_output=True, text=True, cwd=REPO, check=True,
        )  # fmt: skip
        out.append(json.loads(proc.stdout)["answer_latency_s"])
    print(f"steth record: answer {', '.join(f'{v:.2f}' for v in out)} s after the end of a 10 s recording")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="screening")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        outbox_rates(Path(d) / "rates")
    with tempfile.TemporaryDirectory() as d:
        memory(Path(d), args.model)
    with tempfile.TemporaryDirectory() as d:
        latency(Path(d), args.model)


if __name__ == "__main__":
    main()
