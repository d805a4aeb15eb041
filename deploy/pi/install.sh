#!/usr/bin/env bash
# Installs the stethoscope-edge device service on Raspberry Pi OS bookworm (64-bit), idempotently:
# run it again and every step says "unchanged"; deploy/pi/uninstall.sh undoes it.
#
#   sudo deploy/pi/install.sh --bundle BUNDLE_DIR [--source WHEEL_OR_SOURCE_DIR] [options]
#
#   --bundle DIR     the device's config bundle from `steth provision DEVICE_ID` (device.toml, ca.crt,
#                    broker-password); installed into /etc/steth
#   --source PATH    a stethoscope_edge-*.whl or a source folder (default: this checkout)
#   --root DIR       install into DIR instead of / (image building, tests): no apt, no systemctl;
#                    also $STETH_ROOT
#   --no-systemd     containers and chroots: install the unit but never call systemctl, and create the
#                    runtime folders now instead of leaving them to systemd
#   --no-apt         do not install system packages (they must be there already)
#   --no-start       enable the service but do not (re)start it
#   --pip-args ARGS  extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels" offline
#
# What it does: apt packages (python3-venv, libportaudio2, libsndfile1, ...), a system user `steth` in
# group `audio`, a virtual environment in /opt/stethoscope-edge/.venv with the `device` extra, the
# bundle in /etc/steth (the password root-only: systemd hands it over with LoadCredential=), the unit
# deploy/systemd/steth-device.service, journald limits (the service logs only to the journal), folders
# for the outbox (/var/lib/steth, SD card) and transient audio (/run/steth, tmpfs), and `steth` on the
# PATH.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${STETH_ROOT:-/}
bundle="" source="$repo" systemd=1 apt=1 start=1 pip_args=""
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle=$2; shift 2 ;;
    --source) source=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    --no-apt) apt=0; shift ;;
    --no-start) start=0; shift ;;
    --pip-args) pip_args=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "install: unknown argument $1" >&2; usage ;;
  esac
done

die() { echo "install: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 ...)"
[ -n "$bundle" ] || die "give --bundle DIR: the folder \`steth provision DEVICE_ID\` wrote for this device"
for f in device.toml ca.crt broker-password; do
  [ -f "$bundle/$f" ] || die "$bundle has no $f: is it a bundle from \`steth provision\`?"
done
[ -e "$source" ] || die "--source $source does not exist"
root=$(cd "$root" && pwd)
R=${root%/}   # prefix for every path: "" for the real root
live=0        # talk to apt and systemd only when installing into the running system
[ -z "$R" ] && live=1
[ "$live" -eq 1 ] && [ "$systemd" -eq 1 ] && [ ! -d /run/systemd/system ] && {
  echo "install: systemd is not running here; continuing as with --no-systemd"; systemd=0; }
[ "$live" -eq 0 ] && systemd=0

APP=/opt/stethoscope-edge
VENV=$APP/.venv
ETC=/etc/steth
UNIT=/etc/systemd/system/steth-device.service
APT_PACKAGES=(python3 python3-venv python3-pip libportaudio2 libsndfile1 libasound2 alsa-utils ca-certificates)
changed=0 unchanged=0 restart_needed=0
report() {  # step, status, detail
  printf 'install: %-10s %s%s\n' "$1" "$2" "${3:+ ($3)}"
  case "$2" in unchanged|skipped) unchanged=$((unchanged + 1)) ;; *) changed=$((changed + 1)) ;; esac
}

# -- helpers that change a file only when its content, mode or owner differ ------------------------------
uid_of() { awk -F: -v u="$1" '$1 == u { print $3 }' "$R/etc/passwd"; }
gid_of() { awk -F: -v g="$1" '$1 == g { print $3 }' "$R/etc/group"; }
# put_file SRC DEST MODE OWNER GROUP -> prints "same" or "updated"
put_file() {
  local src=$1 dest=$R$2 mode=$3 uid gid
  uid=$(uid_of "$4"); gid=$(gid_of "$5")
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c '%a %u %g' "$dest")" = "$(printf '%o' "$((8#$mode))") $uid $gid" ]; then
    echo same; return
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" -o "$uid" -g "$gid" "$src" "$dest.steth-new"
  mv -f "$dest.steth-new" "$dest"
  echo updated
}
# put_dir DIR MODE OWNER GROUP -> "same" or "updated"
put_dir() {
  local dest=$R$1 uid gid
  uid=$(uid_of "$3"); gid=$(gid_of "$4")
  if [ -d "$dest" ] && [ "$(stat -c '%a %u %g' "$dest")" = "$(printf '%o' "$((8#$2))") $uid $gid" ]; then
    echo same; return
  fi
  install -d -m "$2" -o "$uid" -g "$gid" "$dest"
  echo updated
}
put_text() {  # TEXT DEST MODE -> like put_file, root-owned
  local tmp; tmp=$(mktemp)
  printf '%s\n' "$1" > "$tmp"
  put_file "$tmp" "$2" "$3" root root
  rm -f "$tmp"
}

# -- 1. system packages --------------------------------------------------------------------------------------
if [ "$apt" -eq 0 ]; then
  report apt skipped "--no-apt"
elif [ "$live" -eq 0 ]; then
  report apt skipped "--root: install ${APT_PACKAGES[*]} in the image"
else
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    report apt unchanged
  else
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    report apt installed "${missing[*]}"
  fi
fi

# -- 2. the service user ---------------------------------------------------------------------------------------
if [ ! -f "$R/etc/passwd" ] || [ ! -f "$R/etc/group" ]; then die "$root has no /etc/passwd or /etc/group"; fi
[ -n "$(gid_of audio)" ] || groupadd --root "$root" --system audio
if [ -z "$(uid_of steth)" ]; then
  useradd --root "$root" --system --user-group --groups audio --home-dir /var/lib/steth --no-create-home \
    --shell /usr/sbin/nologin --comment "stethoscope-edge device service" steth
  report user created "steth, group audio"
elif ! awk -F: '$1 == "audio"' "$R/etc/group" | grep -qE '[:,]steth(,|$)'; then
  usermod --root "$root" --append --groups audio steth
  report user changed "steth added to group audio"
else
  report user unchanged
fi

# -- 3. the virtual environment --------------------------------------------------------------------------------
# The stamp is a hash of what was installed and how: the same wheel or source tree installs nothing.
if [ -d "$source" ]; then
  [ -f "$source/pyproject.toml" ] || die "$source is not a source folder (no pyproject.toml)"
  fingerprint=$(cd "$source" && find pyproject.toml README.md device converter dashboard -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sha256sum)
else
  case "$source" in *.whl) ;; *) die "--source must be a .whl file or a source folder" ;; esac
  fingerprint=$(sha256sum < "$source")
fi
stamp_want="${fingerprint%% *} device ${pip_args}"
stamp="$R$VENV/.steth-install"
if [ -x "$R$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$stamp_want" ]; then
  report venv unchanged "$VENV"
else
  python=${PYTHON:-/usr/bin/python3}
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11+ needed ($python)"
  mkdir -p "$R$APP"
  [ -x "$R$VENV/bin/python" ] || "$python" -m venv "$R$VENV"
  src=$source; [ -d "$source" ] && src=$(cd "$source" && pwd)
  pip=("$R$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
  # shellcheck disable=SC2086 # pip_args are separate words on purpose
  "${pip[@]}" $pip_args "${src}[device]"
  # pip keeps an installed project of the same version even when its files differ (a rebuilt wheel,
  # newer models): put this build's files in place whatever the version says.
  # shellcheck disable=SC2086
  "${pip[@]}" $pip_args --force-reinstall --no-deps "$src"
  echo "$stamp_want" > "$stamp"
  restart_needed=1
  report venv installed "$VENV, the device extra from $(basename "$source")"
fi
if [ -f "$repo/README.md" ]; then
  r=$(put_file "$repo/README.md" "$APP/README.md" 0644 root root)
  if [ "$r" = same ]; then report readme unchanged; else report readme updated "$APP/README.md"; fi
fi
if [ -L "$R/usr/local/bin/steth" ] && [ "$(readlink "$R/usr/local/bin/steth")" = "$VENV/bin/steth" ]; then
  report path unchanged
else
  mkdir -p "$R/usr/local/bin"
  ln -sfn "$VENV/bin/steth" "$R/usr/local/bin/steth"
  report path updated "/usr/local/bin/steth"
fi

# -- 4. the configuration bundle ---------------------------------------------------------------------------------
# The password is root-only when systemd hands it over (LoadCredential=); a config that reads it itself
# (password_file, e.g. in a container) needs it readable by the steth group.
secret_group=root secret_mode=0600
grep -qE '^[[:space:]]*password_file[[:space:]]*=' "$bundle/device.toml" && secret_group=steth secret_mode=0640
results=("$(put_dir "$ETC" 0750 root steth)"
         "$(put_file "$bundle/device.toml" "$ETC/device.toml" 0640 root steth)"
         "$(put_file "$bundle/ca.crt" "$ETC/ca.crt" 0644 root root)"
         "$(put_file "$bundle/broker-password" "$ETC/broker-password" "$secret_mode" root "$secret_group")")
if [[ " ${results[*]} " == *updated* ]]; then
  restart_needed=1
  device_id=$(sed -nE 's/^device_id[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' "$bundle/device.toml")
  report config updated "$ETC, device ${device_id:-?}"
else
  report config unchanged
fi

# -- 5. folders: outbox (SD card), transient audio (tmpfs) -------------------------------------------------------
tmpfiles="# stethoscope-edge (deploy/pi/install.sh): created at boot by systemd-tmpfiles
d /var/lib/steth 0700 steth steth -
d /var/cache/steth 0700 steth steth -
d /run/steth 0700 steth steth -"
r1=$(put_text "$tmpfiles" /etc/tmpfiles.d/stethoscope-edge.conf 0644)
r2=$(put_dir /var/lib/steth 0700 steth steth)
r3=$(put_dir /var/cache/steth 0700 steth steth)
r4=same
# /run is a tmpfs rebuilt at every boot (systemd-tmpfiles and RuntimeDirectory= recreate it); make it
# now only where no systemd will.
[ "$systemd" -eq 0 ] && [ "$live" -eq 1 ] && r4=$(put_dir /run/steth 0700 steth steth)
if [[ "$r1 $r2 $r3 $r4" == *updated* ]]; then
  report folders updated "/var/lib/steth (outbox), /run/steth (tmpfs audio)"
else
  report folders unchanged
fi

# -- 6. logging: the journal only, bounded ---------------------------------------------------------------------------
journald="# stethoscope-edge (deploy/pi/install.sh): keep logs across reboots, bounded for an SD card.
[Journal]
Storage=persistent
Compress=yes
SystemMaxUse=100M
SystemKeepFree=500M
SystemMaxFileSize=10M
MaxRetentionSec=1month"
r=$(put_text "$journald" /etc/systemd/journald.conf.d/stethoscope-edge.conf 0644)
journald_changed=0
if [ "$r" = same ]; then report journald unchanged; else journald_changed=1; report journald updated "100M, 1 month"; fi

# -- 7. the systemd unit (written by the device service's authors: installed as it is) --------------------------------
r=$(put_file "$repo/deploy/systemd/steth-device.service" "$UNIT" 0644 root root)
unit_changed=0
if [ "$r" = same ]; then report unit unchanged; else unit_changed=1; restart_needed=1; report unit updated "$UNIT"; fi

# -- 8. check and start --------------------------------------------------------------------------------------------
if [ "$live" -eq 1 ] && [ -x "$VENV/bin/steth" ]; then
  # the real files, as the service will see them (the credential is checked by systemd itself)
  "$VENV/bin/steth" device validate-config "$ETC/device.toml" >/dev/null ||
    die "the installed configuration is not valid: $VENV/bin/steth device validate-config $ETC/device.toml"
fi
if [ "$systemd" -eq 0 ]; then
  report service skipped "no systemd: start with $VENV/bin/steth device run --config $ETC/device.toml"
else
  [ "$unit_changed" -eq 1 ] && systemctl daemon-reload
  [ "$journald_changed" -eq 1 ] && systemctl restart systemd-journald
  systemd-tmpfiles --create /etc/tmpfiles.d/stethoscope-edge.conf
  did=()
  systemctl is-enabled --quiet steth-device 2>/dev/null || { systemctl enable --quiet steth-device; did+=(enabled); }
  if [ "$start" -eq 1 ]; then
    if ! systemctl is-active --quiet steth-device; then
      systemctl start steth-device; did+=(started)
    elif [ "$restart_needed" -eq 1 ]; then
      systemctl restart steth-device; did+=(restarted)
    fi
  fi
  if [ "${#did[@]}" -eq 0 ]; then report service unchanged; else report service "${did[*]}" steth-device; fi
fi

echo "install: done: $changed step(s) changed, $unchanged unchanged"
