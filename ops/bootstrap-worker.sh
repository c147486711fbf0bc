#!/usr/bin/env bash
# Make a fresh Debian machine a farm worker host, as the inventory describes it.
#
# Usage (as root, from a checkout of the project copied to the new host):
#   ops/bootstrap-worker.sh --host NAME --inventory FILE --redis-url URL \
#       [--authorize HEAD_KEY.pub] [--no-start]
#
#   --host        this machine's name in the inventory (lily2, augmentation, …)
#   --inventory   the farm's inventory (ops/inventory.example.yaml shows the format)
#   --redis-url   the head's Redis, with its password: redis://:PASSWORD@head:6379/0
#                 (or set FARM_REDIS_URL instead, to keep it out of the process list)
#   --authorize   a public key the head logs in with (appended to ~farm/.ssh/authorized_keys)
#   --no-start    enable the units without starting them
#
# What it does, each step safe to run again:
#   1. apt packages: python3, venv, darknet (Debian's CPU build), coreutils, rsync, sshd
#   2. a `farm` system user (login shell bash: the farm quotes remote commands for a
#      POSIX shell), owning the data dir from the inventory
#   3. /opt/farm/src (this checkout) and a venv at /opt/farm/venv with the project
#   4. /etc/farm/farm.env (0640 root:farm: it holds the Redis password) and, from the
#      inventory's plan for this host, /etc/farm/worker-<instance>.env
#   5. systemd units from ops/systemd, and farm-worker@<instance> enabled (and started)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/farm
ETC=/etc/farm
HOST="" INVENTORY="" REDIS_URL=${FARM_REDIS_URL:-} AUTHORIZE="" START=yes

say() { echo "bootstrap-worker: $*"; }
die() { echo "bootstrap-worker: $*" >&2; exit 1; }
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --host) HOST=${2:?--host needs a name}; shift 2 ;;
    --inventory) INVENTORY=${2:?--inventory needs a file}; shift 2 ;;
    --redis-url) REDIS_URL=${2:?--redis-url needs a URL}; shift 2 ;;
    --authorize) AUTHORIZE=${2:?--authorize needs a .pub file}; shift 2 ;;
    --no-start) START=no; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bootstrap-worker: unknown argument $1" >&2; usage 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 …): it installs packages and systemd units"
[ -r /etc/debian_version ] || die "this script is for Debian (no /etc/debian_version)"
[ -n "$HOST" ] || die "--host NAME is required (the name of this machine in the inventory)"
[ -f "$INVENTORY" ] || die "--inventory FILE is required and must exist (got '${INVENTORY}')"
case "$REDIS_URL" in
  redis://:*@*|rediss://*) ;;
  "") die "--redis-url is required (or FARM_REDIS_URL): redis://:PASSWORD@head:6379/0" ;;
  *) die "--redis-url must carry the password: redis://:PASSWORD@head:6379/0" ;;
esac
[ -z "$AUTHORIZE" ] || [ -f "$AUTHORIZE" ] || die "--authorize $AUTHORIZE: no such file"

say "1/5 packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq python3 python3-venv python3-pip darknet coreutils rsync \
  openssh-server >/dev/null

say "2/5 user farm"
if ! id farm >/dev/null 2>&1; then
  useradd --system --create-home --home-dir /home/farm --shell /bin/bash farm
fi
if [ -n "$AUTHORIZE" ]; then
  install -d -m 0700 -o farm -g farm /home/farm/.ssh
  touch /home/farm/.ssh/authorized_keys
  if ! grep -qxF "$(cat "$AUTHORIZE")" /home/farm/.ssh/authorized_keys; then
    cat "$AUTHORIZE" >> /home/farm/.ssh/authorized_keys
  fi
  chown farm:farm /home/farm/.ssh/authorized_keys
  chmod 0600 /home/farm/.ssh/authorized_keys
fi

say "3/5 project in $PREFIX"
install -d -m 0755 "$PREFIX"
rsync -a --delete --exclude .git --exclude '*.egg-info' --exclude __pycache__ \
  "$SRC/" "$PREFIX/src/"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check "$PREFIX/src"

say "4/5 settings in $ETC"
install -d -m 0750 -o root -g farm "$ETC"
install -m 0640 -o root -g farm "$INVENTORY" "$ETC/inventory.yaml"
(
  umask 027
  {
    echo "# Written by ops/bootstrap-worker.sh; read by every farm unit of this host."
    echo "FARM_REDIS_URL=$REDIS_URL"
    echo "FARM_INVENTORY=$ETC/inventory.yaml"
  } > "$ETC/farm.env.new"
)
chgrp farm "$ETC/farm.env.new"
mv "$ETC/farm.env.new" "$ETC/farm.env"
rm -f "$ETC"/worker-*.env
plan=$("$PREFIX/venv/bin/farm" hosts plan "$HOST" --inventory "$ETC/inventory.yaml" \
  --write-env "$ETC") || die "the inventory has no usable plan for $HOST (message above)"
chgrp farm "$ETC"/worker-*.env
chmod 0640 "$ETC"/worker-*.env
instances=$(echo "$plan" | awk '{print $1}')
[ -n "$instances" ] || die "the inventory gives $HOST no worker (no roles?)"
data_dir=$(sed -n 's/^FARM_DATA_DIR=//p' "$ETC"/worker-*.env | head -1)
install -d -m 0755 -o farm -g farm "$data_dir"

say "5/5 systemd units"
install -m 0644 "$SRC"/ops/systemd/farm-worker@.service /etc/systemd/system/
systemctl daemon-reload
units=""
for instance in $instances; do units="$units farm-worker@$instance.service"; done
# shellcheck disable=SC2086  # one word per unit
if [ "$START" = yes ]; then
  systemctl enable --now $units
else
  systemctl enable $units
fi

say "done: $HOST runs$units (data in $data_dir)"
say "next, on the head: add this host key to the farm's known_hosts after comparing"
say "  its fingerprint: $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null || echo 'no ed25519 host key yet')"
say "  then: farm hosts check $HOST && farm hosts workers"
