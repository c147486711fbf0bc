#!/usr/bin/env bash
# Back up the farm's Redis (queued runs, leases, run state and logs) into one archive:
#   <out-dir>/farm-redis-<UTC time>.tar.gz  holding dump.rdb (a fresh BGSAVE snapshot:
#   one consistent point in time, which copying a live AOF is not), MANIFEST.sha256 and
#   INFO.txt. ops/redis-restore.sh rebuilds the AOF from it when Redis runs with AOF.
# Run it on the machine whose disk holds Redis's data dir (the head).
#
# Usage: redis-backup.sh [-h HOST] [-p PORT] [-d DATA_DIR] [-t TIMEOUT] OUT_DIR
#   The password, if any, comes from REDISCLI_AUTH (never on the command line), e.g.
#   REDISCLI_AUTH=$(cat /etc/farm/redis.password) ops/redis-backup.sh /var/backups/farm
#   -d is needed only where CONFIG is disabled; by default Redis is asked for its dir.
set -euo pipefail

HOST=127.0.0.1 PORT=6379 DATA_DIR="" TIMEOUT=300
die() { echo "redis-backup: $*" >&2; exit 1; }
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while getopts "h:p:d:t:" opt; do
  case "$opt" in
    h) HOST=$OPTARG ;; p) PORT=$OPTARG ;; d) DATA_DIR=$OPTARG ;; t) TIMEOUT=$OPTARG ;;
    *) usage 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage 2
OUT_DIR=$1
command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"

cli() { redis-cli -h "$HOST" -p "$PORT" --no-auth-warning "$@"; }
info() { cli INFO persistence | tr -d '\r' | sed -n "s/^$1://p"; }
config() { cli CONFIG GET "$1" | tr -d '\r' | sed -n 2p; }

pong=$(cli PING 2>&1 | tr -d '\r') || true
[ "$pong" = PONG ] || die "Redis at $HOST:$PORT did not answer PING ($pong); is it running, and is REDISCLI_AUTH set?"

if [ -z "$DATA_DIR" ]; then
  DATA_DIR=$(config dir) || true
  [ -n "$DATA_DIR" ] || die "could not ask Redis for its data dir (CONFIG disabled?); pass -d DATA_DIR"
fi
[ -d "$DATA_DIR" ] || die "data dir $DATA_DIR is not on this machine; run this where Redis's files are, or pass -d"
dbfilename=$(config dbfilename); dbfilename=${dbfilename:-dump.rdb}
aof=$(config appendonly); aofdir=$(config appenddirname); aofdir=${aofdir:-appendonlydir}
aoffile=$(config appendfilename); aoffile=${aoffile:-appendonly.aof}

mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
archive="$OUT_DIR/farm-redis-$stamp.tar.gz"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. A fresh snapshot. LASTSAVE counts whole seconds: wait for the next one first, so
#    that a save finishing within the same second as the last one is still seen.
before=$(cli LASTSAVE | tr -d '\r')
while [ "$(date +%s)" -le "$before" ]; do sleep 0.2; done
reply=$(cli BGSAVE SCHEDULE | tr -d '\r')
case "$reply" in
  *"started"*|*"scheduled"*) ;;
  *) die "BGSAVE was refused: $reply" ;;
esac
deadline=$(( $(date +%s) + TIMEOUT ))
until [ "$(cli LASTSAVE | tr -d '\r')" -gt "$before" ] && [ "$(info rdb_bgsave_in_progress)" = 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "BGSAVE did not finish within ${TIMEOUT}s (see Redis's log)"
  sleep 0.2
done
[ "$(info rdb_last_bgsave_status)" = ok ] || die "BGSAVE failed (rdb_last_bgsave_status is not ok); see Redis's log"
cp -p "$DATA_DIR/$dbfilename" "$work/dump.rdb"

# 2. What the archive holds, and a checksum of every file for redis-restore.sh.
{
  echo "redis_version=$(cli INFO server | tr -d '\r' | sed -n 's/^redis_version://p')"
  echo "taken_at=$stamp"
  echo "source=$HOST:$PORT $DATA_DIR"
  echo "keys=$(cli INFO keyspace | tr -d '\r' | awk -F'[:=,]' '/^db/ {n += $3} END {print n + 0}')"
  echo "appendonly=$aof"
  echo "appenddirname=$aofdir"
  echo "appendfilename=$aoffile"
  echo "dbfilename=$dbfilename"
} > "$work/INFO.txt"
(cd "$work" && find . -type f ! -name MANIFEST.sha256 -print0 | sort -z | xargs -0 sha256sum) \
  > "$work/MANIFEST.sha256"

tar -C "$work" -czf "$archive.part" .
mv "$archive.part" "$archive"
echo "redis-backup: wrote $archive ($(du -h "$archive" | cut -f1); $(sed -n 's/^keys=//p' "$work/INFO.txt") keys)"
