#!/usr/bin/env bash
# The demo: installs what is missing, then runs the signal pipeline on bundled real recordings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for f in device/samples/*.flac; do
  .venv/bin/steth data pipeline "$f"
  echo
done
