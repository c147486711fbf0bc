#!/usr/bin/env bash
# Restore the farm's Redis from an archive made by ops/redis-backup.sh.
#
# Usage: redis-restore.sh [-h HOST] [-p PORT] -d DATA_DIR ARCHIVE
#   Redis must be stopped first (systemctl stop redis-server, or docker compose stop
#   redis): the script checks that nothing answers on HOST:PORT (default
#   127.0.0.1:6379) and that no process holds files in DATA_DIR.
#   The archive is checked (sha256 of every file, redis-check-rdb) before anything is
#   touched. The files it replaces are moved to DATA_DIR/before-restore-<UTC time>/.
#   It writes dump.rdb and an AOF folder whose base is that same snapshot: Redis 7 with
#   appendonly yes ignores dump.rdb and starts EMPTY when it finds no AOF.
set -euo pipefail

HOST=127.0.0.1 PORT=6379 DATA_DIR=""
die() { echo "redis-restore: $*" >&2; exit 1; }
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while getopts "h:p:d:" opt; do
  case "$opt" in
    h) HOST=$OPTARG ;; p) PORT=$OPTARG ;; d) DATA_DIR=$OPTARG ;;
    *) usage 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -ne 1 ] || [ -z "$DATA_DIR" ]; then usage 2; fi
ARCHIVE=$1
[ -f "$ARCHIVE" ] || die "archive $ARCHIVE not found"
[ -d "$DATA_DIR" ] || die "data dir $DATA_DIR does not exist (create it, owned by the redis user)"

# 1. Redis must be stopped: a running Redis would overwrite the restored files with its
#    own data when it next saves or shuts down.
if command -v redis-cli >/dev/null; then
  answer=$(redis-cli -h "$HOST" -p "$PORT" PING 2>&1 | tr -d '\r') || true
  case "$answer" in
    PONG|*NOAUTH*|*LOADING*|*denied*)
      die "Redis is running on $HOST:$PORT; stop it first (systemctl stop redis-server, or docker compose stop redis)" ;;
  esac
fi
if command -v fuser >/dev/null && fuser -s "$DATA_DIR" "$DATA_DIR"/* 2>/dev/null; then
  die "a process still uses files in $DATA_DIR (fuser -v $DATA_DIR shows which); stop Redis first"
fi

# 2. Check the archive before touching anything.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$ARCHIVE" 2>"$work/.tar-errors" \
  || die "$ARCHIVE is not a readable tar.gz: $(cat "$work/.tar-errors")"
rm -f "$work/.tar-errors"
if [ ! -f "$work/MANIFEST.sha256" ] || [ ! -f "$work/dump.rdb" ]; then
  die "$ARCHIVE is not a farm Redis backup (no MANIFEST.sha256 or dump.rdb in it)"
fi
(cd "$work" && sha256sum --quiet -c MANIFEST.sha256) >"$work/.check" 2>&1 \
  || die "$ARCHIVE is damaged: $(head -3 "$work/.check")"
rm -f "$work/.check"
if command -v redis-check-rdb >/dev/null; then
  redis-check-rdb "$work/dump.rdb" >"$work/.rdb-check" 2>&1 \
    || die "dump.rdb in $ARCHIVE does not load: $(tail -3 "$work/.rdb-check")"
  rm -f "$work/.rdb-check"
fi
setting() { sed -n "s/^$1=//p" "$work/INFO.txt" 2>/dev/null; }
dbfilename=$(setting dbfilename); dbfilename=${dbfilename:-dump.rdb}
aofdir=$(setting appenddirname); aofdir=${aofdir:-appendonlydir}
aoffile=$(setting appendfilename); aoffile=${aoffile:-appendonly.aof}

# 3. Move what is there aside, then put the snapshot in place as RDB and as AOF base.
stamp=$(date -u +%Y%m%dT%H%M%SZ)
aside="$DATA_DIR/before-restore-$stamp"
mkdir "$aside"
for name in "$dbfilename" "$aofdir"; do
  if [ -e "$DATA_DIR/$name" ]; then mv "$DATA_DIR/$name" "$aside/"; fi
done
owner=$(stat -c %u:%g "$DATA_DIR")
install -m 0640 "$work/dump.rdb" "$DATA_DIR/$dbfilename.restoring"
mkdir "$DATA_DIR/$aofdir.restoring"
install -m 0640 "$work/dump.rdb" "$DATA_DIR/$aofdir.restoring/$aoffile.1.base.rdb"
printf 'file %s seq 1 type b\n' "$aoffile.1.base.rdb" > "$DATA_DIR/$aofdir.restoring/$aoffile.manifest"
mv "$DATA_DIR/$dbfilename.restoring" "$DATA_DIR/$dbfilename"
mv "$DATA_DIR/$aofdir.restoring" "$DATA_DIR/$aofdir"
if [ "$(id -u)" -eq 0 ]; then
  chown -R "$owner" "$DATA_DIR/$dbfilename" "$DATA_DIR/$aofdir" "$aside"
fi

echo "redis-restore: restored $(setting keys) keys taken at $(setting taken_at) into $DATA_DIR"
echo "redis-restore: the files it replaced are in $aside; start Redis again now"
