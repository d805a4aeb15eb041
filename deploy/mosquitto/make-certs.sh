#!/usr/bin/env bash
# Makes the broker's TLS files with openssl: a private CA (kept if it already exists, so devices that
# trust it keep working) and a server certificate for the names and addresses given.
#
#   deploy/mosquitto/make-certs.sh [--days N] [--ca-days N] OUT_DIR NAME_OR_IP [NAME_OR_IP ...]
#   e.g. deploy/mosquitto/make-certs.sh /etc/mosquitto/steth broker.example.org 203.0.113.10
#
# Writes OUT_DIR/ca.crt (give it to every device: `steth provision` puts it in each bundle),
# OUT_DIR/server.crt, OUT_DIR/server.key, and OUT_DIR/ca.key: the CA's private key. Move ca.key off
# the broker to somewhere safe and offline; it is only needed to issue the next server certificate
# (give its folder back with --ca-dir). Keys are 0600 (group mosquitto may read server.key when that
# group exists). Running again renews the server certificate and leaves the CA alone.
# Never commit any of these files; tests make their own at run time.
set -euo pipefail

days=825        # what browsers and most TLS stacks accept for a server certificate
ca_days=3650
ca_dir=""
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --days) days=$2; shift 2 ;;
    --ca-days) ca_days=$2; shift 2 ;;
    --ca-dir) ca_dir=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    -*) echo "make-certs: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || { echo "make-certs: give the output folder and at least one host name or IP address" >&2; usage; }
out=$1; shift
ca_dir=${ca_dir:-$out}
command -v openssl >/dev/null || { echo "make-certs: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

# subjectAltName: IPv4/IPv6 literals become IP: entries, everything else DNS: (TLS clients check
# these, not the common name).
sans=()
for name in "$@"; do
  if [[ $name =~ ^[0-9]+(\.[0-9]+){3}$ || $name == *:* ]]; then
    sans+=("IP:$name")
  elif [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
    sans+=("DNS:$name")
  else
    echo "make-certs: '$name' is neither a host name nor an IP address" >&2; exit 2
  fi
done
san_list=$(IFS=,; echo "${sans[*]}")

umask 077
mkdir -p "$out" "$ca_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -s "$ca_dir/ca.key" ] && [ -s "$ca_dir/ca.crt" ]; then
  echo "make-certs: using the existing CA in $ca_dir"
else
  [ -e "$ca_dir/ca.crt" ] && { echo "make-certs: $ca_dir/ca.crt exists without ca.key; refusing to replace it" >&2; exit 1; }
  openssl ecparam -name prime256v1 -genkey -noout -out "$ca_dir/ca.key"
  openssl req -x509 -new -sha256 -key "$ca_dir/ca.key" -days "$ca_days" \
    -subj "/O=stethoscope-edge/CN=stethoscope-edge broker CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$ca_dir/ca.crt"
  echo "make-certs: new CA $ca_dir/ca.crt (its key: $ca_dir/ca.key; keep it offline)"
fi
[ "$ca_dir" = "$out" ] || cp "$ca_dir/ca.crt" "$out/ca.crt"

# ECDSA P-256: fast handshakes on a Raspberry Pi, accepted by every TLS 1.2+ client.
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/server.key"
openssl req -new -sha256 -key "$tmp/server.key" -subj "/O=stethoscope-edge/CN=$1" -out "$tmp/server.csr"
cat > "$tmp/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san_list
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
openssl x509 -req -sha256 -in "$tmp/server.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
  -CAcreateserial -CAserial "$tmp/ca.srl" -days "$days" -extfile "$tmp/ext.cnf" -out "$tmp/server.crt" 2>/dev/null
openssl verify -CAfile "$ca_dir/ca.crt" "$tmp/server.crt" >/dev/null
mv "$tmp/server.key" "$out/server.key"
mv "$tmp/server.crt" "$out/server.crt"
chmod 0644 "$out/ca.crt" "$out/server.crt"
chmod 0600 "$out/server.key" "$ca_dir/ca.key"
chmod 0750 "$out"
if [ "$(id -u)" -eq 0 ] && getent group mosquitto >/dev/null; then
  # the broker reads these after dropping root
  chgrp mosquitto "$out" "$out/server.key" && chmod 0640 "$out/server.key"
fi
echo "make-certs: $out/server.crt for $san_list, valid $days days"
