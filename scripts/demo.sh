#!/usr/bin/env bash
# The one-command demo: a real InfluxDB 1.x with authentication on, a leasehold control
# with short leases, and a sidecar proxy that an "application" (curl in a loop) writes
# through without any credentials. Every few seconds it prints the current lease, the
# writes so far and the points InfluxDB holds, so lease rotation is visible while not a
# single write fails.
#
#   ./scripts/demo.sh                     # runs until Ctrl-C
#   DEMO_DURATION=30 ./scripts/demo.sh    # stops by itself after 30 s
#
# Settings (environment):
#   DEMO_DURATION=SECS       stop after SECS seconds (default: run until Ctrl-C)
#   DEMO_LEASE_TTL=SECS      lease lifetime (default 10; the proxy renews at ~60%)
#   DEMO_PROXY_PORT=PORT     where the application writes (default 18086; 0: any free)
#   DEMO_ADMIN_PORT=PORT     the proxy's /healthz, /readyz, /metrics (default 18087; 0: any)
#   DEMO_CONTROL_PORT=PORT   the control's secure channel (default 14100)
#   DEMO_INFLUXDB_PORT=PORT  InfluxDB HTTP (default 18186); RPC uses DEMO_INFLUXDB_RPC_PORT
#                            (default 18188)
#   DEMO_WRITE_INTERVAL=SECS pause between two writes (default 0.2)
#   DEMO_REPORT_EVERY=SECS   how often to print progress (default 3)
#   LEASEHOLD_BIN=PATH       use this leasehold binary instead of building one
#
# Installs InfluxDB 1.x (Debian package `influxdb`) if `influxd` is missing, and builds
# leasehold with `cargo build --release --locked` unless LEASEHOLD_BIN is set. Everything
# it starts runs on loopback in a temporary directory, and everything is stopped and
# removed on exit, Ctrl-C included. The last line is a summary; the exit status is 0 only
# if every write was accepted (204) and InfluxDB holds exactly that many points.
set -euo pipefail
# A relative LEASEHOLD_BIN means relative to where the demo was started.
case ${LEASEHOLD_BIN:-/} in /*) ;; *) LEASEHOLD_BIN=$PWD/$LEASEHOLD_BIN ;; esac
cd "$(dirname "$0")/.."
# shellcheck source=scripts/influxd-conf.sh
. scripts/influxd-conf.sh

DURATION=${DEMO_DURATION:-0}
LEASE_TTL=${DEMO_LEASE_TTL:-10}
PROXY_PORT=${DEMO_PROXY_PORT:-18086}
ADMIN_PORT=${DEMO_ADMIN_PORT:-18087}
CONTROL_PORT=${DEMO_CONTROL_PORT:-14100}
INFLUX_PORT=${DEMO_INFLUXDB_PORT:-18186}
INFLUX_RPC_PORT=${DEMO_INFLUXDB_RPC_PORT:-18188}
WRITE_INTERVAL=${DEMO_WRITE_INTERVAL:-0.2}
REPORT_EVERY=${DEMO_REPORT_EVERY:-3}
DB=demo

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- prerequisites -------------------------------------------------------------------
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "$1 is missing and this is not a Debian/Ubuntu system: install $2 yourself"
  say "installing $2 (apt-get install -y $2)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null
}
command -v curl >/dev/null 2>&1 || apt_install curl curl
command -v influxd >/dev/null 2>&1 || apt_install influxd influxdb

if [ -n "${LEASEHOLD_BIN:-}" ]; then
  [ -x "$LEASEHOLD_BIN" ] || die "LEASEHOLD_BIN=$LEASEHOLD_BIN is not an executable"
  BIN=$LEASEHOLD_BIN
else
  command -v cargo >/dev/null 2>&1 ||
    die "cargo is missing: install a Rust toolchain (https://rustup.rs), then run this again"
  say "building leasehold (cargo build --release --locked)"
  cargo build --release --locked --bin leasehold
  BIN=$PWD/target/release/leasehold
fi

# --- clean-up, whatever happens ------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/leasehold-demo.XXXXXX")
WRITES=$WORK/writes.log # one HTTP status per write
PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Newest first: the writer, the proxy, the control, then InfluxDB.
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" != 0 ] && [ "$status" != 130 ]; then
    for log in "$WORK"/*.log; do
      if [ -s "$log" ] && [ "$log" != "$WRITES" ]; then
        printf -- '--- last lines of %s\n' "${log##*/}" >&2
        tail -n 15 "$log" >&2
      fi
    done
  fi
  rm -rf "$WORK"
  [ "$status" != 130 ] || say "interrupted: everything the demo started is stopped and removed"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export LEASEHOLD_HOME=$WORK/leasehold
export RUST_LOG=${RUST_LOG:-warn} NO_COLOR=1
lh() { "$BIN" "$@"; }

# Waits up to $2 seconds for the command "${@:3}" to succeed; $1 names what we wait for.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.1
  done
}

# --- InfluxDB 1.x with authentication, on loopback -----------------------------------
say "starting InfluxDB $(influxd version 2>/dev/null | awk '{print $2}') on 127.0.0.1:$INFLUX_PORT (auth on)"
INFLUX_URL=http://127.0.0.1:$INFLUX_PORT
influxd_conf "$WORK/influxdb" "$INFLUX_PORT" "$INFLUX_RPC_PORT" >"$WORK/influxdb.conf"
influxd -config "$WORK/influxdb.conf" >"$WORK/influxd.log" 2>&1 &
PIDS+=($!)
ping_influx() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$INFLUX_URL/ping")" = 204 ]; }
wait_for "InfluxDB to answer /ping" 60 ping_influx
grep -q "addr=127.0.0.1:$INFLUX_PORT" "$WORK/influxd.log" ||
  die "port $INFLUX_PORT answers, but not our influxd: set DEMO_INFLUXDB_PORT to a free port"

# The admin password stays out of argv: curl reads it from a 0600 config file and
# leasehold from the environment.
ADMIN_PASSWORD=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf 'user = "admin:%s"\n' "$ADMIN_PASSWORD" >"$WORK/curl-admin.conf")
# Runs an InfluxQL statement as the admin; prints the JSON answer, fails on any error.
influxql() {
  local answer
  answer=$(curl -sS -K "$WORK/curl-admin.conf" "$INFLUX_URL/query" "$@")
  case $answer in *'"error"'*) die "InfluxDB: $answer" ;; esac
  printf '%s\n' "$answer"
}
# With auth on and no users yet, InfluxDB accepts exactly one unauthenticated
# statement: creating the first admin.
(umask 077 && printf "CREATE USER admin WITH PASSWORD '%s' WITH ALL PRIVILEGES" "$ADMIN_PASSWORD" >"$WORK/create-admin.influxql")
answer=$(curl -sS "$INFLUX_URL/query" --data-urlencode "q@$WORK/create-admin.influxql")
case $answer in *'"error"'*) die "creating the InfluxDB admin: $answer" ;; esac
influxql --data-urlencode "q=CREATE DATABASE $DB" >/dev/null

# --- the control plane ---------------------------------------------------------------
say "starting the leasehold control on 127.0.0.1:$CONTROL_PORT (LEASEHOLD_HOME=$LEASEHOLD_HOME)"
lh control init --listen "127.0.0.1:$CONTROL_PORT" >/dev/null
# Started directly (not through `lh`) so that $! is the process itself, not a subshell.
RUST_LOG=info "$BIN" control serve --ready-file "$WORK/control.ready" >"$WORK/control.log" 2>&1 &
PIDS+=($!)
# Our control, not whatever else might answer on the port: it names the address it bound.
wait_for "the control to listen" 60 test -e "$WORK/control.ready"
grep -qx "listen=127.0.0.1:$CONTROL_PORT" "$WORK/control.ready" ||
  die "the control reports $(cat "$WORK/control.ready"), not 127.0.0.1:$CONTROL_PORT"
wait_for "the control to serve" 60 lh member list

say "configuring the influxdb-v1 add-on: WRITE ON \"$DB\", leases of ${LEASE_TTL}s"
INFLUXDB_ADMIN_PASSWORD=$ADMIN_PASSWORD lh addon configure influxdb-v1 \
  --endpoint-url "$INFLUX_URL" --username admin \
  --privileges "WRITE ON \"$DB\"" --default-ttl "$LEASE_TTL" --max-ttl 900 >/dev/null

# --- the sidecar ---------------------------------------------------------------------
say "enrolling identity app and starting the proxy"
lh ticket create --attribute service=demo-app --expires-in 5m --output-file "$WORK/app.ticket" >/dev/null
lh identity create app >/dev/null
lh enroll "$WORK/app.ticket" --identity app >/dev/null
APP_ID=$(lh identity show app --output json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
RUST_LOG=info "$BIN" proxy --identity app --listen "127.0.0.1:$PROXY_PORT" \
  --admin-listen "127.0.0.1:$ADMIN_PORT" --ready-file "$WORK/proxy.ready" >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
# The addresses it bound (port 0 picks free ones), from the proxy itself.
wait_for "the proxy to listen" 60 test -e "$WORK/proxy.ready"
PROXY_PORT=$(sed -n 's/^listen=.*://p' "$WORK/proxy.ready")
ADMIN_PORT=$(sed -n 's/^admin=.*://p' "$WORK/proxy.ready")
say "the proxy listens on 127.0.0.1:$PROXY_PORT (admin 127.0.0.1:$ADMIN_PORT)"
wait_for "the proxy to hold a lease (/readyz)" 60 \
  lh health --url "http://127.0.0.1:$ADMIN_PORT/readyz"

# --- the application: plain writes, no credentials -----------------------------------
: >"$WRITES"
STOP=$WORK/stop-writing
writer() {
  local seq=0 code
  while [ ! -e "$STOP" ]; do
    seq=$((seq + 1))
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
      "http://127.0.0.1:$PROXY_PORT/write?db=$DB" \
      --data-binary "writes,app=demo seq=${seq}i $(date +%s%N)") || true
    echo "${code:-000}" >>"$WRITES"
    sleep "$WRITE_INTERVAL"
  done
}
writer &
WRITER_PID=$!
PIDS+=("$WRITER_PID")

# Leases issued to the app, oldest first, as "id expires_at status" lines, parsed from
# the pretty JSON of `lease list --output json` (one field per line), so no jq needed.
leases() {
  lh lease list --output json | awk -v app="$APP_ID" '
    /"id":/         { id = $2 }
    /"issued_for":/ { who = $2 }
    /"expires_at":/ { until = $2 }
    /"status":/     { st = $2 }
    /^  }/ {
      gsub(/[",]/, "", who); gsub(/[",]/, "", id); gsub(/[",]/, "", until); gsub(/[",]/, "", st)
      if (who == app) print id, until, st
    }' | sort -k2
}
# How many lease users exist in InfluxDB right now: expired leases leave none behind.
lease_users() {
  influxql -G --data-urlencode 'q=SHOW USERS' | grep -o '"leasehold_' | wc -l | tr -d ' '
}
points() {
  influxql -G --data-urlencode "db=$DB" --data-urlencode 'q=SELECT count(seq) FROM writes' |
    sed -n 's/.*"values":\[\["[^"]*",\([0-9]*\)\]\].*/\1/p' | grep . || echo 0
}
# "SENT OK": writes so far and how many of them InfluxDB accepted (204), one snapshot.
tally() { awk '{ n++ } $1 == "204" { ok++ } END { print n + 0, ok + 0 }' "$WRITES"; }

if [ "$DURATION" -gt 0 ]; then
  say "writing a point every ${WRITE_INTERVAL}s through the proxy for ${DURATION}s"
else
  say "writing a point every ${WRITE_INTERVAL}s through the proxy; Ctrl-C to stop"
fi
printf '    (the app sends no credentials: curl -XPOST http://127.0.0.1:%s/write?db=%s)\n' "$PROXY_PORT" "$DB"
START=$SECONDS
NEXT_REPORT=$((SECONDS + REPORT_EVERY))
while [ "$DURATION" -le 0 ] || ((SECONDS - START < DURATION)); do
  sleep 0.2
  ((SECONDS >= NEXT_REPORT)) || continue
  NEXT_REPORT=$((SECONDS + REPORT_EVERY))
  mapfile -t LEASES < <(leases)
  active=$(printf '%s\n' "${LEASES[@]}" | awk '$3 == "active" { printf "%s (expires %s) ", $1, $2 }')
  read -r SENT OK < <(tally)
  printf '[%3ss] leases: %d issued, active %s| lease users in InfluxDB: %s | writes: %s sent, %s ok | points: %s\n' \
    "$((SECONDS - START))" "${#LEASES[@]}" "${active:-none }" "$(lease_users)" "$SENT" "$OK" "$(points)"
done

# --- stop writing, then check that every write landed --------------------------------
touch "$STOP"
wait "$WRITER_PID" || true
mapfile -t LEASES < <(leases)
read -r SENT OK < <(tally)
POINTS=$(points)
ROTATIONS=$((${#LEASES[@]} > 0 ? ${#LEASES[@]} - 1 : 0))
echo
say "leases issued to app, oldest first (an expired lease's InfluxDB user is dropped):"
printf '    %s\n' "${LEASES[@]}"
say "lease users left in InfluxDB: $(lease_users)"
FAILED=$(grep -v '^204$' "$WRITES" | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}' || true)
[ -z "$FAILED" ] || say "failed writes by HTTP status (000: no answer): $FAILED"
if [ "$SENT" -gt 0 ] && [ "$OK" = "$SENT" ] && [ "$POINTS" = "$OK" ]; then
  RESULT=ok
else
  RESULT=FAILED
fi
echo "summary: writes_sent=$SENT writes_204=$OK points_in_influxdb=$POINTS lease_rotations=$ROTATIONS result=$RESULT"
[ "$RESULT" = ok ]
