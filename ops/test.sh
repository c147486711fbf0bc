#!/usr/bin/env bash
# Set up this machine for the farm's tests and run them all (the README's test command).
# Installs: redis-server, darknet (Debian's package), chromium; the project with its test
# extras. The tests start their own redis-server, workers, beat and darknet processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh --test
exec python3 -m pytest -q -ra "$@"
