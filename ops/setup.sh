#!/usr/bin/env bash
# Install what the farm needs on a Debian machine: redis-server, darknet (Debian's
# pjreddie build; a GPU host may point FARM_DARKNET at its own build), and this project in
# a virtual environment at .venv (Debian's own Python refuses system-wide pip installs).
# --test also installs what the tests use: sshd, systemd-analyze, shellcheck, chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
pkgs="redis-server darknet coreutils python3-venv"
[ "${1:-}" = "--test" ] && pkgs="$pkgs openssh-server rsync systemd shellcheck chromium"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup: apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
log=$(mktemp)
echo "setup: pip install -e .${extras} into .venv"
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}" >"$log" 2>&1; then
  cat "$log"; echo "setup: pip install failed (above)" >&2; exit 1
fi
rm -f "$log"
.venv/bin/python -c "import farm, workers.app" >/dev/null
echo "setup: done; the farm command is .venv/bin/farm"
