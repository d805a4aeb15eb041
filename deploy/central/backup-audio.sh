#!/usr/bin/env bash
# Backs up the recordings (the dashboard's media folder) as daily snapshots with rsync: each snapshot
# is a complete copy, but files unchanged since the previous one are hard links to it, so a snapshot
# costs only the new recordings. Snapshots older than the retention are deleted.
#
#   backup-audio.sh [--source DIR] [--dest DIR] [--keep-days N]
#
# Source: $STETH_MEDIA_ROOT or /var/lib/stethoscope-edge/media. Snapshots go to DIR/audio/<UTC time>/
# (DIR: $STETH_BACKUP_DIR or /var/backups/stethoscope-edge; N: $STETH_BACKUP_KEEP_DAYS or 14).
# DIR can be a mounted remote disk; to push to another host instead, rsync DIR/audio there afterwards.
# Restore: rsync -a DIR/audio/<time>/ /var/lib/stethoscope-edge/media/
set -euo pipefail

src=${STETH_MEDIA_ROOT:-/var/lib/stethoscope-edge/media}
dest=${STETH_BACKUP_DIR:-/var/backups/stethoscope-edge}
keep=${STETH_BACKUP_KEEP_DAYS:-14}
while [ $# -gt 0 ]; do
  case "$1" in
    --source) src=$2; shift 2 ;;
    --dest) dest=$2; shift 2 ;;
    --keep-days) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "backup-audio: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $keep =~ ^[0-9]+$ ]] || { echo "backup-audio: --keep-days must be a whole number of days" >&2; exit 2; }
[ -d "$src" ] || { echo "backup-audio: no media folder at $src (set STETH_MEDIA_ROOT or --source)" >&2; exit 2; }
command -v rsync >/dev/null || { echo "backup-audio: rsync is not installed (apt-get install rsync)" >&2; exit 1; }

umask 077
mkdir -p "$dest/audio"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
while [ -e "$dest/audio/$stamp" ]; do sleep 1; stamp=$(date -u +%Y%m%dT%H%M%SZ); done  # one per second
previous=$(find "$dest/audio" -mindepth 1 -maxdepth 1 -type d -name '20*' | sort | tail -n 1)
partial=$dest/audio/.partial-$stamp
trap 'rm -rf "$partial"' EXIT
rsync -a --delete ${previous:+--link-dest="$previous"} "$src/" "$partial/"
mv "$partial" "$dest/audio/$stamp"
echo "backup-audio: $dest/audio/$stamp ($(find "$dest/audio/$stamp" -type f | wc -l) files)"

cutoff=$(date -u -d "-$keep days" +%Y%m%dT%H%M%SZ)
for old in "$dest"/audio/20*; do
  [ -d "$old" ] || continue
  when=$(basename "$old")
  if [[ "$when" < "$cutoff" ]] && [ "$when" != "$stamp" ]; then rm -rf "$old"; echo "backup-audio: deleted $old (older than $keep days)"; fi
done
