#!/usr/bin/env bash
# The whole test suite: lint, types, tests. Installs what it needs first (scripts/setup.sh) and starts
# the services the tests use when they are not already running. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The real data sets, when present beside the checkout (tests over them skip with a reason otherwise).
if [ -z "${STETH_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export STETH_DATA_DIR=$(cd ../shared/data && pwd)
fi
bash scripts/services.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== layers"
.venv/bin/lint-imports --no-cache
echo "== mypy"
.venv/bin/mypy device converter dashboard
echo "== pytest"
.venv/bin/python -m pytest "$@"
