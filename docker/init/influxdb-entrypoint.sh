#!/usr/bin/env bash
# Compose demo: wraps the official InfluxDB image's /entrypoint.sh. On the first start it generates
# the admin password, the operator token (or takes MW_INFLUX_TOKEN) and the UI viewer's password
# into the influx-admin volume, so no credential is written in compose.yaml; the image's own
# setup mode (DOCKER_INFLUXDB_INIT_*) reads the first two from there.
set -euo pipefail
dir=/var/lib/machinewatch/influx-admin
mkdir -p "$dir"
chmod 700 "$dir"

new_secret() {  # file: 24 random bytes, URL-safe base64, written once
  [ -s "$dir/$1" ] && return 0
  (umask 077; head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$dir/$1")
}

if [ -n "${MW_INFLUX_TOKEN:-}" ] && [ ! -s "$dir/influx_token" ]; then
  (umask 077; printf '%s' "$MW_INFLUX_TOKEN" > "$dir/influx_token")
fi
unset MW_INFLUX_TOKEN
new_secret influx_token
new_secret influx_password
new_secret influx_viewer_password

export DOCKER_INFLUXDB_INIT_PASSWORD_FILE="$dir/influx_password"
export DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE="$dir/influx_token"
exec /entrypoint.sh "$@"
