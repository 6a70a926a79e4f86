#!/usr/bin/env bash
# The outlet's cost: the same sidecar (`leasehold proxy`) in front of the 204 sink
#   direct   proxy → sink (plain HTTP)
#   outlet   proxy → Noise channel → `leasehold outlet` → sink
#   stunnel  proxy → stunnel client → TLS → stunnel server → sink (Debian stunnel4)
# for small writes (~1 KiB, 64 connections) and 1 MiB gzip batches (8 connections),
# rounds interleaved, medians reported. CPU per request counts every process of the
# chain (proxy, plus the outlet or both stunnels); the sink and wrk share core
# BENCH_GEN_CPU, the chain gets BENCH_PROXY_CPU.
#
#   bench/outlet.sh        # release builds; BENCH_SECONDS (5), BENCH_ROUNDS (3),
#                          # BENCH_BATCH_CONNECTIONS (8)
#
# Needs: wrk stunnel4 openssl curl taskset gzip awk. See BENCHMARKS.md ("Outlet").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
mapfile -t CPUS < <(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status | tr ',' '\n' |
  awk -F- '{if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1}')
GEN_CPU=${BENCH_GEN_CPU:-${CPUS[0]}}
PROXY_CPU=${BENCH_PROXY_CPU:-${CPUS[1]:-${CPUS[0]}}}
WRITE_PATH='/write?db=telemetry&precision=s'
for tool in wrk stunnel4 openssl curl taskset gzip awk; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing: apt-get install wrk stunnel4 openssl curl"
done
if [ -z "${LEASEHOLD_BIN:-}" ] || [ -z "${SINK_BIN:-}" ]; then
  log "building release binaries (leasehold, sink)"
  (cd "$ROOT" && cargo build --release --locked -p leasehold -p leasehold-bench-sink >&2)
fi
LEASEHOLD=$(realpath "${LEASEHOLD_BIN:-$ROOT/target/release/leasehold}")
SINK=$(realpath "${SINK_BIN:-$ROOT/target/release/sink}")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/leasehold-outlet-bench.XXXXXX")
RAW=$WORK/runs.tsv
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # NAME CPU CMD...: sets STARTED
  local name=$1 cpu=$2; shift 2
  if [ "$cpu" = - ]; then "$@" >"$WORK/$name.log" 2>&1 &
  else taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 & fi
  STARTED=$!
  PIDS+=("$STARTED")
}
wait_port() {
  local i
  for i in $(seq 500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.02; done
  die "nothing listens on 127.0.0.1:$1"
}
wait_ok() {
  local i
  for i in $(seq 500); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.02; done
  die "$1 did not answer 2xx"
}
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

SMALL=$WORK/small.lp
BATCH=$WORK/batch.lp.gz
awk -v SEED=1 -v LINES=8 -f "$HERE/gen_lines.awk" >"$SMALL"
lines=50000
awk -v SEED=2 -v LINES=$lines -f "$HERE/gen_lines.awk" | gzip -6 >"$BATCH"
lines=$((lines * 1048576 / $(stat -c %s "$BATCH") + 1))
awk -v SEED=2 -v LINES=$lines -f "$HERE/gen_lines.awk" | gzip -6 >"$BATCH"
log "bodies: small $(stat -c %s "$SMALL") B; batch $(stat -c %s "$BATCH") B gzip"

read -r P_SINK P_ISSUER P_CONTROL P_DIRECT P_DIRECT_ADMIN P_OUTLET P_OUTLET_ADMIN P_VIA P_VIA_ADMIN \
  P_STC P_STS P_ST P_ST_ADMIN <<<"$("$SINK" ports 13 | tr '\n' ' ')"

start sink "$GEN_CPU" "$SINK" serve --listen "127.0.0.1:$P_SINK"
start issuer - "$SINK" issuer --listen "127.0.0.1:$P_ISSUER"
wait_port "$P_SINK"
wait_port "$P_ISSUER"

H=$WORK/home
lh() { LEASEHOLD_HOME=$H "$LEASEHOLD" "$@"; }
lh control init --listen "127.0.0.1:$P_CONTROL" >/dev/null
start control - env LEASEHOLD_HOME="$H" LEASEHOLD_CONTROL_ADMIN_LISTEN=127.0.0.1:0 "$LEASEHOLD" control serve
wait_port "$P_CONTROL"
INFLUXDB_ADMIN_TOKEN=bench-admin-token lh addon configure influxdb \
  --endpoint-url "http://127.0.0.1:$P_ISSUER" --org-id 0000000000000001 \
  --permissions '[{"action":"write","resource":{"type":"buckets"}}]' \
  --default-ttl 900 --max-ttl 3600 --max-live-leases 1000 >/dev/null
for id in bench outlet; do
  lh identity create "$id" >/dev/null
  lh ticket create >"$WORK/$id.ticket"
  lh enroll "$WORK/$id.ticket" --identity "$id" >/dev/null
done
OUTLET_ID=$(lh identity show outlet --output json | sed -n 's/.*"id": *"\([a-z0-9]*\)".*/\1/p')

# stunnel pair: a throwaway certificate, the client verifying it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=sink -keyout "$WORK/st.key" -out "$WORK/st.crt" >/dev/null 2>&1
cat >"$WORK/server.conf" <<CONF
foreground = yes
pid =
[sink]
accept = 127.0.0.1:$P_STS
connect = 127.0.0.1:$P_SINK
cert = $WORK/st.crt
key = $WORK/st.key
CONF
cat >"$WORK/client.conf" <<CONF
foreground = yes
pid =
[sink]
client = yes
accept = 127.0.0.1:$P_STC
connect = 127.0.0.1:$P_STS
CAfile = $WORK/st.crt
verifyPeer = yes
CONF

proxy() { # NAME PORT ADMIN_PORT UPSTREAM_PORT [FLAGS...]
  local name=$1 port=$2 admin=$3 up=$4; shift 4
  start "$name" "$PROXY_CPU" env LEASEHOLD_HOME="$H" "$LEASEHOLD" proxy --identity bench \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --upstream "http://127.0.0.1:$up" "$@"
}
declare -A PORT=([direct]=$P_DIRECT [outlet]=$P_VIA [stunnel]=$P_ST)
declare -A CHAIN=()
proxy proxy-direct "$P_DIRECT" "$P_DIRECT_ADMIN" "$P_SINK"
CHAIN[direct]=$STARTED
start outlet "$PROXY_CPU" env LEASEHOLD_HOME="$H" "$LEASEHOLD" outlet --identity outlet \
  --listen "127.0.0.1:$P_OUTLET" --admin-listen "127.0.0.1:$P_OUTLET_ADMIN" --upstream "http://127.0.0.1:$P_SINK"
OUTLET_PID=$STARTED
wait_ok "http://127.0.0.1:$P_OUTLET_ADMIN/readyz"
proxy proxy-outlet "$P_VIA" "$P_VIA_ADMIN" "$P_SINK" --outlet "127.0.0.1:$P_OUTLET" --outlet-identity "$OUTLET_ID"
CHAIN[outlet]="$STARTED $OUTLET_PID"
start stunnel-server "$PROXY_CPU" stunnel4 "$WORK/server.conf"
STS_PID=$STARTED
start stunnel-client "$PROXY_CPU" stunnel4 "$WORK/client.conf"
CHAIN[stunnel]="$STARTED $STS_PID"
wait_port "$P_STS"
wait_port "$P_STC"
proxy proxy-stunnel "$P_ST" "$P_ST_ADMIN" "$P_STC"
CHAIN[stunnel]="$STARTED ${CHAIN[stunnel]}"
for admin in "$P_DIRECT_ADMIN" "$P_VIA_ADMIN" "$P_ST_ADMIN"; do wait_ok "http://127.0.0.1:$admin/readyz"; done
for c in direct outlet stunnel; do
  curl -fsS -o /dev/null -X POST --data-binary @"$SMALL" "http://127.0.0.1:${PORT[$c]}$WRITE_PATH" ||
    die "$c does not reach the sink (see $WORK/*.log)"
done

printf 'scenario\tround\tcontender\trps\tp50_us\tp99_us\tcpu_us_per_req\n' >"$RAW"
wrk_load() { # PORT BODY GZIP CONNECTIONS SECONDS
  BENCH_PATH=$WRITE_PATH BENCH_BODY=$2 BENCH_GZIP=$3 BENCH_AUTH='' \
    taskset -c "$GEN_CPU" wrk -t1 -c"$4" -d"$5s" --timeout 10s -s "$HERE/wrk/post.lua" "http://127.0.0.1:$1"
}
measure() { # SCENARIO ROUND CONTENDER BODY GZIP CONNECTIONS
  local t0 t1 out result n d
  # shellcheck disable=SC2086
  t0=$(cpu_ticks ${CHAIN[$3]})
  out=$(wrk_load "${PORT[$3]}" "$4" "$5" "$6" "$SECS" 2>&1) || die "$1/$3: wrk failed: $out"
  # shellcheck disable=SC2086
  t1=$(cpu_ticks ${CHAIN[$3]})
  result=$(grep '^RESULT' <<<"$out") || die "$1/$3: no RESULT in: $out"
  [ "$(kv errors "$result")" = 0 ] || die "$1/$3: errors: $result"
  n=$(kv requests "$result"); d=$(kv duration_us "$result")
  awk -v s="$1" -v r="$2" -v c="$3" -v n="$n" -v d="$d" -v p50="$(kv p50_us "$result")" \
    -v p99="$(kv p99_us "$result")" -v ticks=$((t1 - t0)) -v hz="$HZ" \
    'BEGIN { printf "%s\t%s\t%s\t%.0f\t%d\t%d\t%.1f\n", s, r, c, n / (d / 1e6), p50, p99, ticks / hz * 1e6 / n }' |
    tee -a "$RAW" >&2
}
for c in direct outlet stunnel; do wrk_load "${PORT[$c]}" "$SMALL" 0 64 1 >/dev/null; done
for round in $(seq "$ROUNDS"); do
  for c in direct outlet stunnel; do measure small "$round" "$c" "$SMALL" 0 64; done
  for c in direct outlet stunnel; do measure batch "$round" "$c" "$BATCH" 1 "${BENCH_BATCH_CONNECTIONS:-8}"; done
done

echo "| scenario | path | req/s | p50 µs | p99 µs | CPU µs/request (whole chain) |"
echo "|---|---|---:|---:|---:|---:|"
for s in small batch; do
  for c in direct outlet stunnel; do
    awk -F'\t' -v s="$s" -v c="$c" '
      $1 == s && $3 == c { n++; rps[n] = $4; p50[n] = $5; p99[n] = $6; cpu[n] = $7 }
      function median(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((n + 1) / 2)]
      }
      END { printf "| %s | %s | %.0f | %d | %d | %.1f |\n", s, c, median(rps, n), median(p50, n), median(p99, n), median(cpu, n) }' "$RAW"
  done
done
