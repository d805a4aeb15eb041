"""Benchmark: from the end of a recording on a device to the database row and to the live feed JSON.

    .venv/bin/python -m tests.benchmarks.bench_end_to_end [--recordings 30] [--fill 1000000]

Everything real, on loopback: a Mosquitto (free port), `steth device run` in deliver mode (its
publisher drains the outbox), one `manage.py ingest` worker and gunicorn serving the dashboard, both
with production settings, on PostgreSQL (database ``steth_bench_e2e``, filled with --fill results
so the feed query runs against a realistic table; reused while its size matches). This script plays
`steth record`: for each bedside recording (real, bundled samples) it analyses it with the shipped
model and stores the result in the daemon's outbox, exactly as `steth record` does, then watches:

  outbox     the end of the recording -> the result committed to the outbox (analysis + fsync)
  database   the outbox commit -> the row visible in PostgreSQL (polled every 5 ms)
  feed JSON  the outbox commit -> the result in /api/feed?since=... (polled every 20 ms, as a logged-in
             physician)

The overview page itself polls the feed every 3 s (front/static/front/feed.js), which adds 0-3 s
(1.5 s on average) on top of the feed JSON figure before a clinician's screen shows the row; that
figure is printed too. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from tests.benchmarks import support
from tests.benchmarks.bench_dashboard import _up, login
from tests.benchmarks.bench_device import Daemon

DB = "steth_bench_e2e"
DEVICE = "pi-e2e"
FEED_POLL_S = 3.0  # front/static/front/feed.js POLL_MS


def prepare_database(env: dict[str, str], fill: int) -> None:
    from tests.benchmarks import bench_dashboard

    have = 0
    if support.database_exists(DB):
        try:
            have = int(support.psql("SELECT count(*) FROM clinic_result WHERE ingested_by = 'bench'", DB, capture=True))
        except RuntimeError:
            have = 0
    if have != fill:
        print(f"building {DB} with {fill:,} results ...", flush=True)
        support.recreate_database(DB)
        support.manage(env, "migrate", "--noinput")
        if fill:
            support.psql(bench_dashboard.fill_sql(fill, 1000), DB)
    else:
        support.manage(env, "migrate", "--noinput")
    support.vacuum(DB)
    support.psql(
        f"DELETE FROM clinic_result WHERE device_id IN (SELECT id FROM clinic_device WHERE device_id = '{DEVICE}')", DB
    )
    support.psql(
        "INSERT INTO clinic_clinic (slug, name, time_zone) VALUES ('e2e', 'E2E clinic', '') "
        "ON CONFLICT (slug) DO NOTHING;"
        "INSERT INTO clinic_device (device_id, name, clinic_id, auto_registered, registered_at, state, "
        f"software_version, installed_models) SELECT '{DEVICE}', '', id, false, now(), 'unknown', '', '[]' "
        "FROM clinic_clinic WHERE slug = 'e2e' ON CONFLICT (device_id) DO NOTHING",
        DB,
    )
    with tempfile.TemporaryDirectory() as tmp:
        pw = Path(tmp) / "pw"
        pw.write_text(bench_dashboard.PASSWORD)
        support.manage(env, "createuser", "dr-bench", "--role", "physician", "--password-file", str(pw), check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", type=int, default=30)
    p.add_argument("--fill", type=int, default=1_000_000, help="results already in the database")
    p.add_argument("--model", default="screening")
    args = p.parse_args(argv)
    support.stop_on_sigterm()
    print(support.machine())
    support.quiet_warning()

    import psycopg

    from device.core.audio_io import read_audio
    from device.edge.analyser import Analyser, Recording, make_entries
    from device.edge.outbox import Outbox

    recordings = [read_audio(f) for f in sorted((support.REPO / "device" / "samples").glob("*.flac"))]
    analyser = Analyser([args.model])
    analyser.warm_up()  # steth record warms up while recording
    rows = []
    with tempfile.TemporaryDirectory(prefix="steth-bench-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        log_level = "debug" if os.environ.get("BENCH_DEBUG") else "info"  # debug: every message, with its time
        env = support.dashboard_env(DB, tmp / "var", STETH_LOG_LEVEL=log_level)
        prepare_database(env, args.fill)
        broker = support.BenchBroker(tmp / "broker").start()
        subprocess.run([support.PYTHON, "-m", "dashboard.manage", "collectstatic", "--noinput"], cwd=support.REPO,
                       env=env, check=True, capture_output=True)  # fmt: skip
        port = support.free_port()
        base = f"http://127.0.0.1:{port}"
        web_log = (tmp / "gunicorn.log").open("w")
        web = subprocess.Popen(
            [str(Path(support.PYTHON).parent / "gunicorn"), "dashboard.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--threads", "2", "--error-logfile", "-"],
            cwd=support.REPO, env=env, stdout=web_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        ingest_log = (tmp / "ingest.log").open("w")
        ingest = subprocess.Popen(
            [support.PYTHON, "-m", "dashboard.manage", "ingest", "--url", broker.url, "--client-id", "svc.ingest.e2e"],
            cwd=support.REPO, env=env, stdout=ingest_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        config = tmp / "device.toml"
        outbox_path = tmp / "state" / "outbox.sqlite"
        config.write_text(
            f'device_id = "{DEVICE}"\nmode = "deliver"\nlog_level = "{log_level.upper()}"\n'
            f'[broker]\nurl = "{broker.url}"\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n'
            f'[audio]\ntransient_dir = "{tmp / "run"}"\n[models]\nrun = ["{args.model}"]\n'
            f'[outbox]\npath = "{outbox_path}"\n'
        )
        daemon = Daemon(config, dict(os.environ))
        try:
            support.wait(lambda: _up(base), 60, "gunicorn")
            support.wait(lambda: "ingest ready" in (tmp / "ingest.log").read_text(), 60, "the ingest worker")
            support.wait(lambda: daemon.ready is not None, 60, "the device daemon")
            session = login(base, "dr-bench")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Cookie": f"sessionid={session}", "X-Forwarded-Proto": "https"}
            db = psycopg.connect(support.database_url(DB), autocommit=True)
            box = Outbox(outbox_path, tmp / "run" / "outbox-audio", 64 << 20)
            for i in range(args.recordings):
                time.sleep(random.uniform(0.5, 1.5))  # the publisher's outbox poll meets results at random phases
                audio = recordings[i % len(recordings)]
                ended = time.time()  # the recording has just ended
                analyses = analyser.analyse(audio)
                entries = make_entries(analyses, Recording(audio, dt.datetime.now(dt.UTC), patient_ref="P-E2E",
                                                           site="mitral"), DEVICE, send_audio=False)  # fmt: skip
                box.add(entries)
                stored = time.time()  # the nurse sees "Saved"
                rid = entries[0].result["result_id"]
                since = urllib.parse.quote((dt.datetime.fromtimestamp(stored - 2, dt.UTC)).isoformat())
                in_db = in_feed = received = None
                deadline = time.monotonic() + 30
                next_feed = 0.0
                while time.monotonic() < deadline and (in_feed is None or in_db is None):
                    now = time.monotonic()
                    if in_db is None:
                        row = db.execute(
                            "SELECT received_at FROM clinic_result WHERE result_id = %s", (rid,)
                        ).fetchone()
                        if row:
                            in_db, received = time.time(), row[0].timestamp()
                    if in_feed is None and now >= next_feed:
                        next_feed = now + 0.02
                        conn.request("GET", f"/api/feed?since={since}", headers=headers)
                        response = conn.getresponse()
                        body = response.read()
                        if response.status != 200:
                            raise RuntimeError(f"feed answered {response.status}")
                        if any(r["id"] == rid for r in json.loads(body)["results"]):
                            in_feed = time.time()
                    time.sleep(0.005)
                if in_feed is None or in_db is None:
                    logs = "\n".join(f"--- {n}\n" + (tmp / n).read_text()[-6000:] for n in ("ingest.log", "daemon.log"))
                    where = "the feed" if in_db else "the database"
                    logs += f"\noutbox: {box.stats()}"
                    raise RuntimeError(f"result {rid} never reached {where} within 30 s\n{logs}")
                in_db = min(in_db, in_feed)  # the feed's query saw the row: it was visible by then
                rows.append((stored - ended, (received or in_db) - stored, in_db - stored, in_feed - stored))
                print(f"  {i + 1:3d}: analysis+outbox {1000 * (stored - ended):.0f} ms, "
                      f"row {1000 * (in_db - stored):.0f} ms, feed {1000 * (in_feed - stored):.0f} ms after the outbox",
                      flush=True)  # fmt: skip
            box.close()
            db.close()
        finally:
            daemon.stop()
            for proc in (ingest, web):
                proc.terminate()
                proc.wait(30)
            web_log.close()
            ingest_log.close()
            broker.stop()

    def stats(values: list[float]) -> tuple[float, float, float]:
        ms = [1000 * v for v in values]
        return support.percentile(ms, 50), support.percentile(ms, 95), max(ms)

    table_rows = []
    for name, k in (("end of recording -> outbox (analysis, fsync)", 0),
                    ("outbox -> ingest worker stamps the row (received_at)", 1),
                    ("outbox -> row visible in PostgreSQL", 2), ("outbox -> in the live feed JSON", 3)):  # fmt: skip
        table_rows.append((name, *stats([r[k] for r in rows])))
    total = [r[0] + r[3] for r in rows]
    table_rows.append(("end of recording -> in the live feed JSON", *stats(total)))
    p50, p95, worst = stats(total)
    table_rows.append(("... + the overview's 3 s poll (mean 1.5 s, at most 3 s)", p50 + 1500, p95 + 1500, worst + 3000))
    support.table(
        ["stage", "p50 ms", "p95 ms", "max ms"],
        table_rows,
        f"End to end on loopback, {len(rows)} recordings (target: <= 1,000 ms to the database and the feed)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
