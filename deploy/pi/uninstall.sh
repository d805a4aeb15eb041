#!/usr/bin/env bash
# Removes what deploy/pi/install.sh added. Idempotent: what is already gone is reported as such.
#
#   sudo deploy/pi/uninstall.sh [--root DIR] [--no-systemd] [--purge]
#
#   --purge        also delete the outbox (/var/lib/steth): results not yet delivered are lost, so
#                  without --purge it stays (with the steth user that owns it) and is reported
#   --root DIR     uninstall from DIR instead of / (also $STETH_ROOT); --no-systemd: never call systemctl
#
# System packages (python3-venv, libportaudio2, ...) stay: other software may use them.
set -euo pipefail

root=${STETH_ROOT:-/}
systemd=1 purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "uninstall: run as root" >&2; exit 1; }
root=$(cd "$root" && pwd)
R=${root%/}
[ -n "$R" ] && systemd=0
[ "$systemd" -eq 1 ] && [ ! -d /run/systemd/system ] && systemd=0

VENV=/opt/stethoscope-edge/.venv
say() { printf 'uninstall: %-10s %s\n' "$1" "$2"; }
remove() {  # step path...
  local step=$1 gone=() p; shift
  for p in "$@"; do
    if [ -e "$R$p" ] || [ -L "$R$p" ]; then rm -rf -- "$R$p"; gone+=("$p"); fi
  done
  if [ "${#gone[@]}" -eq 0 ]; then say "$step" "already absent"; else say "$step" "removed ${gone[*]}"; fi
}

if [ "$systemd" -eq 1 ] && systemctl list-unit-files steth-device.service >/dev/null 2>&1; then
  systemctl disable --now --quiet steth-device 2>/dev/null || true
  say service "stopped and disabled"
fi
remove unit /etc/systemd/system/steth-device.service
[ "$systemd" -eq 1 ] && systemctl daemon-reload
remove journald /etc/systemd/journald.conf.d/stethoscope-edge.conf
rmdir "$R/etc/systemd/journald.conf.d" 2>/dev/null || true
remove tmpfiles /etc/tmpfiles.d/stethoscope-edge.conf
if [ -L "$R/usr/local/bin/steth" ] && [ "$(readlink "$R/usr/local/bin/steth")" = "$VENV/bin/steth" ]; then
  remove path /usr/local/bin/steth
else
  say path "already absent"
fi
remove venv /opt/stethoscope-edge
remove config /etc/steth
remove folders /var/cache/steth /run/steth

outbox_kept=0
if [ "$purge" -eq 1 ]; then
  remove outbox /var/lib/steth
elif [ -d "$R/var/lib/steth" ]; then
  outbox_kept=1
  say outbox "kept /var/lib/steth (undelivered results may wait there; --purge deletes it)"
fi

# The user: only the one install.sh made (recognised by its comment), and not while it owns the outbox.
entry=$(awk -F: '$1 == "steth"' "$R/etc/passwd")
if [ -z "$entry" ]; then
  say user "already absent"
elif [[ "$entry" != *"stethoscope-edge device service"* ]]; then
  say user "kept steth (not made by install.sh)"
elif [ "$outbox_kept" -eq 1 ]; then
  say user "kept steth (owns the kept outbox)"
else
  userdel --root "$root" steth
  # its own group goes too (userdel does that only where login.defs says USERGROUPS_ENAB yes)
  if awk -F: '$1 == "steth" && $4 == "" { found = 1 } END { exit !found }' "$R/etc/group"; then
    groupdel --root "$root" steth
  fi
  say user "removed steth"
fi
echo "uninstall: done (system packages stay installed)"
