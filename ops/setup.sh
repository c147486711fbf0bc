#!/usr/bin/env bash
# Install what the farm needs on a Debian machine: redis-server, darknet (Debian's
# pjreddie build; a GPU host may point FARM_DARKNET at its own build), and this project.
# --test also installs the test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
pkgs="redis-server darknet coreutils"
# the tests also start a real sshd, verify systemd units, lint the shell scripts, and
# drive a real browser
[ "${1:-}" = "--test" ] && pkgs="$pkgs openssh-server rsync systemd shellcheck chromium"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
log=$(mktemp)
if ! python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".${extras}" >"$log" 2>&1; then
  cat "$log"; echo "setup: pip install failed (above)" >&2; exit 1
fi
rm -f "$log"
python3 -c "import farm, workers.app" >/dev/null
