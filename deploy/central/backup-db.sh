#!/usr/bin/env bash
# Backs up the dashboard's PostgreSQL database with pg_dump (custom format: compressed, restorable table
# by table with pg_restore), checks the dump can be read, and deletes dumps older than the retention.
#
#   backup-db.sh [--dest DIR] [--keep-days N]
#
# The database: $DATABASE_URL or the file in $DATABASE_URL_FILE (as the dashboard reads it), e.g.
# postgres://steth:PASSWORD@127.0.0.1:5432/steth. Dumps go to DIR/db/steth-<UTC time>.dump
# (default DIR: $STETH_BACKUP_DIR or /var/backups/stethoscope-edge; N: $STETH_BACKUP_KEEP_DAYS or 14).
# Restore:  createdb steth_restored && pg_restore --no-owner -d steth_restored FILE.dump
# Run daily by steth-backup.timer. Copy DIR to another machine too: a backup on the same disk is not one.
set -euo pipefail

dest=${STETH_BACKUP_DIR:-/var/backups/stethoscope-edge}
keep=${STETH_BACKUP_KEEP_DAYS:-14}
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest=$2; shift 2 ;;
    --keep-days) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "backup-db: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $keep =~ ^[0-9]+$ ]] || { echo "backup-db: --keep-days must be a whole number of days" >&2; exit 2; }
url=${DATABASE_URL:-}
if [ -z "$url" ] && [ -n "${DATABASE_URL_FILE:-}" ]; then url=$(<"$DATABASE_URL_FILE"); fi
[ -n "$url" ] || { echo "backup-db: set DATABASE_URL or DATABASE_URL_FILE" >&2; exit 2; }
case "$url" in postgres://*|postgresql://*) ;; *)
  echo "backup-db: DATABASE_URL is not a PostgreSQL URL (SQLite: copy the file with sqlite3 .backup)" >&2; exit 2 ;;
esac

umask 077
mkdir -p "$dest/db"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
while [ -e "$dest/db/steth-$stamp.dump" ]; do sleep 1; stamp=$(date -u +%Y%m%dT%H%M%SZ); done
file=$dest/db/steth-$stamp.dump
partial=$dest/db/.steth-$stamp.dump.partial
trap 'rm -f "$partial"' EXIT
pg_dump --format=custom --compress=6 --no-owner --no-privileges --file "$partial" --dbname "$url"
pg_restore --list "$partial" > /dev/null   # a dump that cannot be listed is not a backup
mv "$partial" "$file"
echo "backup-db: $file ($(du -h "$file" | cut -f1))"

# Retention by the time in the name (file times change when backups are copied around); the dump
# just made is never deleted.
cutoff=$(date -u -d "-$keep days" +%Y%m%dT%H%M%SZ)
for old in "$dest"/db/steth-*.dump; do
  name=$(basename "$old" .dump); when=${name#steth-}
  if [[ "$when" < "$cutoff" ]] && [ "$old" != "$file" ]; then rm -f "$old"; echo "backup-db: deleted $old (older than $keep days)"; fi
done
