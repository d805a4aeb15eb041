"""The real system on this machine, for the drills: every part in its own process, configured the
production way, with a proxy on each link a drill cuts.

  device daemons (`steth device run`, replay mode, provisioned bundles, TLS + password)
     -> TcpProxy (the device's link: cut, stalled)
     -> Mosquitto (deploy/mosquitto: TLS, password file, ACLs; certificates from make-certs.sh)
     -> ingest workers (`steth dashboard ingest`, the ingest account on the loopback listener)
     -> TcpProxy (the database link: cut)
     -> PostgreSQL (a throwaway database on 127.0.0.1:5432, dropped afterwards)

The harness plays systemd: a part that exits is started again (counted as a restart), as
``Restart=always`` would. What each device produced is read from its own log (the producer logs
``<recording> -> <result_id>`` once the result is in its outbox); what was delivered, from the database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from device.fleet import provision
from tests.deploy.conftest import REPO, SecureBroker, start_secure_broker
from tests.support.tcpproxy import TcpProxy

SAMPLES = REPO / "device" / "samples"
STETH = [sys.executable, "-m", "device"]
PRODUCED_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO device\.(?:edge\.)?producers: (.*) -> ([0-9a-f-]{36})$", re.MULTILINE
)
PG = ["-h", "127.0.0.1", "-U", "postgres"]


def psql(db: str, sql: str) -> str:
    return subprocess.run(
        ["psql", *PG, "-d", db, "-At", "-c", sql], capture_output=True, text=True, check=True
    ).stdout.strip()


def create_database(prefix: str) -> str | None:
    """A fresh database, or None (with the reason printed) when PostgreSQL is not there."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    done = subprocess.run(["createdb", *PG, name], capture_output=True, text=True, check=False)
    return name if done.returncode == 0 else None


def drop_database(name: str) -> None:
    subprocess.run(["dropdb", *PG, "--if-exists", "--force", name], capture_output=True, check=False)


def run_ok(args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(
        args, cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STETH_", "DJANGO_", "DATABASE_"))}


@dataclass
class Proc:
    """One long-running child; output appended to ``log_path`` across restarts."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def terminate(self, timeout: float = 40.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} ignored SIGTERM:\n{self.log[-3000:]}") from None
        return self.proc.returncode

    def wait_log(self, text: str, timeout: float = 60.0, after: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log[after:]:
                return True
            time.sleep(0.1)
        return False


@dataclass
class Produced:
    device_id: str
    result_id: str
    recording: str
    at: float  # epoch seconds, from the log line (this machine's clock)


@dataclass(frozen=True)
class Outage:
    """A fault as the clock saw it: from when it was injected until the part was back (``end``: its port
    open, its worker subscribed again), and until the whole path was back (``settled``: after a broker
    restart, every worker subscribed again)."""

    fault: str
    start: float
    end: float
    settled: float = 0.0

    @property
    def until(self) -> float:
        return max(self.end, self.settled)


@dataclass
class FaultDelays:
    """Results whose way from recording to row crossed a fault (the earliest one they crossed)."""

    results: int = 0
    worst_delay_s: float = 0.0  # recording (result in the outbox) to row
    worst_beyond_outage_s: float = 0.0  # the same, less the time the faults it crossed kept a part down


def delays_per_fault(
    produced: list[Produced], stored: dict[str, tuple[str, float]], outages: list[Outage]
) -> dict[str, FaultDelays]:
    """Each delivered result counted under the earliest fault between its recording and its row (or
    ``none``); its delay beyond the outage is its delay less the union of the outages it crossed (a broker
    restart lasts until every worker has subscribed again: what comes after is the time a result the
    broker dropped waits to be sent again)."""
    out: dict[str, FaultDelays] = {}
    for p in produced:
        if p.result_id not in stored:
            continue
        received = stored[p.result_id][1]
        crossed = sorted((o for o in outages if o.start <= received and o.until >= p.at), key=lambda o: o.start)
        down, reach = 0.0, p.at
        for o in crossed:  # union of [start, until] clipped to [p.at, received]
            lo, hi = max(o.start, reach), min(o.until, received)
            if hi > lo:
                down += hi - lo
                reach = hi
        delay = received - p.at
        d = out.setdefault(crossed[0].fault if crossed else "none", FaultDelays())
        d.results += 1
        d.worst_delay_s = round(max(d.worst_delay_s, delay), 1)
        d.worst_beyond_outage_s = round(max(d.worst_beyond_outage_s, delay - down), 1)
    return out


@dataclass
class Figures:
    produced: int = 0
    delivered: int = 0
    duplicated: int = 0  # result_ids stored more than once, or a recording given two results
    lost: int = 0
    strangers: int = 0  # rows in the database no device produced
    redeliveries_absorbed: int = 0  # duplicates ingest received and stored nothing for
    worst_delay_s: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    refused_for_full_disk: int = 0
    lost_ids: list[str] = field(default_factory=list)  # device:result_id, to find them in the logs
    per_fault: dict[str, FaultDelays] = field(default_factory=dict)
    refused_fed: int = 0  # unusable recordings given to the devices
    refused_stored: int = 0  # their reports stored by ingest (once each)
    exam: dict[str, object] = field(default_factory=dict)  # the bedside exam recorded during the faults

    def line(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        return (
            f"produced={self.produced} delivered={self.delivered} duplicated={self.duplicated} lost={self.lost} "
            f"strangers={self.strangers} redeliveries_absorbed={self.redeliveries_absorbed} "
            f"refused_for_full_disk={self.refused_for_full_disk} refused_fed={self.refused_fed} "
            f"refused_stored={self.refused_stored} worst_delay_s={self.worst_delay_s:.1f} "
            f"faults: {faults} lost: {self.lost_ids} per fault: "
            + ", ".join(
                f"{k}: {d.results} results, worst {d.worst_delay_s:.1f} s, {d.worst_beyond_outage_s:.1f} s beyond"
                for k, d in sorted(self.per_fault.items())
            )
        )


class System:
    """Start with ``start()``; ``close()`` stops everything and drops the database (always call it)."""

    def __init__(self, root: Path, database: str, devices: int, workers: int = 2, simulated: int = 0) -> None:
        self.root = root
        self.database = database
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.device_ids = [f"drill-pi-{i + 1}" for i in range(devices)]
        # provisioned and registered, but run in the test's process (tests/drills/simulated.py)
        self.simulated_ids = [f"soak-pi-{i + 1:02d}" for i in range(simulated)]
        self.n_workers = workers
        self.broker: SecureBroker | None = None
        self.device_link: TcpProxy | None = None
        self.db_link: TcpProxy | None = None
        self.worker_link: TcpProxy | None = None
        self.devices: dict[str, Proc] = {}
        self.workers: list[Proc] = []
        self.faults: dict[str, int] = {}
        self.mounts: list[Path] = []
        self.copies = 0
        self.outages: list[Outage] = []
        self.exams: list[threading.Thread] = []
        self.exam_results: list[Produced] = []  # from `steth record --json`, at the time it answered
        self.exam_errors: list[str] = []
        self.refused_fed = 0  # zero-byte recordings given to the devices (feed_refused)

    # -- set-up ------------------------------------------------------------------------------------------

    def start(self, tmpfs_outbox_for: set[str] = frozenset(), *, devices_first: bool = False) -> System:  # type: ignore[assignment]
        """``devices_first``: a fresh start as the demo does it, the devices before the ingest workers have
        ever subscribed (a message for a shared subscription with no member goes nowhere; the devices send
        it again when the workers announce themselves). Counted as the fault ``fresh_start``."""
        self.broker = start_secure_broker(self.root)
        self.device_link = TcpProxy("127.0.0.1", self.broker.tls_port).start()
        self.db_link = TcpProxy("127.0.0.1", 5432).start()
        # the workers' link to the broker: held after a broker restart, so the workers come back late
        self.worker_link = TcpProxy("127.0.0.1", self.broker.port).start()
        bundles = self.root / "bundles"
        for device_id in [*self.device_ids, *self.simulated_ids]:
            spec = provision.BundleSpec(device_id, self.broker.tls_url, install_dir=bundles / device_id,
                                        use_credential=False)  # fmt: skip
            provision.provision_device(spec, self.broker.files, bundles, pid_file=self.broker.pid_file)
        self.broker.add_ingest(bundles)
        env = self.dashboard_env(direct=True)
        run_ok([*STETH, "dashboard", "migrate", "--noinput", "-v", "0"], env)
        register = (  # one process for them all: Django starts once
            "import sys, django; django.setup(); from django.core.management import call_command\n"
            "for device_id in sys.argv[1:]: call_command('registerdevice', device_id, clinic='drill')"
        )
        ids = [*self.device_ids, *self.simulated_ids]
        run_ok([sys.executable, "-c", register, *ids], {**env, "DJANGO_SETTINGS_MODULE": "dashboard.settings"})
        t0 = time.time()
        if devices_first:
            for device_id in self.device_ids:
                self.feed(device_id, 2)
            self._start_devices(tmpfs_outbox_for)
            for device_id, proc in self.devices.items():  # results made (and published) before any worker is up
                assert proc.wait_log(" -> ", 180), f"{device_id} produced nothing:\n{proc.log[-3000:]}"
        for i in range(self.n_workers):
            self.workers.append(self.make_worker(i + 1).start())
        for worker in self.workers:
            assert worker.wait_log("ingest ready", 120), f"{worker.name} never subscribed:\n{worker.log[-3000:]}"
        if devices_first:
            self.outages.append(Outage("fresh_start", t0, time.time()))
            self.count("fresh_start")
        else:
            self._start_devices(tmpfs_outbox_for)
        return self

    def _start_devices(self, tmpfs_outbox_for: set[str]) -> None:
        for device_id in self.device_ids:
            self.devices[device_id] = self.make_device(device_id, tmpfs=device_id in tmpfs_outbox_for).start()

    def dashboard_env(self, *, direct: bool = False) -> dict[str, str]:
        assert self.broker is not None and self.db_link is not None
        env = clean_env()
        port = 5432 if direct else self.db_link.port
        env.update(
            DEBUG="1",
            STETH_VAR_DIR=str(self.root / "var"),
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/{self.database}",
            DATABASE_CONN_MAX_AGE="0",
            STETH_MQTT_URL=f"mqtt://127.0.0.1:{self.worker_link.port if self.worker_link else self.broker.port}",
            STETH_MQTT_USERNAME="svc.ingest",
            STETH_MQTT_PASSWORD_FILE=str(self.root / "bundles" / "svc.ingest" / "mqtt-password"),
            STETH_MQTT_KEEPALIVE_S="5",
            STETH_INGEST_MAX_BACKOFF_S="2",
            STETH_LOG_LEVEL="info",
            PYTHONUNBUFFERED="1",
        )
        return env

    def make_worker(self, n: int) -> Proc:
        args = [*STETH, "dashboard", "ingest", "--client-id", f"svc.ingest.drill-{n}"]
        return Proc(f"ingest-{n}", args, self.dashboard_env(), self.logs / f"ingest-{n}.log")

    def replay_dir(self, device_id: str) -> Path:
        return self.root / "replay" / device_id

    def outbox_dir(self, device_id: str) -> Path:
        return self.root / "state" / device_id

    def make_device(self, device_id: str, *, tmpfs: bool = False) -> Proc:
        assert self.device_link is not None
        replay = self.replay_dir(device_id)
        replay.mkdir(parents=True, exist_ok=True)
        state = self.outbox_dir(device_id)
        state.mkdir(parents=True, exist_ok=True)
        if tmpfs:
            self.mount_small_tmpfs(state)
        env = clean_env()
        env.update(
            STETH_DEVICE__MODE="replay",
            STETH_DEVICE__AUDIO__SOURCE="replay",
            STETH_DEVICE__AUDIO__REPLAY_PATH=str(replay),
            STETH_DEVICE__AUDIO__REPLAY_REALTIME="false",
            STETH_DEVICE__AUDIO__TRANSIENT_DIR=str(self.root / "transient" / device_id),
            STETH_DEVICE__OUTBOX__PATH=str(state / "outbox.sqlite"),
            # the device reaches the broker through the proxy the drills cut
            STETH_DEVICE__BROKER__URL=f"mqtts://localhost:{self.device_link.port}",
            STETH_DEVICE__BROKER__KEEPALIVE_S="5",
            STETH_DEVICE__BROKER__RECONNECT_MIN_S="0.5",
            STETH_DEVICE__BROKER__RECONNECT_MAX_S="3",
            STETH_DEVICE__BROKER__STATUS_INTERVAL_S="5",
            # the production ack timeout (60 s): what the broker drops must come back when ingest announces
            # itself, not when the timeout passes (the per-fault delays would show it)
            PYTHONUNBUFFERED="1",
        )
        config = self.root / "bundles" / device_id / "device.toml"
        return Proc(device_id, [*STETH, "device", "run", "--config", str(config)], env, self.logs / f"{device_id}.log")

    def mount_small_tmpfs(self, folder: Path, size: str = "4m") -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True,
                       capture_output=True)  # fmt: skip
        self.mounts.append(folder)

    # -- feeding recordings --------------------------------------------------------------------------------

    def feed(self, device_id: str, n: int = 1) -> None:
        """Give a device ``n`` new recordings (copies of the bundled samples under new names)."""
        samples = sorted(SAMPLES.glob("*.flac"))
        target = self.replay_dir(device_id)
        target.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            self.copies += 1
            src = samples[self.copies % len(samples)]
            tmp = target / f".{self.copies:05d}-{src.name}.part"
            shutil.copyfile(src, tmp)
            tmp.rename(target / f"r{self.copies:05d}-{src.name}")  # appears whole: never half-read

    def start_exam(self, device_id: str, patient_ref: str, sites: tuple[str, ...], seconds: float = 5.0) -> None:
        """A bedside exam in the background: `steth record` at each site in turn (a bundled recording
        replayed in real time), on a device whose service is running (the service delivers)."""
        proc = self.devices[device_id]
        samples = sorted(SAMPLES.glob("*.flac"))

        def exam() -> None:
            for i, site in enumerate(sites):
                args = [*proc.args[:-4], "record", "--config", proc.args[-1], "--patient", patient_ref,
                        "--site", site, "--seconds", f"{seconds:g}", "--replay", str(samples[i % len(samples)]),
                        "--json"]  # fmt: skip
                done = subprocess.run(args, cwd=REPO, env=proc.env, capture_output=True, text=True, check=False)
                at = time.time()
                if done.returncode != 0:
                    self.exam_errors.append(f"{site}: exit {done.returncode}: {done.stderr[-2000:]}")
                    continue
                for result in json.loads(done.stdout.strip().splitlines()[-1])["results"]:
                    self.exam_results.append(Produced(device_id, result["result_id"], f"exam:{patient_ref}:{site}", at))

        thread = threading.Thread(target=exam, name=f"exam-{device_id}", daemon=True)
        thread.start()
        self.exams.append(thread)

    def wait_exams(self, timeout: float = 300.0) -> None:
        for thread in self.exams:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self.exams), "a bedside exam never finished"
        assert not self.exam_errors, self.exam_errors

    def feed_refused(self, device_id: str) -> None:
        """A recording the device must refuse (a zero-byte file): reported to ingest, one row each."""
        self.refused_fed += 1
        (self.replay_dir(device_id) / f"bad-{self.refused_fed:04d}.wav").write_bytes(b"")

    def refused_stored(self) -> int:
        return int(psql(self.database, "SELECT count(*) FROM clinic_refusedrecording"))

    # -- the supervisor ------------------------------------------------------------------------------------

    def supervise(self) -> None:
        """Restart what exited (systemd's Restart=always), counting it."""
        for proc in [*self.devices.values(), *self.workers]:
            if proc.proc is not None and not proc.alive():
                self.count(f"restarted_by_supervisor:{proc.name.rsplit('-', 1)[0]}")
                proc.start()

    def count(self, fault: str, n: int = 1) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + n

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.supervise()
            time.sleep(0.2)

    # -- faults ----------------------------------------------------------------------------------------------

    def restart_broker(
        self, hold_devices: bool = False, *, kill: bool = False, feed_after: int = 0, workers_late_s: float = 0.0
    ) -> None:
        """Restart Mosquitto (SIGTERM, as systemd does; it saves its sessions and queues), or with
        ``kill`` SIGKILL it first (it loses what it took since its last autosave).

        The devices keep publishing throughout. Mosquitto 2.0.11 (Debian 12) drops messages for
        *shared* subscriptions that arrive after a restart and before their subscriber reconnects
        (test_known_defects.py); the devices send those again when ingest's ack does not come
        (end-to-end acknowledgements), so the drills no longer hold the devices' link to dodge it.
        ``hold_devices`` (the soak only, see test_soak.py) keeps the devices' link cut until every
        ingest worker has subscribed again. ``workers_late_s`` keeps the workers' link cut that long after
        the broker is back (the devices come back first, as the demo saw: the shared subscription is then
        empty). ``feed_after`` recordings are given to each device as soon as the broker is back.
        The outage lasts until every worker has subscribed again (``settled``).
        """
        assert self.broker is not None and self.device_link is not None
        ready = [w.log.count("ingest ready") for w in self.workers]
        readies = list(ready)
        if hold_devices:
            self.device_link.cut()
        if workers_late_s and self.worker_link is not None:
            self.worker_link.cut()
        t0 = time.time()
        if kill and self.broker.proc is not None:
            self.broker.proc.kill()
            self.broker.proc.wait()
            self.broker.proc = None
            self.broker.start()
        else:
            self.broker.restart()
        from tests.support.broker import wait_for_port

        wait_for_port(self.broker.tls_port)
        for device_id in self.devices if feed_after else ():  # recordings keep coming: the devices are back
            self.feed(device_id, feed_after)  # before the workers, which is when the shared subscription is empty
        fault = "broker_killed_9" if kill else "broker_restarted"
        back = time.time()
        self.count(fault)
        if workers_late_s and self.worker_link is not None:
            self.wait(workers_late_s)
            self.worker_link.restore()
        deadline = time.monotonic() + 60  # the path is whole again once every worker has subscribed again
        while time.monotonic() < deadline and any(
            w.alive() and w.log.count("ingest ready") <= n for w, n in zip(self.workers, readies, strict=True)
        ):
            time.sleep(0.05)
        self.outages.append(Outage(fault, t0, back, settled=time.time()))
        if hold_devices:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                w.alive() and w.log.count("ingest ready") <= n for w, n in zip(self.workers, ready, strict=True)
            ):
                time.sleep(0.1)
            self.device_link.restore()

    def kill_worker(self, i: int, down_s: float = 2.0) -> None:
        self.restart_workers([i], down_s, fault="ingest_killed_9")

    def restart_workers(self, which: list[int], down_s: float = 2.0, *, fault: str = "ingest_all_killed_9") -> None:
        """SIGKILL these workers, start them again after ``down_s``; the outage lasts until they have
        all subscribed again."""
        t0 = time.time()
        ready = {i: self.workers[i].log.count("ingest ready") for i in which}
        for i in which:
            self.workers[i].kill9()
        self.count(fault)
        time.sleep(down_s)
        for i in which:
            self.workers[i].start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
            self.workers[i].log.count("ingest ready") <= n for i, n in ready.items()
        ):
            time.sleep(0.1)
        self.outages.append(Outage(fault, t0, time.time()))

    def kill_device_mid_delivery(self, device_id: str, timeout: float = 60.0) -> bool:
        """kill -9 the daemon right after it stored a new result, before the broker can acknowledge it."""
        proc = self.devices[device_id]
        before = len(PRODUCED_RE.findall(proc.log))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(PRODUCED_RE.findall(proc.log)) > before:
                t0 = time.time()
                proc.kill9()
                self.count("device_killed_9")
                proc.start()
                # down until its publisher is connected again
                mark = len(proc.log)
                proc.wait_log("connected to ", 120, after=mark)
                self.outages.append(Outage("device_killed_9", t0, time.time()))
                return True
            time.sleep(0.02)
        return False

    def cut_device_link(self, seconds: float) -> None:
        assert self.device_link is not None
        self.device_link.cut()
        self.count("device_link_cut")
        t0 = time.time()
        self.wait(seconds)
        self.device_link.restore()
        self.outages.append(Outage("device_link_cut", t0, time.time()))

    def stall_device_link(self, seconds: float) -> None:
        assert self.device_link is not None
        self.device_link.stall()
        self.count("device_link_stalled")
        t0 = time.time()
        self.wait(seconds)
        self.device_link.resume()
        self.outages.append(Outage("device_link_stalled", t0, time.time()))

    def cut_database(self, seconds: float) -> None:
        assert self.db_link is not None
        self.db_link.cut()
        self.count("database_link_cut")
        t0 = time.time()
        self.wait(seconds)
        self.db_link.restore()
        self.outages.append(Outage("database_link_cut", t0, time.time()))

    def corrupt_outbox(self, device_id: str) -> Path:
        """Stop the device, wreck its outbox file, move the recordings it had done aside, start it again.

        The outbox also remembers which recordings were analysed; a wrecked one forgets, and the device
        would analyse them again under new result ids. On a real device those recordings would be long
        gone; here they are moved away so the count of results per recording stays meaningful.
        """
        proc = self.devices[device_id]
        # A wrecked file loses what it held (the daemon says so at CRITICAL; salvage of a partly damaged
        # one is tests/device/test_outbox.py's): wreck it once what it held is delivered, so the count
        # measures the recovery, not the wreck.
        assert self.wait_analysed(device_id, 120), f"{device_id} never analysed all its recordings"
        assert self.wait_delivered(device_id, 120), f"{device_id} never emptied its outbox"
        proc.terminate()
        path = self.outbox_dir(device_id) / "outbox.sqlite"
        with path.open("r+b") as f:
            f.write(b"this is not an SQLite database any more " * 64)
        done = self.root / "replay-done" / device_id
        done.mkdir(parents=True, exist_ok=True)
        for file in self.replay_dir(device_id).glob("*.flac"):
            file.rename(done / file.name)
        self.count("outbox_corrupted")
        proc.start()
        return path

    def fill_disk(self, device_id: str) -> Path:
        """Fill the device's (small tmpfs) outbox folder to the last byte."""
        filler = self.outbox_dir(device_id) / "filler"
        with filler.open("wb", buffering=0) as f:
            for block in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * block)
        self.count("device_disk_full")
        return filler

    # -- counting ---------------------------------------------------------------------------------------------

    def produced(self) -> list[Produced]:
        out = []
        for device_id, proc in self.devices.items():
            for stamp, recording, result_id in PRODUCED_RE.findall(proc.log):
                at = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged
                out.append(Produced(device_id, result_id, recording, at))
        # A device killed with SIGKILL after storing a result and before logging it delivers the result
        # without a log line. Replay result ids derive from the file, device and model, so a stored row
        # with the id of a file the device was given is that result (its time: when it was stored).
        from device.edge.analyser import result_id_for

        logged = {p.result_id for p in out}
        stored: dict[str, tuple[str, float]] | None = None
        for device_id in self.devices:
            for path in self.replay_dir(device_id).glob("*.flac"):
                st = path.stat()
                rid = result_id_for(device_id, f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}#0", "screening")
                if rid in logged:
                    continue
                stored = self.stored() if stored is None else stored
                if rid in stored:
                    out.append(Produced(device_id, rid, str(path), stored[rid][1]))
        return out + list(self.exam_results)

    def stored(self) -> dict[str, tuple[str, float]]:
        rows = psql(
            self.database,
            "SELECT r.result_id, d.device_id, extract(epoch from r.received_at) FROM clinic_result r "
            "JOIN clinic_device d ON d.id = r.device_id",
        )
        out: dict[str, tuple[str, float]] = {}
        for line in rows.splitlines():
            rid, device_id, at = line.split("|")
            out[rid] = (device_id, float(at))
        return out

    def wait_analysed(self, device_id: str, timeout: float) -> bool:
        """Every recording in the device's replay folder has its result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise()
            done = {Path(p.recording).name for p in self.produced() if p.device_id == device_id}
            if {f.name for f in self.replay_dir(device_id).glob("*.flac")} <= done:
                return True
            time.sleep(0.5)
        return False

    def wait_delivered(self, device_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise()
            if {p.result_id for p in self.produced() if p.device_id == device_id} <= set(self.stored()):
                return True
            time.sleep(0.5)
        return False

    def wait_all_delivered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise()
            wanted = {p.result_id for p in self.produced()}
            if wanted and wanted <= set(self.stored()):
                return True
            time.sleep(1.0)
        return False

    def figures(self) -> Figures:
        produced = self.produced()
        stored = self.stored()
        ids = [p.result_id for p in produced]
        per_recording: dict[tuple[str, str], int] = {}
        for p in produced:
            per_recording[(p.device_id, p.recording)] = per_recording.get((p.device_id, p.recording), 0) + 1
        count_rows = int(psql(self.database, "SELECT count(*) FROM clinic_result"))
        delays = [stored[p.result_id][1] - p.at for p in produced if p.result_id in stored]
        redelivered = sum(
            int(m) for w in self.workers for m in re.findall(r'"result_duplicate": (\d+)', w.log)
        )  # fmt: skip
        return Figures(
            produced=len(set(ids)),
            delivered=len(set(ids) & set(stored)),
            duplicated=(len(ids) - len(set(ids)))
            + (count_rows - len(stored))
            + sum(n - 1 for n in per_recording.values()),
            lost=len(set(ids) - set(stored)),
            strangers=len(set(stored) - set(ids)),
            redeliveries_absorbed=redelivered,
            worst_delay_s=max(delays, default=0.0),
            faults=dict(self.faults),
            refused_for_full_disk=sum(p.log.count("RESULT DROPPED") for p in self.devices.values()),
            lost_ids=sorted(f"{p.device_id}:{p.result_id}" for p in produced if p.result_id not in stored),
            per_fault=delays_per_fault(produced, stored, self.outages),
            refused_fed=self.refused_fed,
            refused_stored=self.refused_stored(),
            exam=self.exam_figures(),
        )

    def exam_figures(self) -> dict[str, object]:
        """The exam's rows: one per site, all with the patient's reference."""
        if not self.exam_results:
            return {}
        ids = ",".join(f"'{p.result_id}'" for p in self.exam_results)
        rows = psql(self.database, f"SELECT patient_ref, location FROM clinic_result WHERE result_id IN ({ids})")
        pairs = [tuple(line.split("|")) for line in rows.splitlines()]
        return {"recorded": len(self.exam_results), "stored": len(pairs), "patients": sorted({p for p, _ in pairs}),
                "sites": sorted(s for _, s in pairs)}  # fmt: skip

    # -- tear-down ---------------------------------------------------------------------------------------------

    def close(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for proc in [*self.devices.values(), *self.workers]:
            try:
                codes[proc.name] = proc.terminate()
            except AssertionError:
                codes[proc.name] = -9
        for proxy in (self.device_link, self.db_link, self.worker_link):
            if proxy is not None:
                proxy.stop()
        if self.broker is not None:
            self.broker.stop()
        for folder in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
        drop_database(self.database)
        return codes
