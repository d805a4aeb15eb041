"""Benchmark: dashboard page latency with 1,000,000 results and 1,000 devices in PostgreSQL.

    .venv/bin/python -m tests.benchmarks.bench_dashboard [--results 1000000] [--devices 1000] [--rebuild]
        [--requests 200] [--concurrency 1,4] [--explain]

Builds (once; reused while its row counts match, --rebuild to start over) the throwaway database
``steth_bench``: 20 clinics, the devices, 20,000 patients with 50 results each spread over 90 days
(70 % normal, 20 % abnormal, 10 % unsure; a third of those reviewed), filled with generate_series SQL.
Serves the dashboard with gunicorn as deploy/central/steth-web.service does (DEBUG off, 2 x cores + 1
workers, 2 threads, collected static files, behind a TLS proxy: the load generator sends
X-Forwarded-Proto: https), logs in as a physician (who sees every result: the heaviest queries) and as
a nurse (one clinic), and measures each page with `hey` (Debian package hey), after a warm-up: the
overview, the live feed JSON (as the page polls it, with ?since=), a patient's history and a
recording's detail page. ``--explain`` prints the query plans of the pages' main queries.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.benchmarks import support

DB = "steth_bench"
CLINICS = 20
PATIENTS = 20_000
PASSWORD = "bench-password-for-a-throwaway-database"  # a throwaway database on loopback


def fill_sql(results: int, devices: int) -> str:
    """Clinics, devices and results in three INSERT ... SELECT generate_series statements."""
    return f"""
    INSERT INTO clinic_clinic (slug, name, time_zone)
        SELECT 'clinic-' || lpad(c::text, 2, '0'), 'Clinic ' || c, '' FROM generate_series(1, {CLINICS}) c;
    INSERT INTO clinic_device (device_id, name, clinic_id, auto_registered, registered_at, state, last_seen,
                               status_at, software_version, installed_models, outbox, uptime_s)
        SELECT 'pi-' || lpad(d::text, 4, '0'), 'Cart ' || d,
               (SELECT id FROM clinic_clinic WHERE slug = 'clinic-' || lpad((d % {CLINICS} + 1)::text, 2, '0')),
               false, now() - interval '200 days', CASE WHEN d % 7 = 0 THEN 'offline' ELSE 'online' END,
               now() - (d % 600) * interval '1 second', now() - (d % 600) * interval '1 second', '0.1.0',
               '[{{"name": "screening", "version": "1.0.0", "sha256": "{"0" * 64}"}}]'::jsonb,
               '{{"pending_results": 0, "pending_audio": 0, "bytes": 0, "dropped_results": 0,
                 "dropped_audio": 0}}'::jsonb,
               86400.0
        FROM generate_series(1, {devices}) d;
    CREATE TEMP TABLE bench_devices AS
        SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, device_id, clinic_id FROM clinic_device;
    INSERT INTO clinic_result (result_id, source, device_id, clinic_id, uploaded_by_id, recorded_at, received_at,
        patient_ref, location, duration_s, sample_rate, task, model_name, model_version, model_sha256, label,
        probabilities, windows, heart_rate_bpm, quality_score, quality_ok, quality_issues, audio_declared,
        software_version, message, ingested_by, reviewed)
    SELECT r.id, 'device', d.id, d.clinic_id, NULL, r.at - interval '17 seconds', r.at, r.patient, r.site, 15.0,
           4000, 'screening', 'screening', '1.0.0', '{"0" * 64}', r.label, r.probs, r.windows, r.hr, 0.9,
           r.label <> 'unsure', CASE WHEN r.label = 'unsure' THEN '["too noisy"]'::jsonb ELSE '[]'::jsonb END,
           NULL, '0.1.0',
           jsonb_build_object('schema_version', 1, 'result_id', r.id, 'device_id', d.device_id,
               'recorded_at', to_char((r.at - interval '17 seconds') AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
               'patient_ref', r.patient, 'site', r.site, 'duration_s', 15.0, 'sample_rate', 4000, 'task', 'screening',
               'model', jsonb_build_object('name', 'screening', 'version', '1.0.0', 'sha256', '{"0" * 64}'),
               'label', r.label, 'probabilities', r.probs, 'windows', r.windows, 'heart_rate_bpm', r.hr,
               'quality', jsonb_build_object('score', 0.9, 'ok', r.label <> 'unsure', 'issues', '[]'::jsonb),
               'audio', NULL, 'software_version', '0.1.0'),
           'bench', false
    FROM (
        SELECT n,
               (substr(md5(n::text), 1, 8) || '-' || substr(md5(n::text), 9, 4) || '-4' || substr(md5(n::text), 14, 3)
                || '-8' || substr(md5(n::text), 18, 3) || '-' || substr(md5(n::text), 21, 12))::uuid AS id,
               now() - interval '90 days' * (1 - n::float / {results}) AS at,
               'P-' || lpad((n % {PATIENTS})::text, 6, '0') AS patient,
               (ARRAY['aortic', 'pulmonic', 'tricuspid', 'mitral'])[n % 4 + 1] AS site,
               CASE WHEN n % 10 < 7 THEN 'normal' WHEN n % 10 < 9 THEN 'abnormal' ELSE 'unsure' END AS label,
               '{{"normal": 0.3, "abnormal": 0.7}}'::jsonb AS probs,
               (SELECT jsonb_agg(jsonb_build_object('start_s', w * 2.5,
                        'probabilities', jsonb_build_object('normal', 0.3, 'abnormal', 0.7)))
                FROM generate_series(0, 4) w) AS windows,
               60 + (n % 50)::float AS hr
        FROM generate_series(1, {results}) n
    ) r
    JOIN bench_devices d ON d.k = (r.n % {devices}) AND d.clinic_id IS NOT NULL;
    """


def build(env: dict[str, str], results: int, devices: int) -> None:
    print(f"building {DB}: {results:,} results, {devices:,} devices ...", flush=True)
    t0 = time.perf_counter()
    support.recreate_database(DB)
    support.manage(env, "migrate", "--noinput")
    # Patient p's results all come from devices of one clinic: p % 20 == n % 20 == device % 20.
    support.psql(fill_sql(results, devices), DB)
    with tempfile.TemporaryDirectory() as tmp:
        pw = Path(tmp) / "pw"
        pw.write_text(PASSWORD)
        support.manage(env, "createuser", "dr-bench", "--role", "physician", "--password-file", str(pw))
        support.manage(env, "createuser", "nurse-bench", "--role", "nurse", "--clinic", "clinic-03",
                       "--password-file", str(pw))  # fmt: skip
    support.psql(
        "INSERT INTO clinic_review (result_id, reviewer_id, agrees, label, note, created_at) "
        "SELECT result_id, (SELECT id FROM auth_user WHERE username = 'dr-bench'), true, "
        "CASE WHEN label = 'abnormal' THEN 'abnormal' ELSE 'inconclusive' END, '', received_at + interval '1 hour' "
        "FROM clinic_result WHERE label <> 'normal' AND abs(hashtext(result_id::text)) % 3 = 0",
        DB,
    )
    # what Review's signals keep (migration 0003)
    support.psql(
        "UPDATE clinic_result SET reviewed = true WHERE result_id IN (SELECT result_id FROM clinic_review)", DB
    )
    # what ingest does (dashboard/clinic/exams.py): the bench's results carry no exam_id, so each is an
    # exam of its own, reviewed when its result is
    support.psql(
        "INSERT INTO clinic_exam (key, exam_id, device_id, clinic_id, patient_ref, started_at, received_at, "
        "n_results, label, murmur, answer, reason, priority, reviewed) "
        "SELECT 'result/' || result_id, '', device_id, clinic_id, patient_ref, recorded_at, received_at, 1, label, "
        "'', jsonb_build_object('label', label), label || '; 1 recording', "
        "CASE label WHEN 'normal' THEN 1 WHEN 'unsure' THEN 2 ELSE 0 END, reviewed FROM clinic_result; "
        "UPDATE clinic_result r SET exam_id = e.id FROM clinic_exam e WHERE e.key = 'result/' || r.result_id",
        DB,
    )
    print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)


def counts() -> tuple[int, int]:
    try:
        r = support.psql("SELECT (SELECT count(*) FROM clinic_result), (SELECT count(*) FROM clinic_device)", DB,
                         capture=True)  # fmt: skip
    except RuntimeError:
        return 0, 0
    a, b = r.split("|")
    return int(a), int(b)


def login(base: str, username: str) -> str:
    """Log in through the login form as a browser would; returns the session cookie value."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    headers = {"X-Forwarded-Proto": "https", "Origin": base.replace("http://", "https://"),
               "Referer": base.replace("http://", "https://") + "/login/"}  # fmt: skip
    page = opener.open(urllib.request.Request(base + "/login/", headers=headers)).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    csrf = next((c.value for c in jar if c.name == "csrftoken"), "")
    assert token is not None, "no CSRF token on the login page"
    data = urllib.parse.urlencode(
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)}
    ).encode()
    req = urllib.request.Request(base + "/login/", data=data, headers={**headers, "Cookie": f"csrftoken={csrf}"})
    opener.open(req).read()
    session = next((c.value for c in jar if c.name == "sessionid"), None)
    if session is None:
        raise RuntimeError(f"login as {username} failed")
    return session


def hey(url: str, session: str, requests: int, concurrency: int) -> dict[str, float]:
    """Run hey; percentiles computed here from its per-request CSV (its own summary rounds and skips p99)."""
    proc = subprocess.run(
        ["hey", "-n", str(requests), "-c", str(concurrency), "-t", "300", "-o", "csv",
         "-H", f"Cookie: sessionid={session}", "-H", "X-Forwarded-Proto: https", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = [line.split(",") for line in proc.stdout.splitlines()[1:] if line.strip()]
    lines = [f for f in lines if f[6] == "200"]
    times = [float(f[0]) * 1000 for f in lines]
    if not times:
        raise RuntimeError(f"{url}: no successful response out of {requests}")
    span = max(float(f[7]) + float(f[0]) for f in lines) - min(float(f[7]) for f in lines)
    return {
        "failed": requests - len(times),  # errors and time-outs (gunicorn kills a worker after 120 s)
        "p50": support.percentile(times, 50),
        "p95": support.percentile(times, 95),
        "p99": support.percentile(times, 99),
        "rps": requests / span if span > 0 else 0.0,
    }


def pick_urls(base: str, clinic: str | None) -> dict[str, str]:
    """The pages, for a user who sees every clinic (None) or one: a patient and a recording they may see."""
    where = f"WHERE c.slug = '{clinic}'" if clinic else ""
    patient = support.psql(
        "SELECT c.slug || '/' || r.patient_ref FROM clinic_result r JOIN clinic_clinic c ON c.id = r.clinic_id "
        f"{where} ORDER BY r.received_at DESC OFFSET 100 LIMIT 1",
        DB,
        capture=True,
    )
    result = support.psql(
        "SELECT r.result_id FROM clinic_result r JOIN clinic_clinic c ON c.id = r.clinic_id "
        f"{where} ORDER BY r.received_at DESC OFFSET 500 LIMIT 1",
        DB,
        capture=True,
    )
    exam = support.psql(f"SELECT exam_id FROM clinic_result WHERE result_id = '{result}'", DB, capture=True)
    since = support.psql(
        "SELECT to_char((max(received_at) - interval '3 seconds') AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') FROM clinic_result',
        DB,
        capture=True,
    )
    return {
        "overview": f"{base}/",
        "live feed JSON (first load)": f"{base}/api/feed",
        "live feed JSON (poll, ?since=)": f"{base}/api/feed?since={urllib.parse.quote(since)}",
        "patient history (50 results)": f"{base}/patients/{patient}/",
        "recording detail": f"{base}/results/{result}/",
        "exam": f"{base}/exams/{exam}/",
    }


EXPLAIN = {
    "awaiting counts, before (NOT EXISTS review)": "EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FILTER "
    "(WHERE label = 'abnormal'), count(*) FILTER (WHERE label = 'unsure') FROM clinic_result r WHERE NOT EXISTS "
    "(SELECT 1 FROM clinic_review v WHERE v.result_id = r.result_id)",
    "awaiting counts, after (Result.reviewed, partial index)": "EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FILTER "
    "(WHERE label = 'abnormal'), count(*) FILTER (WHERE label = 'unsure') FROM clinic_result "
    "WHERE label IN ('abnormal', 'unsure') AND NOT reviewed",
    "feed, before (25 newest, COUNT of reviews)": "EXPLAIN (ANALYZE, BUFFERS) SELECT r.result_id, count(v.id) "
    "FROM clinic_result r LEFT JOIN clinic_review v ON v.result_id = r.result_id GROUP BY r.result_id "
    "ORDER BY r.received_at DESC LIMIT 25",
    "feed, after (25 newest)": "EXPLAIN (ANALYZE, BUFFERS) SELECT r.result_id, r.reviewed FROM clinic_result r "
    "ORDER BY r.received_at DESC LIMIT 25",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=int, default=1_000_000)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--requests", type=int, default=200, help="requests per page and concurrency level")
    p.add_argument("--concurrency", default="1,4")
    p.add_argument("--workers", type=int, default=None, help="gunicorn workers (default 2 x cores + 1)")
    p.add_argument("--explain", action="store_true")
    p.add_argument("--pages", default="", help="only pages whose name contains this")
    p.add_argument(
        "--code",
        type=Path,
        default=None,
        help="serve the dashboard from this source tree instead (e.g. `git archive <commit>` unpacked: the "
        "'before' of a fix, against the same database)",
    )
    args = p.parse_args(argv)
    if shutil.which("hey") is None:
        print("hey is not installed: sudo apt-get install hey", file=sys.stderr)
        return 2
    support.stop_on_sigterm()
    print(support.machine())
    support.quiet_warning()
    with tempfile.TemporaryDirectory(prefix="steth-bench-web-") as tmp:
        var = Path(tmp)
        env = support.dashboard_env(DB, var)
        if args.rebuild or counts() != (args.results, args.devices):
            build(env, args.results, args.devices)
        else:
            support.manage(env, "migrate", "--noinput")  # indexes added since the database was built
        support.vacuum(DB)
        n_results, n_devices = counts()
        size = support.psql(f"SELECT pg_size_pretty(pg_database_size('{DB}'))", capture=True)
        print(f"{DB}: {n_results:,} results, {n_devices:,} devices, {size}")
        if args.explain:
            for name, sql in EXPLAIN.items():
                print(f"\n-- {name}\n" + support.psql(sql, DB, capture=True))
        code = (args.code or support.REPO).resolve()
        env["PYTHONPATH"] = str(code)
        subprocess.run([support.PYTHON, "-m", "dashboard.manage", "collectstatic", "--noinput"], cwd=code, env=env,
                       check=True, capture_output=True)  # fmt: skip
        port = support.free_port()
        base = f"http://127.0.0.1:{port}"
        workers = args.workers or 2 * (os.cpu_count() or 1) + 1
        log = (var / "gunicorn.log").open("w")
        server = subprocess.Popen(
            [str(Path(support.PYTHON).parent / "gunicorn"), "dashboard.wsgi:application", "--bind",
             f"127.0.0.1:{port}", "--workers", str(workers), "--threads", "2", "--timeout", "120",
             "--access-logfile", str(var / "access.log"), "--error-logfile", "-"],
            cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        rows: list[tuple[Any, ...]] = []
        try:
            support.wait(lambda: _up(base), 60, "gunicorn")
            sessions = {
                "physician": (login(base, "dr-bench"), None),
                "nurse (1 clinic)": (login(base, "nurse-bench"), "clinic-03"),
            }
            levels = [int(c) for c in args.concurrency.split(",")]
            for role, (session, clinic) in sessions.items():
                for page, url in pick_urls(base, clinic).items():
                    if args.pages and args.pages not in page:
                        continue
                    hey(url, session, max(2, args.requests // 10), max(levels))  # warm-up: connections, caches
                    for c in levels:
                        r = hey(url, session, args.requests, c)
                        rows.append((page, role, c, r["p50"], r["p95"], r["p99"], r["rps"], r["failed"],
                                     "yes" if r["p95"] <= 150 and not r["failed"] else "NO"))  # fmt: skip
                        print(f"  {page} / {role} / c={c}: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms", flush=True)
        finally:
            server.terminate()
            server.wait(30)
            log.close()
    support.table(
        ["page", "user", "concurrent", "p50 ms", "p95 ms", "p99 ms", "req/s", "failed", "p95 <= 150 ms"],
        rows,
        f"Dashboard latency, {n_results:,} results / {n_devices:,} devices, gunicorn {workers} workers x 2 threads"
        + (f", code from {args.code}" if args.code else ""),
    )
    return 0


def _up(base: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/login/", headers={"X-Forwarded-Proto": "https"}))
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
