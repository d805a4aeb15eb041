#!/usr/bin/env bash
# The demo, end to end on this machine: installs what is missing (scripts/setup.sh), then starts
#   - a Mosquitto broker with the production configuration (TLS, passwords, ACLs; deploy/mosquitto/),
#   - the dashboard (SQLite) with a physician's and a nurse's login,
#   - an ingest worker (broker -> dashboard database),
#   - a device daemon that replays the bundled real recordings (device/samples/, copied to var/demo/replay/;
#     add WAV/FLAC files there while it runs) as if from a stethoscope: two patients' exams, by site
#     (device/samples/demo-exams.csv), each "recorded" when it is replayed,
# and prints the dashboard's address and a nurse's and a physician's login. Results appear within a
# minute. A part that dies is started again after a short backoff (as systemd does in production),
# and the demo says so. Ctrl-C stops every process it started, also with the output piped (| tee demo.log). Everything
# lives in var/demo/ (gitignored); each run starts with empty data and only the bundled recordings but
# keeps the certificates, accounts and logins (--keep keeps the data too; --reset forgets everything).
#
#   bash scripts/demo.sh [--keep | --reset] [--no-setup]
#   ports: DEMO_HTTP_PORT (8000), DEMO_MQTT_TLS_PORT (18883), DEMO_MQTT_PORT (11883, loopback)
#   --no-setup: skip scripts/setup.sh (installed already); DEMO_VENV: the virtualenv (.venv), DEMO_DIR: var/demo
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

V=${DEMO_DIR:-$repo/var/demo}
keep=0 setup=1
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    --reset) rm -rf "$V" ;;
    --no-setup) setup=0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $arg (--keep, --reset, --no-setup)" >&2; exit 2 ;;
  esac
done

[ "$setup" -eq 0 ] || bash scripts/setup.sh

VENV=${DEMO_VENV:-$repo/.venv}
STETH=$VENV/bin/steth
PY=$VENV/bin/python
DEVICE=demo-pi-1
mkdir -p "$V/logs"
chmod 700 "$V"

ls device/models/*.tflite >/dev/null 2>&1 || {
  echo "demo: no shipped model in device/models/ (the device cannot classify without one)" >&2; exit 1; }

# A port: the wanted one when free, else any free one (said out loud).
port() {
  "$PY" - "$1" "$2" <<'EOF'
import socket, sys
want, name = int(sys.argv[1]), sys.argv[2]
def free(p):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", p)); return True
        except OSError:
            return False
if free(want):
    print(want)
else:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    print(f"demo: port {want} is busy; using {p} for {name}", file=sys.stderr)
    print(p)
EOF
}
HTTP_PORT=$(port "${DEMO_HTTP_PORT:-8000}" "the dashboard")
TLS_PORT=$(port "${DEMO_MQTT_TLS_PORT:-18883}" "MQTT over TLS")
MQTT_PORT=$(port "${DEMO_MQTT_PORT:-11883}" "MQTT on loopback")

pids=() names=()
# Ctrl-C with the output piped (| tee demo.log) ends tee too: the next line written would kill this
# script by SIGPIPE before it stopped anything. So SIGPIPE is ignored (a failed write is only an error)
# and what stop_all says may go nowhere.
trap '' PIPE
say() { echo "$@" 2>/dev/null || true; }
stop_all() {
  set +e  # stop everything, whatever fails on the way
  trap '' INT TERM HUP  # a second Ctrl-C must not cut the stopping short and leave parts running
  trap - EXIT
  local i
  [ "${#pids[@]}" -gt 0 ] && say && say "demo: stopping ${names[*]}"
  # mirror order, one at a time: the device first (it says offline), the broker last; each part is a
  # process group of its own (setsid), and the whole group is stopped
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM -- "-${pids[i]}" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 -- "-${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-${pids[i]}" 2>/dev/null
    wait "${pids[i]}" 2>/dev/null
  done
  say "demo: stopped; logs in $V/logs/"
}
trap stop_all EXIT
trap 'exit 130' INT TERM HUP
start() {  # name, command... (output to $V/logs/NAME.log)
  local name=$1; shift
  : > "$V/logs/$name.log"
  # Its own session: Ctrl-C reaches only this script, which stops the parts in order (the broker last).
  setsid "$@" >> "$V/logs/$name.log" 2>&1 < /dev/null &
  pids+=($!) names+=("$name") cmds+=("$(printf '%q ' "$@")") restarts+=(0) started+=("$SECONDS")
}
# -- supervision: a part that dies is started again, as systemd's Restart=on-failure does in production,
# after a short backoff (1 s, then one more second per quick restart, at most 5 s; a part that ran a minute
# starts over at 1 s), said on the terminal and in the part's own log; the other parts keep running.
cmds=() restarts=() started=()
supervise() {
  local i code delay
  for i in "${!pids[@]}"; do
    kill -0 "${pids[i]}" 2>/dev/null && continue
    code=0; wait "${pids[i]}" 2>/dev/null || code=$?
    [ $((SECONDS - started[i])) -ge 60 ] && restarts[i]=0
    restarts[i]=$((restarts[i] + 1))
    delay=$((restarts[i] < 5 ? restarts[i] : 5))
    echo "demo: ${names[i]} (pid ${pids[i]}) exited with code $code; restarting it in $delay s (restart ${restarts[i]}); the end of its log:" >&2
    tail -n 5 "$V/logs/${names[i]}.log" | sed 's/^/    /' >&2
    [ "${names[i]}" = broker ] && tail -n 5 "$V/logs/mosquitto.log" 2>/dev/null | sed 's/^/    /' >&2
    echo "$(date -u +%FT%TZ) demo: ${names[i]} exited with code $code; restarted by the demo after $delay s (restart ${restarts[i]})" >> "$V/logs/${names[i]}.log"
    sleep "$delay"
    eval "setsid ${cmds[i]} >> \"\$V/logs/${names[i]}.log\" 2>&1 < /dev/null &"
    pids[i]=$! started[i]=$SECONDS
    echo "demo: ${names[i]} restarted (pid ${pids[i]})" >&2
  done
}
wait_port() {  # port, name, log
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "demo: $2 did not start; the end of its log:" >&2; tail -n 20 "$3" >&2; exit 1
}

# -- the broker: certificates, accounts, the production config with demo paths and ports -----------------
B=$V/broker
if [ ! -f "$B/server.crt" ]; then
  bash deploy/mosquitto/make-certs.sh "$B" localhost 127.0.0.1 > /dev/null
fi
cp deploy/mosquitto/steth.acl "$B/acl"
[ -f "$B/passwd" ] || install -m 0640 /dev/null "$B/passwd"                    # devices (TLS listener)
[ -f "$B/passwd-services" ] || install -m 0640 /dev/null "$B/passwd-services"  # services (loopback listener)
if [ ! -f "$V/bundles/$DEVICE/device.toml" ]; then
  "$STETH" provision "$DEVICE" --broker-dir "$B" --out "$V/bundles" --broker-url "mqtts://localhost:$TLS_PORT" \
    --password-file --install-dir "$V/bundles/$DEVICE" --send-audio > /dev/null 2>&1
fi
# the ingest account lives in passwd-services (an older demo kept it in passwd: given a new one there)
grep -q '^svc\.ingest:' "$B/passwd-services" 2>/dev/null ||
  "$STETH" provision --service ingest --broker-dir "$B" --out "$V/bundles" --rotate > /dev/null
[ "$keep" -eq 1 ] || rm -rf "$B/data" "$V/device" "$V/dashboard" "$V/replay"  # replay: only the bundled ones
mkdir -p "$B/data"
run_as=""; [ "$(id -u)" -eq 0 ] && run_as="user root"   # else Mosquitto drops to a user who cannot read var/
sed -e "s#/etc/mosquitto/steth/#$B/#" \
    -e "s#^listener 8883\$#listener $TLS_PORT 127.0.0.1#" \
    -e "s#^listener 1883 127.0.0.1\$#listener $MQTT_PORT 127.0.0.1#" \
    -e "s#^pid_file .*#pid_file $B/mosquitto.pid#" \
    -e "s#^persistence_location .*#persistence_location $B/data/#" \
    -e "s#^log_dest file .*#log_dest file $V/logs/mosquitto.log#" \
    -e "s#^user mosquitto\$#$run_as#" \
    deploy/mosquitto/mosquitto.conf > "$B/mosquitto.conf"
start broker "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$B/mosquitto.conf"
wait_port "$MQTT_PORT" broker "$V/logs/broker.log"   # the loopback listener: a probe there makes no TLS noise

# -- the dashboard: SQLite, migrations, the demo device and login ------------------------------------------
export DEBUG=1 STETH_VAR_DIR=$V/dashboard
"$STETH" dashboard migrate --noinput -v 0
"$STETH" dashboard registerdevice "$DEVICE" --clinic demo --clinic-name "Demo clinic" \
  --name "Demo kit replaying PhysioNet recordings" > /dev/null
if [ ! -s "$V/login-password" ]; then
  (umask 077; "$PY" -c 'import secrets; print(secrets.token_urlsafe(12))' > "$V/login-password")
fi
"$STETH" dashboard createuser demo --role physician --role admin --password-file "$V/login-password" > /dev/null
if [ ! -s "$V/nurse-password" ]; then
  (umask 077; "$PY" -c 'import secrets; print(secrets.token_urlsafe(12))' > "$V/nurse-password")
fi
"$STETH" dashboard createuser nurse --role nurse --clinic demo --password-file "$V/nurse-password" > /dev/null
start dashboard "$STETH" dashboard runserver "127.0.0.1:$HTTP_PORT" --noreload
wait_port "$HTTP_PORT" dashboard "$V/logs/dashboard.log"

# -- the ingest worker: the loopback listener, with the ingest account ---------------------------------------
start ingest env STETH_MQTT_URL="mqtt://127.0.0.1:$MQTT_PORT" STETH_MQTT_USERNAME=svc.ingest \
  STETH_MQTT_PASSWORD_FILE="$V/bundles/svc.ingest/mqtt-password" STETH_LOG_LEVEL=info \
  "$STETH" dashboard ingest --client-id svc.ingest.demo-1

# -- the device: the provisioned bundle, replaying the bundled recordings at a stethoscope's pace ------------
mkdir -p "$V/device" "$V/replay"
# the folder the device replays (new files are picked up as they appear): the bundled recordings, and
# the manifest making them two patients' exams by site
cp -p device/samples/*.flac "$V/replay/"
cp device/samples/demo-exams.csv "$V/replay/manifest.csv"
# Audio waiting for upload stays in RAM, as on the Pi (/run/steth there)
transient=$V/device/transient
[ -d /dev/shm ] && [ -w /dev/shm ] && transient=/dev/shm/stethoscope-edge-demo-$(id -u)
[ "$keep" -eq 1 ] || rm -rf "$transient"
start device env STETH_DEVICE__MODE=replay STETH_DEVICE__AUDIO__SOURCE=replay \
  STETH_DEVICE__AUDIO__REPLAY_PATH="$V/replay" STETH_DEVICE__AUDIO__REPLAY_MANIFEST="$V/replay/manifest.csv" \
  STETH_DEVICE__AUDIO__REPLAY_RECORDED_AT=replayed \
  STETH_DEVICE__AUDIO__TRANSIENT_DIR="$transient" STETH_DEVICE__OUTBOX__PATH="$V/device/outbox.sqlite" \
  STETH_DEVICE__BROKER__URL="mqtts://localhost:$TLS_PORT" \
  "$STETH" device run --config "$V/bundles/$DEVICE/device.toml"

cat <<EOF

  stethoscope-edge demo is running.

    Dashboard:  http://127.0.0.1:$HTTP_PORT/
    Log in as:  physician  user: demo    password: $(cat "$V/login-password")   (also admin)
                nurse      user: nurse   password: $(cat "$V/nurse-password")   (clinic "Demo clinic")

  The device $DEVICE replays $(find device/samples -name "*.flac" | wc -l) real recordings (PhysioNet 2016, ODC-BY) as if from
  a stethoscope, as two patients' exams (P-DEMO-01, P-DEMO-02; sites: device/samples/demo-exams.csv);
  each result (and its recording) travels over MQTT with TLS to the broker, then to the ingest worker
  and the dashboard, whose live feed shows it within seconds. Add recordings to the
  replay by copying WAV/FLAC files into $V/replay/. Screening support, not a diagnosis.
  Logs: $V/logs/ (the broker's own: mosquitto.log). A part that dies is restarted, as systemd
  would. Ctrl-C stops everything.

EOF

# Report results as they land; restart a part that dies (supervise, above).
db=$V/dashboard/dashboard.sqlite3
seen=0
while true; do
  supervise
  n=$("$PY" -c 'import sqlite3, sys
try:
    print(sqlite3.connect(sys.argv[1]).execute("select count(*) from clinic_result").fetchone()[0])
except Exception:
    print(0)' "$db" 2>/dev/null || echo 0)
  if [ "$n" != "$seen" ]; then echo "demo: $n result(s) on the dashboard"; seen=$n; fi
  sleep 2
done
