#!/usr/bin/env bash
# The walk-through of DESIGN.md as a script, against your InfluxDB 2.x or Cloud: the
# control host's steps, then the client host's, on this one machine (two homes stand in
# for the two hosts). It ends with the sidecar running and one point written through it
# without a token; Ctrl-C stops everything.
#
#   export INFLUXDB_ENDPOINT_URL=http://127.0.0.1:8086
#   export INFLUXDB_ADMIN_TOKEN=...          # an operator or all-access token
#   export INFLUXDB_ORG_ID=...               # 16 hex digits: `influx org list`
#   ./examples/walkthrough.sh
#
# Optional:
#   INFLUXDB_LEASE_PERMISSIONS  what a lease grants, a v2 permissions array
#                               (default: write on every bucket of the org)
#   INFLUXDB_BUCKET             bucket of the test write (default telemetry)
#   CONTROL_LISTEN              the control's address (default 127.0.0.1:4100)
#   PROXY_LISTEN                the sidecar's address (default 127.0.0.1:18086: a local
#                               InfluxDB holds 8086)
#   PROXY_ADMIN_LISTEN          /healthz, /readyz, /metrics (default 127.0.0.1:8087)
#   WALKTHROUGH_DIR             where the two homes go (default: a temporary directory,
#                               removed at the end)
#   WALKTHROUGH_FOREGROUND=0    stop after the test write instead of serving until Ctrl-C
#   LEASEHOLD_BIN               the leasehold binary (default: `leasehold` on PATH)
#
# The admin token reaches leasehold through INFLUXDB_ADMIN_TOKEN, never through argv.
set -euo pipefail

: "${INFLUXDB_ENDPOINT_URL:?set INFLUXDB_ENDPOINT_URL, e.g. http://127.0.0.1:8086}"
: "${INFLUXDB_ADMIN_TOKEN:?set INFLUXDB_ADMIN_TOKEN to an operator or all-access token}"
: "${INFLUXDB_ORG_ID:?set INFLUXDB_ORG_ID to the organization id (16 hex digits)}"
export INFLUXDB_ADMIN_TOKEN
INFLUXDB_LEASE_PERMISSIONS=${INFLUXDB_LEASE_PERMISSIONS:-'[{"action":"write","resource":{"type":"buckets"}}]'}
INFLUXDB_BUCKET=${INFLUXDB_BUCKET:-telemetry}
CONTROL_LISTEN=${CONTROL_LISTEN:-127.0.0.1:4100}
PROXY_LISTEN=${PROXY_LISTEN:-127.0.0.1:18086}
PROXY_ADMIN_LISTEN=${PROXY_ADMIN_LISTEN:-127.0.0.1:8087}
FOREGROUND=${WALKTHROUGH_FOREGROUND:-1}
LEASEHOLD=${LEASEHOLD_BIN:-leasehold}
command -v "$LEASEHOLD" >/dev/null 2>&1 ||
  { echo "walkthrough: $LEASEHOLD not found: build it (cargo build --release) or set LEASEHOLD_BIN" >&2; exit 1; }

if [ -n "${WALKTHROUGH_DIR:-}" ]; then
  WORK=$WALKTHROUGH_DIR
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/leasehold-walkthrough.XXXXXX")
fi
PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Last started, first stopped, each to its end: the proxy gives its lease back
  # while the control it was issued by still serves.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  [ -n "${WALKTHROUGH_DIR:-}" ] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n$ %s\n' "$*"; }
# `leasehold` on the control host and on the client host.
on_control() { LEASEHOLD_HOME=$WORK/control-host "$LEASEHOLD" "$@"; }
on_client() { LEASEHOLD_HOME=$WORK/client-host "$LEASEHOLD" "$@"; }
wait_for() {
  local what=$1
  shift
  for _ in $(seq 100); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "walkthrough: timed out waiting for $what" >&2
  exit 1
}

echo "# on the control host (LEASEHOLD_HOME=$WORK/control-host)"
step leasehold control init --listen "$CONTROL_LISTEN" --advertise "$CONTROL_LISTEN"
on_control control init --listen "$CONTROL_LISTEN" --advertise "$CONTROL_LISTEN"

# Tickets carry the advertised addresses; they can be changed after init.
step leasehold control set-advertise "$CONTROL_LISTEN"
on_control control set-advertise "$CONTROL_LISTEN"

step leasehold control serve '&'
# Started without the on_control wrapper so that $! is the process itself.
LEASEHOLD_HOME=$WORK/control-host "$LEASEHOLD" control serve &
PIDS+=($!)
wait_for "the control to serve" on_control member list

# shellcheck disable=SC2016 # the comment is printed, not expanded
step leasehold addon configure influxdb --endpoint-url "$INFLUXDB_ENDPOINT_URL" \
  --org-id "$INFLUXDB_ORG_ID" --permissions "'$INFLUXDB_LEASE_PERMISSIONS'" --max-ttl 15m \
  '# --token from $INFLUXDB_ADMIN_TOKEN'
on_control addon configure influxdb --endpoint-url "$INFLUXDB_ENDPOINT_URL" \
  --org-id "$INFLUXDB_ORG_ID" --permissions "$INFLUXDB_LEASE_PERMISSIONS" --max-ttl 15m

step leasehold ticket create --attribute service=iot-sensor --output-file sensor.ticket
on_control ticket create --attribute service=iot-sensor --output-file "$WORK/sensor.ticket"

echo
echo "# on the client host (LEASEHOLD_HOME=$WORK/client-host)"
step leasehold identity create iot-sensor
on_client identity create iot-sensor

step leasehold enroll sensor.ticket --identity iot-sensor
on_client enroll "$WORK/sensor.ticket" --identity iot-sensor

step leasehold lease create --identity iot-sensor --ttl 1m --output json '# manual, for debugging'
LEASE=$(on_client lease create --identity iot-sensor --ttl 1m --output json)
printf '%s\n' "$LEASE"
LEASE_ID=$(printf '%s\n' "$LEASE" | sed -n 's/^ *"id": *"\([^"]*\)".*/\1/p')

step leasehold lease revoke "$LEASE_ID" --identity iot-sensor
on_client lease revoke "$LEASE_ID" --identity iot-sensor

step leasehold proxy --identity iot-sensor --listen "$PROXY_LISTEN" --admin-listen "$PROXY_ADMIN_LISTEN" '&'
LEASEHOLD_HOME=$WORK/client-host "$LEASEHOLD" proxy --identity iot-sensor \
  --listen "$PROXY_LISTEN" --admin-listen "$PROXY_ADMIN_LISTEN" &
PIDS+=($!)
wait_for "the proxy to hold a lease" on_client health --url "http://$PROXY_ADMIN_LISTEN/readyz"

echo
echo "# the application: no token, just the sidecar's address"
WRITE_URL="http://$PROXY_LISTEN/api/v2/write?orgID=$INFLUXDB_ORG_ID&bucket=$INFLUXDB_BUCKET"
step curl -X POST "'$WRITE_URL'" --data-binary "'walkthrough,host=iot-sensor ok=1i'"
STATUS=$(curl -s -o "$WORK/write-answer" -w '%{http_code}' -X POST "$WRITE_URL" \
  --data-binary 'walkthrough,host=iot-sensor ok=1i')
echo "HTTP $STATUS $(cat "$WORK/write-answer")"
[ "$STATUS" = 204 ] || { echo "walkthrough: the write through the proxy failed" >&2; exit 1; }

if [ "$FOREGROUND" = 1 ]; then
  echo
  echo "The sidecar serves http://$PROXY_LISTEN (leases: leasehold lease list); Ctrl-C stops."
  wait
fi
