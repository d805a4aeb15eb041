#!/usr/bin/env bash
# Installs everything stethoscope-edge needs on a Debian/Ubuntu machine, idempotently:
# system packages (only those missing), a virtual environment in .venv with every extra, and the
# dashboard's JavaScript libraries. Safe to run twice; the second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv      # the virtual environment
  libsndfile1       # soundfile (WAV/FLAC)
  libportaudio2     # sounddevice (live capture)
  libasound2-plugins alsa-utils  # ALSA file PCM used by the capture tests
  mosquitto mosquitto-clients    # MQTT broker for tests and the demo
  postgresql        # production database, tested
  openssl           # TLS certificates for the broker
  rsync             # audio backups (deploy/central/backup-audio.sh), tested
  chromium          # browser tests (driven by Playwright, never a downloaded browser)
  nodejs npm        # dashboard JavaScript libraries, from the npm registry
  hey               # HTTP load generator of the dashboard benchmark (BENCHMARKS.md)
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node from another source (nodesource, nvm) counts as present.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python 3.11 or newer is needed (found $("$PY" --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# Reinstall only when the declared dependencies change.
stamp=.venv/.setup-stamp
want=$( { cat pyproject.toml; cat package.json package-lock.json 2>/dev/null || true; } | sha256sum | cut -d" " -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[device,dashboard,train,dev]"
  if [ -f package.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  echo "$want" > "$stamp"
fi
# The dashboard's JavaScript libraries (npm's postinstall copies them; redo it if the copies are gone).
if [ -f package.json ] && [ ! -f dashboard/front/static/vendor/wavesurfer/wavesurfer.min.js ]; then
  [ -d node_modules/wavesurfer.js ] || npm ci --no-audit --no-fund --loglevel=error
  node scripts/vendor_static.mjs
fi
echo "setup: ready (.venv)"
