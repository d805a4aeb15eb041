"""Benchmark: results per second into PostgreSQL through a real Mosquitto, one worker vs two.

    .venv/bin/python -m tests.benchmarks.bench_ingest [--results 20000] [--workers 1,2] [--publishers 2]
        [--mode live,backlog] [--batch 1,128] [--profile DIR [--idle]]

Two modes: ``live`` (the workers store while the publishers send) and ``backlog`` (everything is
published while the workers are stopped, then they drain it; see run_once). For each configuration:
a fresh Mosquitto (production-like: persistence, deep queues) on a free port, a fresh table in the
throwaway database ``steth_bench_ingest``, N `manage.py ingest` worker processes with production
settings on one shared subscription, and publisher processes sending pre-generated, valid result
messages (QoS 1, five windows each, from 100 registered devices) as fast as the broker takes them,
until the last row is in the database (polled every 20 ms). "machine CPU busy" is the whole
machine's (both cores: workers, PostgreSQL, Mosquitto, publishers) over the measured span.
``--batch`` sets STETH_INGEST_BATCH_SIZE (1 = one transaction per message, the alternative);
``--profile DIR`` records a py-spy profile of the first worker (collapsed stacks).
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.benchmarks import support

DB = "steth_bench_ingest"
CPU_TICKS = os.sysconf("SC_CLK_TCK")


def setup_database(env: dict[str, str], devices: list[str]) -> None:
    support.recreate_database(DB)
    support.manage(env, "migrate", "--noinput")
    values = ",".join(
        f"('{d}', '', (SELECT id FROM clinic_clinic WHERE slug = 'bench'), false, now(), 'unknown', '', '[]')"
        for d in devices
    )
    support.psql(
        "INSERT INTO clinic_clinic (slug, name, time_zone) VALUES ('bench', 'Bench clinic', '');"
        "INSERT INTO clinic_device (device_id, name, clinic_id, auto_registered, registered_at, state, "
        f"software_version, installed_models) VALUES {values}",
        DB,
    )


def publish(port: int, items: list[tuple[str, bytes]], go: Any, out: Any, index: int) -> None:
    """A device-like publisher: QoS 1, MQTT 5, as many in flight as the broker allows."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{index}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(64)
    client.max_queued_messages_set(0)
    acked = threading.Event()
    count = [0]

    def on_publish(*_: Any) -> None:
        count[0] += 1
        if count[0] == len(items):
            acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    go.wait()
    t0 = time.time()
    for topic, payload in items:
        client.publish(topic, payload, qos=1)
    acked.wait(600)
    out.put((index, t0, time.time(), count[0]))
    client.disconnect()
    client.loop_stop()


class Worker:
    def __init__(self, env: dict[str, str], url: str, client_id: str) -> None:
        self.client_id = client_id
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [support.PYTHON, "-m", "dashboard.manage", "ingest", "--url", url, "--client-id", client_id],
            cwd=env.get("PYTHONPATH", support.REPO),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.client_id} exited:\n" + "\n".join(self.lines[-30:]))
        return any("ingest ready" in line for line in self.lines)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CPU_TICKS

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        match = re.search(r"ingest stats: (\{.*\})", out or "")
        return json.loads(match.group(1)) if match else {}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CPU_TICKS, sum(fields) / CPU_TICKS


class Rows:
    """Counts the stored results (one connection, polled), noting when given fractions were reached."""

    def __init__(self) -> None:
        import psycopg

        self.db = psycopg.connect(support.database_url(DB), autocommit=True)

    def count(self) -> int:
        row = self.db.execute("SELECT count(*) FROM clinic_result").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.db.close()


def start_publishers(port: int, payloads: list[tuple[str, bytes]], n: int) -> tuple[Any, Any, list[Any]]:
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    pubs = [ctx.Process(target=publish, args=(port, payloads[i::n], go, out, i), daemon=True) for i in range(n)]
    for p in pubs:
        p.start()
    time.sleep(1.0)  # connected
    return go, out, pubs


def run_once(
    args: argparse.Namespace, mode: str, workers: int, batch: int, payloads: list[tuple[str, bytes]]
) -> dict[str, Any]:
    """``live``: workers running while the publishers send; the clock runs from the first publish to the
    last row. ``backlog``: everything published while the workers are stopped (their persistent sessions
    keep it), then the workers start; the rate is taken between 5 % and 95 % of the rows (steady state,
    without the workers' start-up), with the broker and the publishers no longer competing for the CPU."""
    support.psql("TRUNCATE clinic_result, clinic_deadletter CASCADE", DB)
    support.psql("UPDATE clinic_device SET last_seen = NULL", DB)
    total = len(payloads)
    rows = Rows()
    with tempfile.TemporaryDirectory(prefix="steth-bench-ingest-") as tmp:
        broker = support.BenchBroker(Path(tmp) / "broker").start()
        env = support.dashboard_env(DB, Path(tmp) / "var", STETH_LOG_LEVEL="info", STETH_INGEST_BATCH_SIZE=str(batch))
        if args.receive_maximum:
            env["STETH_INGEST_RECEIVE_MAXIMUM"] = str(args.receive_maximum)
        if args.code:
            env["PYTHONPATH"] = str(args.code.resolve())
        ids = [f"svc.ingest.bench-{i + 1}" for i in range(workers)]
        procs = [Worker(env, broker.url, client_id) for client_id in ids]
        spy = None
        marks: dict[float, tuple[float, float, tuple[float, float]]] = {}  # fraction -> (time, worker CPU, machine)
        try:
            support.wait(lambda: all(w.ready() for w in procs), 60, "the workers to subscribe")
            go, out, pubs = start_publishers(broker.port, payloads, args.publishers)
            if mode == "backlog":
                for w in procs:
                    w.stop()  # the sessions (and the shared subscription) stay with the broker
                go.set()
                reports = [out.get(timeout=600) for _ in pubs]
                procs = [Worker(env, broker.url, client_id) for client_id in ids]
                t0 = time.time()
            else:
                t0 = time.time()
                go.set()
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                out_file = args.profile / f"ingest-{mode}-{workers}w-batch{batch}.txt"
                spy = subprocess.Popen(
                    [str(Path(support.PYTHON).parent / "py-spy"), "record", "-f", "raw", "-o", str(out_file),
                     "-r", "200", *(["--idle"] if args.idle else []), "-p", str(procs[0].proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            cpu0 = [w.cpu_s() for w in procs]
            busy0 = machine_busy()
            seen = 0
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline and seen < total:
                seen = rows.count()
                for frac in (0.05, 0.95):
                    if frac not in marks and seen >= frac * total:
                        marks[frac] = (time.time(), sum(w.cpu_s() for w in procs), machine_busy())
                time.sleep(0.02)
            t_end = time.time()
            if mode == "live":
                reports = [out.get(timeout=60) for _ in pubs]
            for p in pubs:
                p.join(10)
            cpu = sum(w.cpu_s() for w in procs) - sum(cpu0)
            busy1 = machine_busy()
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            stats = [w.stop() for w in procs]
            broker.stop()
            rows.close()
    if mode == "backlog" and 0.05 in marks and 0.95 in marks:
        (ta, ca, ma), (tb, cb, mb) = marks[0.05], marks[0.95]
        rate, cpu_ms = 0.9 * total / (tb - ta), 1000 * (cb - ca) / (0.9 * total)
        busy = (mb[0] - ma[0]) / (mb[1] - ma[1])
    else:
        rate, cpu_ms = seen / (t_end - t0), 1000 * cpu / max(seen, 1)
        busy = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
    return {
        "mode": mode,
        "workers": workers,
        "batch": batch,
        "results": total,
        "stored": seen,
        "seconds": t_end - t0,
        "rate": rate,
        "publish_rate": total / (max(r[2] for r in reports) - min(r[1] for r in reports)),
        "cpu_per_result_ms": cpu_ms,
        "busy": busy,
        "split": "/".join(str(s.get("result_created", 0)) for s in stats),
        "other": {k: v for s in stats for k, v in s.items() if k not in ("result_created", "status")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=int, default=20000)
    p.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    p.add_argument("--mode", default="live,backlog", help="live (publishing while ingesting), backlog, or both")
    p.add_argument("--batch", default="64", help="STETH_INGEST_BATCH_SIZE values to compare, e.g. 1,64")
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument(
        "--receive-maximum", type=int, default=None, help="STETH_INGEST_RECEIVE_MAXIMUM (default: the setting's)"
    )
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--profile", type=Path, default=None, help="write py-spy profiles (raw stacks) of worker 1 here")
    p.add_argument("--idle", action="store_true", help="profile wall time (waits included), not only CPU")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument(
        "--code",
        type=Path,
        default=None,
        help="run the workers from this source tree (e.g. `git archive <commit>` unpacked: the 'before' of a fix)",
    )
    args = p.parse_args(argv)

    support.stop_on_sigterm()
    print(support.machine())
    support.quiet_warning()
    from device.core import contract

    devices = [f"bench-pi-{i:04d}" for i in range(args.devices)]
    with tempfile.TemporaryDirectory() as tmp:
        env = support.dashboard_env(DB, Path(tmp))
        if args.code:
            env["PYTHONPATH"] = str(args.code.resolve())  # its own migrations: the schema it was written for
        setup_database(env, devices)
    messages = support.result_messages(args.results, devices)
    payloads = [
        (contract.results_topic(m["device_id"]), json.dumps(m, separators=(",", ":")).encode()) for m in messages
    ]
    print(f"{len(payloads)} results of {len(payloads[0][1])} bytes from {len(devices)} devices, "
          f"{args.publishers} publisher processes")  # fmt: skip
    rows = []
    for mode in args.mode.split(","):
        for batch in [int(b) for b in args.batch.split(",")]:
            for workers in [int(w) for w in args.workers.split(",")]:
                r = run_once(args, mode, workers, batch, payloads)
                print(f"  {mode}, {workers} worker(s), batch {batch}: {r['stored']}/{r['results']} rows in "
                      f"{r['seconds']:.2f} s, {r['rate']:.0f}/s; other outcomes {r['other']}", flush=True)  # fmt: skip
                rows.append(r)
    base = {(r["mode"], r["batch"]): r["rate"] for r in rows if r["workers"] == 1}
    support.table(
        ["mode", "workers", "batch size", "results", "stored", "seconds", "results/s", "vs 1 worker",
         "worker CPU ms/result", "machine CPU busy", "split", "publish rate/s"],
        [
            (r["mode"], r["workers"], r["batch"], r["results"], r["stored"], r["seconds"], r["rate"],
             f"{r['rate'] / base[(r['mode'], r['batch'])]:.2f}x" if base.get((r["mode"], r["batch"])) else "-",
             r["cpu_per_result_ms"], f"{r['busy']:.0%}", r["split"], r["publish_rate"])
            for r in rows
        ],
        "Ingest: results/s into PostgreSQL through Mosquitto (target >= 2,000/s with one worker)"
        + (f", workers from {args.code}" if args.code else ""),
    )  # fmt: skip
    if not args.keep:
        support.psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
