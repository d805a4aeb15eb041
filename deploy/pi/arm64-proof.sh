#!/usr/bin/env bash
# Proof on arm64: builds a Debian bookworm arm64 root filesystem (debootstrap + qemu-user-static),
# runs deploy/pi/install.sh inside it, classifies device/samples/*.flac there with
# `steth classify --json` as the CPU of a Raspberry Pi 4 (Cortex-A72), 5 (A76) and 3 (A53) in turn
# ($STETH_ARM64_CPUS), and compares each label and probability with the same command on this (x86-64)
# machine: labels must be equal and probabilities within 0.02 (int8 rounding).
#
#   sudo nice -n 19 deploy/pi/arm64-proof.sh [--work DIR] [--until rootfs|install] [--fresh]
#
#   --work DIR     where the root filesystem and the results go (default: $STETH_ARM64_WORK or
#                  /var/tmp/stethoscope-edge-arm64-proof, outside the checkout: the chroot gets /proc,
#                  /sys and /dev mounted); the root filesystem is reused by the next run (--fresh rebuilds it)
#   --until STAGE  stop after building the root filesystem, or after the install
#
# Needs root, network access to deb.debian.org and PyPI, and: apt-get install debootstrap
# qemu-user-static binfmt-support. Slow (emulated arm64: tens of minutes); not part of CI.
# Results: WORK/result.json, WORK/arm64-<cpu>.jsonl, WORK/x86.jsonl, WORK/install-*.log; docs/arm64-proof.md.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${STETH_ARM64_WORK:-/var/tmp/stethoscope-edge-arm64-proof}
until="" fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --work) work=$2; shift 2 ;;
    --until) until=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "arm64-proof: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "arm64-proof: run as root (debootstrap and chroot need it)" >&2; exit 1; }
mkdir -p "$work"
work=$(cd "$work" && pwd)
rootfs=$work/rootfs
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
t0=$(date +%s)
declare -A timing
stage() { echo; echo "== arm64-proof: $* ($(($(date +%s) - t0)) s)"; }
since() { echo $(($(date +%s) - $1)); }

# -- emulation: binfmt_misc with qemu-aarch64 and the F (fix-binary) flag, so the chroot needs no copy of qemu
for tool in debootstrap qemu-aarch64-static update-binfmts; do
  command -v "$tool" >/dev/null || {
    echo "arm64-proof: $tool missing: apt-get install debootstrap qemu-user-static binfmt-support" >&2; exit 1; }
done
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || {
    echo "arm64-proof: binfmt_misc cannot be mounted here (a container without it?): arm64 programs cannot" \
      "run transparently, so neither debootstrap's second stage nor a chroot can" >&2; exit 1; }
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || update-binfmts --enable qemu-aarch64
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
  echo "arm64-proof: qemu-aarch64 is registered without the F flag; a chroot cannot find the interpreter" >&2
  exit 1; }

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {  # source target
  mkdir -p "$2"; mount --bind "$1" "$2"; mounted+=("$2")
}
mounts_inside() { grep -c " $rootfs/" /proc/mounts || true; }

# -- 1. the root filesystem (cached) --------------------------------------------------------------------------
if [ "$fresh" -eq 1 ] && [ -d "$rootfs" ]; then
  [ "$(mounts_inside)" -eq 0 ] || { echo "arm64-proof: something is still mounted under $rootfs" >&2; exit 1; }
  rm -rf "$rootfs"
fi
if [ ! -f "$rootfs/.arm64-proof-rootfs" ]; then
  stage "debootstrap bookworm arm64 into $rootfs"
  s=$(date +%s)
  rm -rf "$rootfs"
  debootstrap --arch=arm64 --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror"
  timing[debootstrap]=$(since "$s")
  echo "${timing[debootstrap]}" > "$rootfs/.arm64-proof-rootfs"   # how long it took, for the report
else
  stage "reusing the root filesystem in $rootfs (--fresh rebuilds it)"
  timing[debootstrap]=$(cat "$rootfs/.arm64-proof-rootfs")
fi
[ "$until" = rootfs ] && { echo "arm64-proof: stopped after the root filesystem"; exit 0; }

bind /proc "$rootfs/proc"
bind /sys "$rootfs/sys"
bind /dev "$rootfs/dev"
bind /dev/pts "$rootfs/dev/pts"
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
# pip inside trusts the chroot's system CA bundle (it holds the host's local CAs, copied below)
in_root() {
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$@"
}
arch=$(in_root uname -m)
[ "$arch" = aarch64 ] || { echo "arm64-proof: the chroot reports $arch, not aarch64" >&2; exit 1; }

# CAs this host trusts beyond Debian's (a TLS-inspecting proxy's, a company CA) are needed inside too,
# or pip cannot reach PyPI through that proxy.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  in_root update-ca-certificates >/dev/null 2>&1
fi

# -- 2. what a field team would carry: a wheel, a provisioned bundle ----------------------------------------------
stage "building the wheel and a bundle on the host"
stash=$rootfs/tmp/steth
rm -rf "$stash"; mkdir -p "$stash/src" "$stash/wheel"
for name in pyproject.toml README.md; do cp "$repo/$name" "$stash/src/"; done
(cd "$repo" && tar --exclude=__pycache__ -cf - device converter dashboard) | tar -xf - -C "$stash/src"
"$repo/.venv/bin/python" -m pip wheel -q --no-deps -w "$stash/wheel" "$stash/src"
wheel=$(cd "$stash/wheel" && ls stethoscope_edge-*.whl)
cp -r "$repo/deploy" "$stash/deploy"
cp "$repo/README.md" "$stash/README.md"   # install.sh puts it beside the venv (the unit's Documentation=)
cp -r "$repo/device/samples" "$stash/samples"
bash "$repo/deploy/mosquitto/make-certs.sh" "$stash/broker" broker.example.org >/dev/null
"$repo/.venv/bin/python" -m device provision arm64-proof-pi --broker-dir "$stash/broker" --out "$stash/bundles" \
  --broker-url mqtts://broker.example.org:8883 2>/dev/null

# -- 3. the Pi install, inside the arm64 system ---------------------------------------------------------------------
stage "deploy/pi/install.sh inside the arm64 chroot (apt, user, venv with the device extra from PyPI)"
s=$(date +%s)
in_root bash /tmp/steth/deploy/pi/install.sh --no-systemd --bundle /tmp/steth/bundles/arm64-proof-pi \
  --source "/tmp/steth/wheel/$wheel" | tee "$work/install-1.log"
timing[install]=$(since "$s")
stage "install.sh again: every step must say unchanged"
s=$(date +%s)
in_root bash /tmp/steth/deploy/pi/install.sh --no-systemd --bundle /tmp/steth/bundles/arm64-proof-pi \
  --source "/tmp/steth/wheel/$wheel" | tee "$work/install-2.log"
timing[install_again]=$(since "$s")
grep -q "0 step(s) changed" "$work/install-2.log" || { echo "arm64-proof: the second install changed something" >&2; exit 1; }
[ "$until" = install ] && { echo "arm64-proof: stopped after the install"; exit 0; }

# -- 4. classify there (as the service user, with the service's numba cache), on each Pi's CPU, and here -------------
# Two things about emulation (details and findings in docs/arm64-proof.md):
# - qemu-user passes this host's x86 /proc/cpuinfo through. LiteRT's CPU detection (the cpuinfo library
#   under XNNPACK and ruy) finds no ARM core in it and crashes (SIGSEGV) creating the interpreter. A Pi
#   lists its cores there, so the chroot is shown what that Pi shows (as many cores as this host's
#   sysfs has), in a private mount namespace that vanishes with the command.
# - qemu's default CPU ("max") advertises every extension it emulates, SME included, which no Raspberry
#   Pi has. Each run names the CPU of a real Pi (QEMU_CPU); "max" is run too, for the record only.
cpu_part() { case "$1" in cortex-a53) echo 0xd03 ;; cortex-a76) echo 0xd0b ;; *) echo 0xd08 ;; esac; }
pi_model() {
  case "$1" in
    cortex-a53) echo "Raspberry Pi 3 Model B Plus Rev 1.3" ;;
    cortex-a76) echo "Raspberry Pi 5 Model B Rev 1.0" ;;
    *) echo "Raspberry Pi 4 Model B Rev 1.1" ;;
  esac
}
write_cpuinfo() {  # cpu file
  local n
  for ((n = 0; n < $(nproc); n++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$n"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' \
      "$(cpu_part "$1")"
  done > "$2"
  printf 'Revision\t: c03111\nModel\t\t: %s\n' "$(pi_model "$1")" >> "$2"
}
in_pi() {  # cpu command...
  local cpu=$1; shift
  write_cpuinfo "$cpu" "$stash/cpuinfo"
  # shellcheck disable=SC2016 # expanded by the inner bash
  unshare --mount --propagation private -- bash -c 'mount --bind "$1" "$2/proc/cpuinfo" && exec "${@:3}"' _ \
    "$stash/cpuinfo" "$rootfs" chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    HOME=/root LANG=C.UTF-8 QEMU_CPU="$cpu" "$@"
}
classify_as_steth() {  # cpu output
  in_pi "$1" /usr/sbin/runuser -u steth -- /usr/bin/env NUMBA_CACHE_DIR=/var/cache/steth/numba \
    /opt/stethoscope-edge/.venv/bin/steth classify --json /tmp/steth/samples > "$2"
}
ls "$repo"/device/models/*.tflite >/dev/null 2>&1 || {
  echo "arm64-proof: no shipped model in device/models/ (run again once there is one)" >&2; exit 1; }
chmod -R a+rX "$stash/samples"
cpus=${STETH_ARM64_CPUS:-cortex-a72 cortex-a76 cortex-a53}
first=1
for cpu in $cpus max; do
  stage "steth classify --json on arm64, QEMU_CPU=$cpu (user steth)"
  s=$(date +%s)
  classify_as_steth "$cpu" "$work/arm64-$cpu.jsonl" || echo "arm64-proof: classify failed on $cpu (exit $?)"
  timing[classify_arm64_$cpu]=$(since "$s")
  if [ "$first" -eq 1 ]; then  # again, with numba's cache warm: what a running Pi sees
    s=$(date +%s)
    classify_as_steth "$cpu" "$work/arm64-$cpu-warm.jsonl" || true
    timing[classify_arm64_${cpu}_warm]=$(since "$s")
    first=0
  fi
done
stage "steth classify --json on $(uname -m) (this machine)"
s=$(date +%s)
(cd "$repo" && .venv/bin/steth classify --json device/samples) > "$work/x86.jsonl"
timing[classify_x86]=$(since "$s")

versions=$(in_root /opt/stethoscope-edge/.venv/bin/python -c '
import platform, importlib.metadata as m
print(platform.machine(), platform.python_version(), *(f"{p}={m.version(p)}" for p in
      ("ai-edge-litert", "numpy", "scipy", "librosa", "numba")))')
timings=""
for k in "${!timing[@]}"; do timings+="\"$k\": ${timing[$k]}, "; done
timings="{${timings%, }}"

# -- 5. compare: every Pi CPU must agree with x86 (labels equal, probabilities within 0.02) ----------------------------
stage "comparing"
"$repo/.venv/bin/python" - "$work" "$versions" "$timings" "$cpus" "$(qemu-aarch64-static --version | head -n 1)" <<'EOF'
import json, sys
from pathlib import Path

work, versions, timings = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
cpus, qemu = sys.argv[4].split(), sys.argv[5]


def load(name):
    path = work / name
    lines = path.read_text().splitlines() if path.exists() else []
    return {Path(r["file"]).name: r for r in map(json.loads, lines)}


x86 = load("x86.jsonl")
report = {"arm64": versions, "qemu": qemu, "timings_s": timings, "cpus": {}}
ok = len(x86) > 0
for cpu in [*cpus, "max"]:
    arm, rows, cpu_ok = load(f"arm64-{cpu}.jsonl"), [], True
    for name in sorted(x86):
        a, x = arm.get(name), x86[name]
        if a is None:
            rows.append({"file": name, "ok": False, "why": "missing on arm64"})
            cpu_ok = False
            continue
        diff = max(abs(a["probabilities"][k] - x["probabilities"][k]) for k in x["probabilities"])
        same_model = a["model"]["sha256"] == x["model"]["sha256"]
        good = a["label"] == x["label"] and diff <= 0.02 and same_model
        cpu_ok &= good
        rows.append({"file": name, "label_x86": x["label"], "label_arm64": a["label"],
                     "p_x86": x["probabilities"], "p_arm64": a["probabilities"], "max_abs_diff": round(diff, 6),
                     "hr_x86": x.get("heart_rate_bpm"), "hr_arm64": a.get("heart_rate_bpm"),
                     "model": x["model"]["name"], "same_model": same_model, "ok": good})
    judged = cpu != "max"  # the emulator's everything-on CPU is no Pi: recorded, not judged
    if judged:
        ok &= cpu_ok
    report["cpus"][cpu] = {"ok": cpu_ok, "judged": judged, "files": rows}
    worst = max((r.get("max_abs_diff", 1.0) for r in rows), default=1.0)
    print(f"{cpu:>11}: {'agrees' if cpu_ok else 'DIFFERS'} (largest probability difference {worst:.4f})"
          + ("" if judged else " [not judged]"))
    for r in rows:
        print("   ", json.dumps(r))
report["ok"] = ok
(work / "result.json").write_text(json.dumps(report, indent=2))
print("arm64-proof:", "PASS" if ok else "FAIL", versions, qemu, timings)
sys.exit(0 if ok else 1)
EOF
