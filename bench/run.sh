#!/usr/bin/env bash
# leasehold's benchmark harness: the proxy against nginx and HAProxy, lease issuance,
# footprint. See BENCHMARKS.md for what it measures, how, and one run's results.
#
#   bench/run.sh            # full run (~15 min): release builds, 3 rounds x 10 s
#   bench/run.sh --smoke    # ~3 s per contender, one round: checks the harness works (long enough that a loaded machine still completes requests)
#
# What runs:
#   sink serve   the upstream: reads and discards each body, answers 204
#   sink issuer  a v2 authorizations stub the control's `influxdb` add-on leases from
#   control      `leasehold control serve` on loopback, one identity enrolled
#   contenders   direct (no proxy), leasehold (`leasehold proxy --upstream SINK`),
#                nginx and HAProxy (static `Authorization: Token x`, keep-alive pools)
# Scenarios, contenders interleaved round by round, medians reported:
#   (a) small writes: ~1 KiB line protocol, 64 keep-alive connections, wrk
#   (b) 1 MiB gzip batches (Content-Encoding: gzip), 8 connections, wrk
#   (b') the same batches to a sink reading 125 Mbit/s per request (1 Gbit/s in all)
#   (c) 1,000 requests/s open loop (`sink load`): latency added over direct
# Then: start-to-ready of `leasehold proxy`, a run through leasehold to a real InfluxDB
# 1.x (v1 add-on), `cargo run --release --example lease_bench` (fresh, resumed, open and
# pipelined channels), and each proxy's user-space instructions per small write under
# callgrind (noise-free, unlike CPU time on a shared machine).
#
# Placement: the load generator and the sink share core BENCH_GEN_CPU (0); the proxy
# under test gets core BENCH_PROXY_CPU (1) to itself (taskset). Each proxy therefore has
# exactly one core: nginx runs 1 worker, HAProxy 1 thread, and leasehold one thread
# per CPU in its affinity mask (1 thread, one current-thread runtime).
#
# Environment:
#   LEASEHOLD_BIN, SINK_BIN   binaries to use (default: cargo build --release)
#   BENCH_SECONDS, BENCH_ROUNDS, BENCH_RATE, BENCH_STARTUP_RUNS, BENCH_LEASE_SECONDS
#   BENCH_INSTRUCTIONS=0      skip the callgrind instruction counts (needs valgrind)
#   BENCH_GEN_CPU, BENCH_PROXY_CPU, BENCH_OUT (copy results.md and the raw TSV there)
#   BENCH_KEEP=1              keep the work directory (logs, configs) afterwards
#   BENCH_SCENARIOS="small rate"  run only these of: small batch rate slow startup influx
#                             (default all; empty: none; lease issuance and callgrind have
#                             their own knobs)
# Needs: wrk nginx haproxy influxdb (Debian packages), curl, taskset, gzip, awk;
# valgrind for the instruction counts.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=scripts/influxd-conf.sh
. "$ROOT/scripts/influxd-conf.sh"

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

SMOKE=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bench/run.sh [--smoke]" >&2; exit 2 ;;
  esac
done

if [ "$SMOKE" = 1 ]; then
  SECS=${BENCH_SECONDS:-3}; ROUNDS=${BENCH_ROUNDS:-1}; STARTUP_RUNS=${BENCH_STARTUP_RUNS:-2}
  WARMUP=0; LEASE_SECS=${BENCH_LEASE_SECONDS:-0}; INSTRUCTIONS=${BENCH_INSTRUCTIONS:-0}
else
  SECS=${BENCH_SECONDS:-10}; ROUNDS=${BENCH_ROUNDS:-3}; STARTUP_RUNS=${BENCH_STARTUP_RUNS:-10}
  WARMUP=1; LEASE_SECS=${BENCH_LEASE_SECONDS:-5}; INSTRUCTIONS=${BENCH_INSTRUCTIONS:-1}
fi
RATE=${BENCH_RATE:-1000}
SCENARIOS=" ${BENCH_SCENARIOS-small batch rate slow startup influx} "
wants() { [[ $SCENARIOS == *" $1 "* ]]; }
# The first two CPUs this process may run on (a container's cpuset may not start at 0).
mapfile -t CPUS < <(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status | tr ',' '\n' |
  awk -F- '{if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1}')
GEN_CPU=${BENCH_GEN_CPU:-${CPUS[0]}}
PROXY_CPU=${BENCH_PROXY_CPU:-${CPUS[1]:-${CPUS[0]}}}
SMALL_CONNS=64
BATCH_CONNS=8
RATE_CONNS=16
SLOW_MBIT=125
WRITE_PATH='/write?db=telemetry&precision=s'
CONTENDERS=(direct leasehold nginx haproxy)

for tool in wrk nginx haproxy influxd curl taskset gzip awk; do
  command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' is missing: apt-get install wrk nginx haproxy influxdb curl"
done
if [ "$INSTRUCTIONS" = 1 ]; then
  command -v valgrind >/dev/null 2>&1 ||
    die "'valgrind' is missing (apt-get install valgrind), or set BENCH_INSTRUCTIONS=0"
fi
export PATH=$PATH:/usr/sbin

if [ -z "${LEASEHOLD_BIN:-}" ] || [ -z "${SINK_BIN:-}" ]; then
  log "building release binaries (leasehold, sink)"
  (cd "$ROOT" && cargo build --release --locked -p leasehold -p leasehold-bench-sink >&2)
fi
LEASEHOLD=${LEASEHOLD_BIN:-$ROOT/target/release/leasehold}
SINK=${SINK_BIN:-$ROOT/target/release/sink}
[ -x "$LEASEHOLD" ] || die "no leasehold binary at $LEASEHOLD"
[ -x "$SINK" ] || die "no sink binary at $SINK"
LEASEHOLD=$(realpath "$LEASEHOLD")
SINK=$(realpath "$SINK")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/leasehold-bench.XXXXXX")
RAW=$WORK/runs.tsv
REPORT=$WORK/results.md
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- small helpers ---------------------------------------------------------------------

# `start NAME CPU CMD...`: runs CMD in the background on CPU ("-" for any), output in
# $WORK/NAME.log; sets STARTED to its pid.
start() {
  local name=$1 cpu=$2; shift 2
  if [ "$cpu" = - ]; then "$@" >"$WORK/$name.log" 2>&1 &
  else taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 & fi
  STARTED=$!
  PIDS+=("$STARTED")
}

stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

wait_port() { # PORT [TRIES of 20 ms]
  local port=$1 i
  for i in $(seq "${2:-500}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.02
  done
  die "nothing listens on 127.0.0.1:$port"
}

wait_ok() { # URL [TRIES of 20 ms]
  local url=$1 i
  for i in $(seq "${2:-500}"); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.02
  done
  die "$url did not answer 2xx"
}

# `kv KEY LINE`: the value of KEY=... in a RESULT line.
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# CPU clock ticks (utime + stime) of all the given pids. Field 2 (comm) has no spaces
# for the processes measured here.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# `status_kib FIELD PIDS...`: the sum of FIELD (VmRSS, VmHWM) over the pids, in KiB.
status_kib() {
  local field=$1 total=0 pid; shift
  for pid in "$@"; do
    total=$((total + $(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

# Busy and total jiffies of one CPU, from /proc/stat.
cpu_jiffies() {
  awk -v c="cpu$1" '$1 == c {busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat
}

# Steal and total jiffies over all CPUs: on a virtual machine the host may run other
# guests on our cores, and a round it stole from says little about the proxies.
steal_jiffies() {
  awk '$1 == "cpu" {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

HZ=$(getconf CLK_TCK)

# --- machine and inputs ----------------------------------------------------------------

NPROC=$(nproc)
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -r)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $NPROC cores, $CPU_MODEL, kernel $KERNEL; load average $LOAD_BEFORE"
[ "$GEN_CPU" != "$PROXY_CPU" ] || log "warning: one usable core: generator and proxy share it"

SMALL=$WORK/small.lp
BATCH=$WORK/batch.lp.gz
awk -v SEED=1 -v LINES=8 -f "$HERE/gen_lines.awk" >"$SMALL"
# Scale the batch so that its gzip is about 1 MiB on the wire.
lines=50000
awk -v SEED=2 -v LINES=$lines -f "$HERE/gen_lines.awk" | gzip -6 >"$BATCH"
lines=$((lines * 1048576 / $(stat -c %s "$BATCH") + 1))
awk -v SEED=2 -v LINES=$lines -f "$HERE/gen_lines.awk" | gzip -6 >"$BATCH"
SMALL_BYTES=$(stat -c %s "$SMALL")
BATCH_BYTES=$(stat -c %s "$BATCH")
BATCH_RAW=$(gzip -dc "$BATCH" | wc -c)
log "bodies: small $SMALL_BYTES B (8 points); batch $BATCH_BYTES B gzip ($BATCH_RAW B raw, $lines points)"

read -r P_SINK P_ISSUER P_CONTROL P_LH P_LH_ADMIN P_NGINX P_HAPROXY P_START P_START_ADMIN \
  P_CONTROL2 P_INFLUX P_INFLUX_RPC P_LH2 P_LH2_ADMIN P_SLOW <<<"$("$SINK" ports 15 | tr '\n' ' ')"

# --- sink, issuer, control -------------------------------------------------------------

start sink "$GEN_CPU" "$SINK" serve --listen "127.0.0.1:$P_SINK"
# The same sink behind a slower "link": each request's body is read at 125 Mbit/s, so
# 8 connections make 1 Gbit/s, a fast real network rather than loopback's memcpy.
start sink-slow "$GEN_CPU" "$SINK" serve --listen "127.0.0.1:$P_SLOW" --mbit-per-request "$SLOW_MBIT"
start issuer - "$SINK" issuer --listen "127.0.0.1:$P_ISSUER"
wait_port "$P_SINK"
wait_port "$P_SLOW"
wait_port "$P_ISSUER"

HOME1=$WORK/home
lh() { LEASEHOLD_HOME=$HOME1 "$LEASEHOLD" "$@"; }
lh control init --listen "127.0.0.1:$P_CONTROL" >/dev/null
start control - env LEASEHOLD_HOME="$HOME1" LEASEHOLD_CONTROL_ADMIN_LISTEN=127.0.0.1:0 "$LEASEHOLD" control serve
wait_port "$P_CONTROL"
# Every proxy start (start-up timing, callgrind runs) takes a fresh 15-minute lease for
# the one `bench` identity: lift the per-member live-lease cap. The issuer is a stub of
# the authorizations API, not InfluxDB: the add-on check is skipped.
INFLUXDB_ADMIN_TOKEN=bench-admin-token lh addon configure influxdb \
  --endpoint-url "http://127.0.0.1:$P_ISSUER" --org-id 0000000000000001 \
  --permissions '[{"action":"write","resource":{"type":"buckets"}}]' \
  --default-ttl 900 --max-ttl 3600 --max-live-leases 1000 --skip-verify >/dev/null
lh identity create bench >/dev/null
lh ticket create >"$WORK/bench.ticket"
lh enroll "$WORK/bench.ticket" --identity bench >/dev/null

# --- contenders ------------------------------------------------------------------------

declare -A PORT=([direct]=$P_SINK [leasehold]=$P_LH [nginx]=$P_NGINX [haproxy]=$P_HAPROXY)
declare -A PID=()

render() { # TEMPLATE DIR PORT UPSTREAM_PORT FILE: @DIR@, @PORT@, @SINK_PORT@ filled in
  sed -e "s|@DIR@|$WORK/$2|g" -e "s|@PORT@|$3|g" -e "s|@SINK_PORT@|$4|g" "$1" >"$WORK/$2/$5"
}
mkdir -p "$WORK/nginx" "$WORK/haproxy"

# `start_contenders UPSTREAM_PORT`: leasehold, nginx and HAProxy in front of that sink.
start_contenders() {
  local upstream=$1
  PORT[direct]=$upstream
  render "$HERE/nginx.conf.in" nginx "$P_NGINX" "$upstream" nginx.conf
  render "$HERE/haproxy.cfg.in" haproxy "$P_HAPROXY" "$upstream" haproxy.cfg
  start leasehold "$PROXY_CPU" env LEASEHOLD_HOME="$HOME1" "$LEASEHOLD" proxy --identity bench \
    --listen "127.0.0.1:$P_LH" --admin-listen "127.0.0.1:$P_LH_ADMIN" \
    --upstream "http://127.0.0.1:$upstream"
  PID[leasehold]=$STARTED
  start nginx "$PROXY_CPU" nginx -p "$WORK/nginx" -e "$WORK/nginx/nginx-error.log" -c "$WORK/nginx/nginx.conf"
  PID[nginx]=$STARTED
  start haproxy "$PROXY_CPU" haproxy -db -f "$WORK/haproxy/haproxy.cfg"
  PID[haproxy]=$STARTED
  wait_ok "http://127.0.0.1:$P_LH_ADMIN/readyz"
  wait_port "$P_NGINX"
  wait_port "$P_HAPROXY"
  local c
  for c in leasehold nginx haproxy; do
    curl -fsS -o /dev/null -X POST --data-binary @"$SMALL" "http://127.0.0.1:${PORT[$c]}$WRITE_PATH" ||
      die "$c does not forward to the sink (see $WORK/$c.log)"
  done
}

stop_contenders() {
  local c
  for c in leasehold nginx haproxy; do stop "${PID[$c]}"; done
}

# The pids whose CPU and memory count for a contender (nginx: master and worker).
pids_of() {
  case $1 in
    direct | influxdb-direct) ;;
    nginx) echo "${PID[nginx]}" $(pgrep -P "${PID[nginx]}") ;;
    *) echo "${PID[$1]}" ;;
  esac
}

# --- measurement -----------------------------------------------------------------------

printf 'scenario\tround\tcontender\trps\tp50_us\tp99_us\tp999_us\tcpu_us_per_req\terrors\tgen_busy\tproxy_busy\tsteal\n' >"$RAW"

# `measure SCENARIO ROUND CONTENDER -- LOAD-COMMAND...`: runs the load command (which
# prints a RESULT line), records throughput, latency, the contender's CPU per request
# and how busy each core was.
measure() {
  local scenario=$1 round=$2 contender=$3; shift 4
  local pids t0 t1 g0 g1 p0 p1 s0 s1 out result
  pids=$(pids_of "$contender")
  # shellcheck disable=SC2086
  t0=$( [ -n "$pids" ] && cpu_ticks $pids || echo 0)
  g0=$(cpu_jiffies "$GEN_CPU"); p0=$(cpu_jiffies "$PROXY_CPU"); s0=$(steal_jiffies)
  out=$("$@" 2>&1) || die "$scenario/$contender: load generator failed: $out"
  g1=$(cpu_jiffies "$GEN_CPU"); p1=$(cpu_jiffies "$PROXY_CPU"); s1=$(steal_jiffies)
  # shellcheck disable=SC2086
  t1=$( [ -n "$pids" ] && cpu_ticks $pids || echo 0)
  result=$(grep '^RESULT' <<<"$out") || die "$scenario/$contender: no RESULT line in: $out"
  local requests duration errors
  requests=$(kv requests "$result"); duration=$(kv duration_us "$result"); errors=$(kv errors "$result")
  [ "$requests" -gt 0 ] || die "$scenario/$contender: no request completed"
  [ "$errors" = 0 ] || die "$scenario/$contender: $errors errors (see $WORK/*.log): $result"
  awk -v s="$scenario" -v r="$round" -v c="$contender" -v n="$requests" -v d="$duration" \
    -v p50="$(kv p50_us "$result")" -v p99="$(kv p99_us "$result")" -v p999="$(kv p999_us "$result")" \
    -v ticks=$((t1 - t0)) -v hz="$HZ" -v has="${pids:+1}" -v e="$errors" \
    -v g="$g0 $g1" -v p="$p0 $p1" -v st="$s0 $s1" '
    function busy(x,   a) { split(x, a, " "); return a[4] > a[2] ? 100 * (a[3] - a[1]) / (a[4] - a[2]) : 0 }
    BEGIN {
      cpu = has ? sprintf("%.1f", ticks / hz * 1e6 / n) : "-"
      split(st, t, " ")
      steal = t[4] > t[2] ? 100 * (t[3] - t[1]) / (t[4] - t[2]) : 0
      printf "%s\t%s\t%s\t%.0f\t%d\t%d\t%d\t%s\t%d\t%.0f\t%.0f\t%.0f\n", s, r, c, n / (d / 1e6), p50, p99, p999, cpu, e, busy(g), busy(p), steal
    }' | tee -a "$RAW" | awk -F'\t' '{printf "bench: %-6s round %s %-9s %8s req/s  p50 %6s us  p99 %6s us  p99.9 %6s us  cpu/req %6s us  cores %s%%/%s%%  steal %s%%\n", $1, $2, $3, $4, $5, $6, $7, $8, $10, $11, $12}' >&2
}

wrk_load() { # PORT BODY GZIP CONNECTIONS SECONDS [AUTHORIZATION]
  BENCH_PATH=$WRITE_PATH BENCH_BODY=$2 BENCH_GZIP=$3 BENCH_AUTH=${6:-} \
    taskset -c "$GEN_CPU" wrk -t1 -c"$4" -d"$5s" --timeout 10s -s "$HERE/wrk/post.lua" "http://127.0.0.1:$1"
}

# `wrk_scenario NAME BODY GZIP CONNECTIONS UPSTREAM_PORT`: fresh contenders, idle
# footprint, warm-up, ROUNDS interleaved rounds, then each contender's peak RSS.
declare -A IDLE_KIB=() PEAK_KIB=()
wrk_scenario() {
  local name=$1 body=$2 gzip=$3 conns=$4 round c
  start_contenders "$5"
  sleep 1
  for c in leasehold nginx haproxy; do
    # shellcheck disable=SC2046
    IDLE_KIB[$name/$c]=$(status_kib VmRSS $(pids_of "$c"))
  done
  if [ "$WARMUP" -gt 0 ]; then
    for c in "${CONTENDERS[@]}"; do wrk_load "${PORT[$c]}" "$body" "$gzip" "$conns" "$WARMUP" >/dev/null; done
  fi
  for round in $(seq "$ROUNDS"); do
    for c in "${CONTENDERS[@]}"; do
      measure "$name" "$round" "$c" -- wrk_load "${PORT[$c]}" "$body" "$gzip" "$conns" "$SECS"
    done
  done
  for c in leasehold nginx haproxy; do
    # shellcheck disable=SC2046
    PEAK_KIB[$name/$c]=$(status_kib VmHWM $(pids_of "$c"))
  done
}

if wants small; then
  log "(a) small writes: $SMALL_BYTES B bodies, $SMALL_CONNS connections, $ROUNDS x ${SECS}s per contender"
  wrk_scenario small "$SMALL" 0 "$SMALL_CONNS" "$P_SINK"
  stop_contenders
fi
if wants batch || wants rate; then
  if wants batch; then
    log "(b) 1 MiB gzip batches: $BATCH_CONNS connections, $ROUNDS x ${SECS}s per contender"
    wrk_scenario batch "$BATCH" 1 "$BATCH_CONNS" "$P_SINK"
  else
    start_contenders "$P_SINK"
  fi
  if wants rate; then
    log "(c) open loop at $RATE requests/s, $RATE_CONNS connections, $ROUNDS x ${SECS}s per contender"
    for round in $(seq "$ROUNDS"); do
      for c in "${CONTENDERS[@]}"; do
        measure rate "$round" "$c" -- taskset -c "$GEN_CPU" "$SINK" load \
          --url "http://127.0.0.1:${PORT[$c]}$WRITE_PATH" --rate "$RATE" --seconds "$SECS" \
          --warmup 0.5 --connections "$RATE_CONNS" --body "$SMALL"
      done
    done
  fi
  stop_contenders
fi
if wants slow; then
  log "(b') 1 MiB gzip batches to an upstream reading at $BATCH_CONNS x $SLOW_MBIT Mbit/s"
  wrk_scenario slow "$BATCH" 1 "$BATCH_CONNS" "$P_SLOW"
  stop_contenders
fi

# --- start to ready --------------------------------------------------------------------

STARTUP_RESULT="" STARTUP_RSS=""
if wants startup; then
  log "start to ready: $STARTUP_RUNS starts of leasehold proxy with the local control"
  STARTUP=$(LEASEHOLD_HOME=$HOME1 taskset -c "$GEN_CPU" "$SINK" startup --runs "$STARTUP_RUNS" \
    --ready "http://127.0.0.1:$P_START_ADMIN/readyz" --log "$WORK/startup.log" -- \
    taskset -c "$PROXY_CPU" "$LEASEHOLD" proxy --identity bench \
    --listen "127.0.0.1:$P_START" --admin-listen "127.0.0.1:$P_START_ADMIN" \
    --upstream "http://127.0.0.1:$P_SINK") || die "startup timing failed: $STARTUP"
  STARTUP_RESULT=$(grep '^RESULT' <<<"$STARTUP") || die "no startup RESULT: $STARTUP"
  STARTUP_RSS=$(grep '^RUN' <<<"$STARTUP" | sed -n 's/.*rss_kib=\([0-9]*\).*/\1/p' | sort -n | sed -n '1p')
  log "$STARTUP_RESULT"
fi

# --- a real InfluxDB 1.x ---------------------------------------------------------------

POINTS=""
if wants influx; then
  log "real InfluxDB 1.x: influxd, a second control with the v1 add-on"
  mkdir -p "$WORK/influxd"
  INFLUX_PW=bench-$RANDOM$RANDOM
  influxd_conf "$WORK/influxd" "$P_INFLUX" "$P_INFLUX_RPC" >"$WORK/influxd/influxd.conf"
  start influxd - influxd -config "$WORK/influxd/influxd.conf"
  INFLUX_PID=$STARTED
  INFLUX=http://127.0.0.1:$P_INFLUX
  for i in $(seq 500); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$INFLUX/ping")" = 204 ] && break
    sleep 0.02
  done
  curl -fsS -o /dev/null "$INFLUX/query" \
    --data-urlencode "q=CREATE USER admin WITH PASSWORD '$INFLUX_PW' WITH ALL PRIVILEGES" ||
    die "influxd did not start (see $WORK/influxd.log)"
  curl -fsS -o /dev/null -u "admin:$INFLUX_PW" "$INFLUX/query" --data-urlencode "q=CREATE DATABASE telemetry"

  HOME2=$WORK/home2
  lh2() { LEASEHOLD_HOME=$HOME2 "$LEASEHOLD" "$@"; }
  lh2 control init --listen "127.0.0.1:$P_CONTROL2" >/dev/null
  start control2 - env LEASEHOLD_HOME="$HOME2" LEASEHOLD_CONTROL_ADMIN_LISTEN=127.0.0.1:0 "$LEASEHOLD" control serve
  wait_port "$P_CONTROL2"
  INFLUXDB_ADMIN_PASSWORD=$INFLUX_PW lh2 addon configure influxdb-v1 --endpoint-url "$INFLUX" \
    --username admin --privileges 'WRITE ON "telemetry"' --default-ttl 900 --max-live-leases 1000 >/dev/null
  lh2 identity create bench >/dev/null
  lh2 ticket create >"$WORK/bench2.ticket"
  lh2 enroll "$WORK/bench2.ticket" --identity bench >/dev/null
  # The direct contender writes with a leased user of its own.
  DIRECT_AUTH="Basic $(lh2 lease create --identity bench | tr -d '\n' | base64 -w0)"
  start leasehold-influx "$PROXY_CPU" env LEASEHOLD_HOME="$HOME2" "$LEASEHOLD" proxy --identity bench \
    --listen "127.0.0.1:$P_LH2" --admin-listen "127.0.0.1:$P_LH2_ADMIN"
  PID[influxdb-leasehold]=$STARTED
  wait_ok "http://127.0.0.1:$P_LH2_ADMIN/readyz"
  # InfluxDB 1.x checks a user's password with bcrypt (~0.1 s of CPU) until that user is in
  # its authentication cache: one request per credential first, or 64 connections racing
  # through bcrypt at once dominate a short run.
  for port in "$P_INFLUX" "$P_LH2"; do
    curl -fsS -o /dev/null -H "Authorization: $DIRECT_AUTH" --data-binary @"$SMALL" \
      "http://127.0.0.1:$port$WRITE_PATH" || die "a first write to InfluxDB via port $port failed"
  done
  PORT[influxdb-direct]=$P_INFLUX
  PORT[influxdb-leasehold]=$P_LH2
  for round in $(seq "$ROUNDS"); do
    measure influx "$round" influxdb-direct -- wrk_load "$P_INFLUX" "$SMALL" 0 "$SMALL_CONNS" "$SECS" "$DIRECT_AUTH"
    measure influx "$round" influxdb-leasehold -- wrk_load "$P_LH2" "$SMALL" 0 "$SMALL_CONNS" "$SECS"
  done
  POINTS=$(curl -fsS -u "admin:$INFLUX_PW" "$INFLUX/query" --data-urlencode "db=telemetry" \
    --data-urlencode "q=SELECT count(usage_user) FROM cpu" | sed -n 's/.*"values":\[\[[^,]*,\([0-9]*\)\]\].*/\1/p')
  [ "${POINTS:-0}" -gt 0 ] || die "no points arrived in InfluxDB"
  stop "${PID[influxdb-leasehold]}"
  stop "$INFLUX_PID"
fi

# --- lease issuance --------------------------------------------------------------------

LEASE_OUT=""
if [ "$LEASE_SECS" -gt 0 ]; then
  # Fresh channels (full handshakes, then resumed ones) and open channels with 8
  # clients; one channel with 64 requests in flight.
  for mode in "8 fresh" "8 fresh-resume" "8 open" "64 pipelined"; do
    # shellcheck disable=SC2086
    set -- $mode
    log "lease issuance: cargo run --release --example lease_bench -- $LEASE_SECS $1 $2"
    out=$(cd "$ROOT" && cargo run -q --release --locked --example lease_bench -- "$LEASE_SECS" "$1" "$2" 2>&1) ||
      die "lease_bench failed: $out"
    LEASE_OUT+="$(tail -n 1 <<<"$out")  [$1 $( [ "$2" = pipelined ] && echo "in flight" || echo clients)]"$'\n'
  done
fi

# --- user-space instructions per request (callgrind) -----------------------------------

# CPU time on a shared VM moves by ±15% between runs; instruction counts do not. Each
# proxy runs under callgrind twice, serving N1 and then N2 small writes; the difference
# divided by N2 - N1 is its user-space instructions per request (start-up cancels out).
# The kernel's share (the loopback TCP path, about the same for every proxy) is not in it.
declare -A INSTR=()
N1=1000 N2=6000
instructions() { # CONTENDER: sets INSTR[CONTENDER]
  local c=$1 n ir=() served=() pid cmd count
  for n in $N1 $N2; do
    case $c in
      leasehold) cmd=(env LEASEHOLD_HOME="$HOME1" "$LEASEHOLD" proxy --identity bench
        --listen "127.0.0.1:$P_LH" --admin-listen "127.0.0.1:$P_LH_ADMIN" --upstream "http://127.0.0.1:$P_SINK") ;;
      # One process: callgrind follows the worker only without the master.
      nginx) sed 's/^daemon off;/daemon off;\nmaster_process off;/' "$WORK/nginx/nginx.conf" >"$WORK/nginx/single.conf"
        cmd=(nginx -p "$WORK/nginx" -e "$WORK/nginx/nginx-error.log" -c "$WORK/nginx/single.conf") ;;
      haproxy) cmd=(haproxy -db -f "$WORK/haproxy/haproxy.cfg") ;;
    esac
    start "cg-$c" "$PROXY_CPU" valgrind --tool=callgrind --trace-children=yes \
      --callgrind-out-file="$WORK/cg-$c.$n" "${cmd[@]}"
    pid=$STARTED
    if [ "$c" = leasehold ]; then wait_ok "http://127.0.0.1:$P_LH_ADMIN/readyz" 3000; else wait_port "${PORT[$c]}" 3000; fi
    BENCH_PATH=$WRITE_PATH BENCH_BODY=$SMALL BENCH_LIMIT=$n taskset -c "$GEN_CPU" \
      wrk -t1 -c"$SMALL_CONNS" -d20s -s "$HERE/wrk/count.lua" "http://127.0.0.1:${PORT[$c]}" >"$WORK/cg-$c.$n.wrk" 2>&1
    # wrk stops after the event-loop pass in which the Nth answer came, so a proxy that
    # answers several connections in one burst is counted a few answers past N.
    count=$(sed -n 's/^RESULT requests=\([0-9]*\) errors=0$/\1/p' "$WORK/cg-$c.$n.wrk")
    [ "${count:-0}" -ge "$n" ] ||
      die "$c under callgrind: not $n clean answers (see $WORK/cg-$c.$n.wrk)"
    # leasehold counts what it served (answers wrk stopped waiting for included).
    if [ "$c" = leasehold ]; then
      count=$(curl -fsS "http://127.0.0.1:$P_LH_ADMIN/metrics" |
        awk '/^leasehold_proxy_requests_total/ {n += $2} END {print n}')
    fi
    stop "$pid"
    ir+=("$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg-$c.$n")")
    served+=("$count")
  done
  INSTR[$c]=$(( (ir[1] - ir[0]) / (served[1] - served[0]) ))
  log "$c: ${INSTR[$c]} user-space instructions per request"
}
if [ "$INSTRUCTIONS" = 1 ]; then
  log "instructions per small write under callgrind ($N1 and $N2 requests per contender)"
  render "$HERE/nginx.conf.in" nginx "$P_NGINX" "$P_SINK" nginx.conf
  render "$HERE/haproxy.cfg.in" haproxy "$P_HAPROXY" "$P_SINK" haproxy.cfg
  for c in leasehold nginx haproxy; do instructions "$c"; done
fi

# --- report ----------------------------------------------------------------------------

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# `median_of SCENARIO CONTENDER COLUMN`: the median over rounds (column numbers as in the TSV).
median_of() {
  awk -F'\t' -v s="$1" -v c="$2" -v col="$3" '$1 == s && $3 == c {print $col}' "$RAW" |
    sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (v[1] == "-") print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
ms() { awk -v us="$1" 'BEGIN {printf "%.2f", us / 1000}'; }
mib() { if [ -n "$1" ]; then awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; else echo -; fi; }

{
  echo "## Results ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Machine: $NPROC cores, $CPU_MODEL, Linux $KERNEL. Load average before: $LOAD_BEFORE; after: $LOAD_AFTER."
  echo "Generator and sink on core $GEN_CPU, the proxy under test on core $PROXY_CPU (taskset)."
  echo "$ROUNDS round(s) x ${SECS}s per contender and scenario, interleaved; medians over rounds."
  echo
  for s in small batch slow; do
    wants "$s" || continue
    case $s in
      small) echo "### (a) small writes: $SMALL_BYTES B line protocol, $SMALL_CONNS connections (wrk)" ;;
      batch) echo "### (b) 1 MiB gzip batches: $BATCH_BYTES B gzip ($BATCH_RAW B raw), $BATCH_CONNS connections (wrk)" ;;
      slow) echo "### (b') the same batches to an upstream reading $SLOW_MBIT Mbit/s per request ($((BATCH_CONNS * SLOW_MBIT)) Mbit/s in all)" ;;
    esac
    echo
    echo "| contender | req/s | vs direct | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/req | gen core busy | proxy core busy | RSS idle MiB | peak RSS MiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    direct_rps=$(median_of $s direct 4)
    for c in "${CONTENDERS[@]}"; do
      rps=$(median_of $s "$c" 4)
      idle=${IDLE_KIB[$s/$c]:-}; peak=${PEAK_KIB[$s/$c]:-}
      printf '| %s | %.0f | %s | %s | %s | %s | %s | %s%% | %s%% | %s | %s |\n' "$c" "$rps" \
        "$(awk -v a="$rps" -v b="$direct_rps" 'BEGIN {printf "%.0f%%", 100 * a / b}')" \
        "$(ms "$(median_of $s "$c" 5)")" "$(ms "$(median_of $s "$c" 6)")" "$(ms "$(median_of $s "$c" 7)")" \
        "$(median_of $s "$c" 8)" "$(median_of $s "$c" 10)" "$(median_of $s "$c" 11)" \
        "${idle:+$(mib "$idle")}" "${peak:+$(mib "$peak")}"
    done
    echo
    # The targets ask for every round, not the median: each round as measured, with the
    # share of the cores the host stole during it (the mean over the round's contenders).
    echo "Round by round: req/s, then proxy CPU µs/req, per contender; steal over both cores."
    echo
    echo "| round | leasehold | nginx | haproxy | direct | leasehold µs | nginx µs | haproxy µs | steal |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v s="$s" '
      $1 == s { rps[$2, $3] = $4; cpu[$2, $3] = $8; steal[$2] += $12; n[$2]++; if ($2 > last) last = $2 }
      END {
        for (r = 1; r <= last; r++)
          printf "| %d | %s | %s | %s | %s | %s | %s | %s | %.0f%% |\n", r, rps[r, "leasehold"], rps[r, "nginx"],
            rps[r, "haproxy"], rps[r, "direct"], cpu[r, "leasehold"], cpu[r, "nginx"], cpu[r, "haproxy"], steal[r] / n[r]
      }' "$RAW"
    echo
  done
  if wants rate; then
    echo "### (c) open loop at $RATE requests/s, $RATE_CONNS connections (sink load)"
    echo
    echo "| contender | p50 ms | p99 ms | p99.9 ms | p99 added over direct ms |"
    echo "|---|---:|---:|---:|---:|"
    direct_p99=$(median_of rate direct 6)
    for c in "${CONTENDERS[@]}"; do
      p99=$(median_of rate "$c" 6)
      printf '| %s | %s | %s | %s | %s |\n' "$c" "$(ms "$(median_of rate "$c" 5)")" "$(ms "$p99")" \
        "$(ms "$(median_of rate "$c" 7)")" "$( [ "$c" = direct ] && echo - || ms $((p99 - direct_p99)))"
    done
    echo
  fi
  if wants influx; then
    echo "### Through leasehold to a real InfluxDB 1.x (v1 add-on, Basic auth), small writes, $SMALL_CONNS connections"
    echo
    echo "| path | req/s | p50 ms | p99 ms | p99.9 ms | leasehold CPU µs/req |"
    echo "|---|---:|---:|---:|---:|---:|"
    for c in influxdb-direct influxdb-leasehold; do
      printf '| %s | %.0f | %s | %s | %s | %s |\n' "$c" "$(median_of influx "$c" 4)" \
        "$(ms "$(median_of influx "$c" 5)")" "$(ms "$(median_of influx "$c" 6)")" \
        "$(ms "$(median_of influx "$c" 7)")" "$(median_of influx "$c" 8)"
    done
    echo
    echo "$POINTS points in InfluxDB afterwards (identical timestamps overwrite)."
    echo
  fi
  echo "### leasehold footprint and start-up"
  echo
  echo "| measure | value |"
  echo "|---|---:|"
  echo "| RSS idle after the first lease (MiB) | $(mib "${IDLE_KIB[small/leasehold]:-}") |"
  echo "| peak RSS under (a) (MiB) | $(mib "${PEAK_KIB[small/leasehold]:-}") |"
  echo "| peak RSS under (b) (MiB) | $(mib "${PEAK_KIB[batch/leasehold]:-}") |"
  echo "| RSS at ready, fresh start (MiB) | $(mib "${STARTUP_RSS:-}") |"
  echo "| start to ready, median of $(kv runs "$STARTUP_RESULT") (ms) | $(kv median_ms "$STARTUP_RESULT") |"
  echo "| start to ready, min / max (ms) | $(kv min_ms "$STARTUP_RESULT") / $(kv max_ms "$STARTUP_RESULT") |"
  echo
  echo "### User-space instructions per small write (callgrind)"
  echo
  if [ "$INSTRUCTIONS" = 1 ]; then
    echo "| contender | instructions per request |"
    echo "|---|---:|"
    for c in leasehold nginx haproxy; do echo "| $c | ${INSTR[$c]} |"; done
  else
    echo "skipped (smoke mode or BENCH_INSTRUCTIONS=0)"
  fi
  echo
  echo "### Lease issuance (examples/lease_bench.rs, ${LEASE_SECS}s per mode)"
  echo
  if [ -n "$LEASE_OUT" ]; then
    echo '```'
    echo "$LEASE_OUT"
    echo '```'
  else
    echo "skipped (smoke mode or BENCH_LEASE_SECONDS=0)"
  fi
} >"$REPORT"

cat "$REPORT"
if [ -n "${BENCH_OUT:-}" ]; then
  mkdir -p "$BENCH_OUT"
  cp "$REPORT" "$RAW" "$BENCH_OUT/"
  log "results copied to $BENCH_OUT"
fi
