"""The soak: twenty simulated devices (the real outbox and publisher, tests/drills/simulated.py) send
results through TLS, the production broker and two ingest workers into PostgreSQL while faults are
injected at random from a fixed seed; at the end every result is in the database exactly once.

Light form (CI): 20 devices x 40 results. Full form (``-m "drill and full"``): 20 x 500 = 10,000.
STETH_SOAK_SEED picks another sequence of faults (the seed is in the figures).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.drills.simulated import SimDevice
from tests.drills.system import System, create_database

pytestmark = [pytest.mark.drill, pytest.mark.slow, pytest.mark.timeout(3600)]

DEVICES = 20
# STETH_SOAK_HOLD=1 makes a broker restart hold the devices' link until ingest has subscribed again (the
# workaround for Mosquitto 2.0.11's shared-subscription defect before end-to-end acks). By default the
# devices keep publishing through the restart, the harder case. The hold was also the default for a while
# because of a "reconnect stall" that turned out to be the test's own proxy leaking descriptors
# (tests/support/tcpproxy.py, RELIABILITY.md).
HOLD = os.environ.get("STETH_SOAK_HOLD", "0") == "1"


@pytest.fixture
def soak_system(tmp_path):
    database = create_database("steth_soak")
    if database is None:
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is needed (bash scripts/services.sh)")
    s = System(tmp_path, database, devices=0, workers=2, simulated=DEVICES)
    try:
        yield s.start()
    finally:
        s.close()


def inject(s: System, sims: list[SimDevice], rng: random.Random) -> str:
    fault = rng.choice(["broker", "worker", "device", "link_cut", "link_stall", "database"])
    if fault == "broker":
        s.restart_broker(hold_devices=HOLD)
    elif fault == "worker":
        s.kill_worker(rng.randrange(len(s.workers)), down_s=rng.uniform(0.5, 3))
    elif fault == "device":
        for sim in rng.sample(sims, 3):
            sim.crash()
        s.count("simulated_device_crashed", 3)
    elif fault == "link_cut":
        s.cut_device_link(rng.uniform(1, 6))
    elif fault == "link_stall":
        s.stall_device_link(rng.uniform(2, 8))
    else:
        s.cut_database(rng.uniform(1, 6))
    return fault


def soak(s: System, per_device: int, interval_s: float, record_figures, name: str) -> None:
    seed = int(os.environ.get("STETH_SOAK_SEED", "7"))
    rng = random.Random(seed)
    assert s.device_link is not None
    url = f"mqtts://localhost:{s.device_link.port}"
    sims = [
        SimDevice(d, s.root / "sim", s.root / "bundles" / d, url, per_device, interval_s * rng.uniform(0.7, 1.3))
        for d in s.simulated_ids
    ]
    started = time.monotonic()
    for sim in sims:
        sim.start()
    try:
        while not all(sim.done_producing for sim in sims):
            s.wait(rng.uniform(1.5, 4))
            inject(s, sims, rng)
        produced = {rid: (sim.device_id, at) for sim in sims for rid, at in sim.produced.items()}
        deadline = time.monotonic() + 300
        stored = s.stored()
        while not set(produced) <= set(stored) and time.monotonic() < deadline:
            s.wait(2)
            stored = s.stored()
    finally:
        for sim in sims:
            sim.stop()
    rows = int(s_psql(s, "SELECT count(*) FROM clinic_result"))
    lost = sorted(set(produced) - set(stored))
    figures = {
        "seed": seed,
        "broker_restart_holds_devices": HOLD,
        "devices": len(sims),
        "produced": len(produced),
        "delivered": len(set(produced) & set(stored)),
        "lost": len(lost),
        "duplicated": rows - len(stored),
        "strangers": len(set(stored) - set(produced)),
        "worst_delay_s": round(
            max((stored[r][1] - at for r, (_, at) in produced.items() if r in stored), default=0), 2
        ),
        "faults": dict(s.faults),
        "duration_s": round(time.monotonic() - started, 1),
        "device_errors": [e for sim in sims for e in sim.errors],
        "lost_ids": lost[:20],
        # the simulated devices and the proxies share this process: a descriptor leak there once stalled
        # reconnects (select() takes none above 1,023), so the count is kept with the figures
        "open_descriptors": len(os.listdir("/proc/self/fd")),
    }
    record_figures(f"{name}-held" if HOLD else name, figures)
    assert figures["produced"] == len(sims) * per_device, figures
    assert not figures["device_errors"], figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["strangers"] == 0, figures
    assert sum(s.faults.values()) >= 3, figures
    assert figures["open_descriptors"] < 800, figures  # measured: 60-66 at the end, about 220 at the busiest


def s_psql(s: System, sql: str) -> str:
    from tests.drills.system import psql

    return psql(s.database, sql)


def test_light_soak_twenty_devices_random_faults(soak_system, record_figures):
    soak(soak_system, per_device=40, interval_s=0.5, record_figures=record_figures, name="soak-light")


@pytest.mark.full
def test_full_soak_ten_thousand_results(soak_system, record_figures):
    # STETH_SOAK_INTERVAL_S=0.25 spreads the same 10,000 results over ~3 minutes and more faults (the
    # variant that exposed the test proxy's descriptor leak, RELIABILITY.md).
    interval = float(os.environ.get("STETH_SOAK_INTERVAL_S", "0.05"))
    name = "soak-full" if interval == 0.05 else f"soak-full-interval-{interval:g}"
    soak(soak_system, per_device=500, interval_s=interval, record_figures=record_figures, name=name)
