#!/usr/bin/env bash
# Set up this machine for the farm's tests and run them all (the README's test command).
# The tests start their own redis-server, sshd, Celery workers, beat, Flower, darknet and
# chromium processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh --test
# .venv/bin on PATH: the tests run the tools the `test` extra installs there (docker-compose)
PATH="$PWD/.venv/bin:$PATH" exec .venv/bin/python -m pytest -q -ra "$@"
