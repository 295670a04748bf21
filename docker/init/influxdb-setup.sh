#!/usr/bin/env bash
# Compose demo, one-shot on every 'up' and idempotent, like the native stack's InfluxDB set-up
# (machinewatch/stack/services.py): the buckets of machinewatch/names.py, a write-only token for
# the pipeline and a read-only token for dashboards (0600 files in the mw-secrets volume, where
# MW_STATE_DIR/secrets points), the read-only UI user 'viewer', and the InfluxDB templates in
# dashboards/influxdb/ applied as one stack. Runs in the official InfluxDB image (influx CLI, curl).
set -euo pipefail
admin=/var/lib/machinewatch/influx-admin
secrets=/var/lib/machinewatch/secrets
templates=/opt/machinewatch/dashboards/influxdb
owner="${SECRETS_OWNER:-9999:9999}"
viewer=viewer

say() { printf 'influxdb-setup: %s\n' "$*"; }

export INFLUX_HOST="${MW_INFLUX_URL:-http://influxdb:8086}"
export INFLUX_ORG="${MW_INFLUX_ORG:-machinewatch}"
INFLUX_TOKEN="$(cat "$admin/influx_token")"
export INFLUX_TOKEN

# Credentials for curl go through files, never the command line.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(umask 077; printf 'Authorization: Token %s\n' "$INFLUX_TOKEN" > "$work/auth")

bucket_id() { influx bucket list --name "$1" --hide-headers 2>/dev/null | cut -f1 || true; }

ensure_bucket() {  # name retention-seconds
  if [ -z "$(bucket_id "$1")" ]; then
    influx bucket create --name "$1" --retention "${2}s" > /dev/null
    say "created bucket '$1' (retention ${2}s)"
  fi
}
ensure_bucket raw "${MW_INFLUX_RAW_RETENTION_S:-604800}"
ensure_bucket aggregates "${MW_INFLUX_AGGREGATES_RETENTION_S:-7776000}"
ensure_bucket alerts "${MW_INFLUX_ALERTS_RETENTION_S:-31536000}"
ensure_bucket history "${MW_INFLUX_HISTORY_RETENTION_S:-0}"   # 0s: kept forever (backfills of any age)
bucket_ids=("$(bucket_id raw)" "$(bucket_id aggregates)" "$(bucket_id alerts)" "$(bucket_id history)")

# A token file is (re)written when it is missing or this server no longer has its token (e.g.
# the InfluxDB volume was removed but not the secrets volume).
ensure_token() {  # file action description
  local file="$secrets/$1" action="$2" description="$3" args=() token auths
  # Listed into a variable first: 'grep -q' closing the pipe early would fail it under pipefail.
  auths="$(influx auth list --hide-headers)"
  if [ -s "$file" ] && grep -qF "$description" <<< "$auths"; then
    return 0
  fi
  for id in "${bucket_ids[@]}"; do args+=("--${action}-bucket" "$id"); done
  token="$(influx auth create --description "$description" "${args[@]}" --json \
           | sed -n 's/^[[:space:]]*"token":[[:space:]]*"\([^"]*\)".*/\1/p')"
  if [ -z "$token" ]; then
    say "could not create the $description token"
    exit 1
  fi
  (umask 077; printf '%s\n' "$token" > "$file.tmp")
  chown "$owner" "$file.tmp"
  mv "$file.tmp" "$file"
  say "created the $description token in $file"
}
mkdir -p "$secrets"
ensure_token influx_write_token write "machinewatch pipeline (write-only)"
ensure_token influx_read_token read "machinewatch dashboards (read-only)"

# The UI login without write access. InfluxDB 2 OSS has no custom roles: an org *member* (not
# owner) gets read access to every resource of the org and cannot write or change anything.
if [ -z "$(influx user list --name "$viewer" --hide-headers 2>/dev/null | cut -f1 || true)" ]; then
  influx user create --name "$viewer" --org "$INFLUX_ORG" > /dev/null
  viewer_id="$(influx user list --name "$viewer" --hide-headers | cut -f1)"
  (umask 077; printf '{"password": "%s"}' "$(cat "$admin/influx_viewer_password")" > "$work/password.json")
  curl -fsS -o /dev/null -X POST "$INFLUX_HOST/api/v2/users/$viewer_id/password" \
    -H @"$work/auth" -H 'Content-Type: application/json' --data @"$work/password.json"
  say "created the read-only UI user '$viewer' (member of org '$INFLUX_ORG')"
fi

# Our InfluxDB templates (dashboards, ...), applied as one stack so a re-apply updates them.
mapfile -t files < <(find "$templates" -maxdepth 1 -type f \
  \( -name '*.yml' -o -name '*.yaml' -o -name '*.json' -o -name '*.jsonnet' \) 2>/dev/null | sort)
if [ "${#files[@]}" -eq 0 ]; then
  say "no InfluxDB templates in dashboards/influxdb/ yet: nothing to apply"
else
  stack="$(influx stacks --stack-name machinewatch-dashboards --hide-headers | cut -f1 || true)"
  if [ -z "$stack" ]; then
    stack="$(influx stacks init --stack-name machinewatch-dashboards --hide-headers | cut -f1)"
  fi
  args=()
  for f in "${files[@]}"; do args+=(--file "$f"); done
  influx apply --stack-id "$stack" "${args[@]}" --force yes > /dev/null
  say "applied ${#files[@]} template(s) from dashboards/influxdb/ (stack $stack)"
fi
say "done"
