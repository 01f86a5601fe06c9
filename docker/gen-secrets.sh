#!/bin/sh
# Creates the secret files docker/compose.yaml reads (random passwords, HMAC key, self-signed TLS pair) in docker/secrets/; never overwrites.
# Usage: docker/gen-secrets.sh    (needs openssl). Rotate a secret by deleting its file and re-running.
set -eu
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
# The directory keeps other host users out. The files themselves must be readable by the container
# users (postgres 999, pgwarden 10001, grafana 472): compose bind-mounts them with host permissions.
chmod 700 "$dir"
umask 022

new() { [ -s "$dir/$1" ] && { echo "keep   $1"; return 1; }; echo "create $1"; }

new postgres-password        && openssl rand -hex 24 > "$dir/postgres-password"
new upstream-password        && openssl rand -hex 24 > "$dir/upstream-password"
new grafana-admin-password   && openssl rand -hex 16 > "$dir/grafana-admin-password"
# HS256 key: 48 random bytes as base64 (64 characters); pgwarden needs at least 32 bytes.
new jwt-secret               && openssl rand -base64 48 | tr -d '\n' > "$dir/jwt-secret"
if new tls.crt; then
  # Self-signed, for the local stack only: clients use sslmode=require (or verify-full with this file as root cert).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/CN=pgwarden" -addext "subjectAltName=DNS:localhost,DNS:pgwarden,IP:127.0.0.1" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
  chmod 644 "$dir/tls.key"
fi
echo "secrets in $dir"
