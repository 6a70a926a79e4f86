#!/usr/bin/env bash
# leasehold proxy's memory, measured as bench/run.sh measures it, and where it goes.
#
#   bench/footprint.sh            # release builds (cargo build --release)
#   LEASEHOLD_BIN=… SINK_BIN=… bench/footprint.sh
#
# Starts the sink, the issuer stub and a local control as bench/run.sh does, then
# `leasehold proxy --upstream http://SINK` on one core (BENCH_PROXY_CPU, the second
# allowed CPU, as in the harness), and prints:
#   ready   VmRSS the moment /readyz first answers 200 (the first lease held)
#   idle    VmRSS one second after one small write went through (the harness's
#           "RSS idle after the first lease")
#   peak    VmHWM after BENCH_LOAD_SECONDS (3) of wrk, 64 connections, small writes
#           (skipped when BENCH_LOAD_SECONDS=0 or wrk is missing)
# and, for the idle proxy, /proc/PID/smaps summed by kind of mapping (the binary's
# text and data, heap and malloc arenas, thread stacks, the rest) and its thread count.
# Each figure is the minimum over BENCH_FOOTPRINT_RUNS (3) starts.
# FOOTPRINT_WRAP="CMD ARGS" runs the proxy under CMD (bench/code-order.sh uses it to run
# it under callgrind). Needs curl, taskset, awk (and wrk for the peak).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
die() { echo "footprint: error: $*" >&2; exit 1; }

RUNS=${BENCH_FOOTPRINT_RUNS:-3}
LOAD_SECS=${BENCH_LOAD_SECONDS:-3}
mapfile -t CPUS < <(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status | tr ',' '\n' |
  awk -F- '{if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1}')
GEN_CPU=${BENCH_GEN_CPU:-${CPUS[0]}}
PROXY_CPU=${BENCH_PROXY_CPU:-${CPUS[1]:-${CPUS[0]}}}
WRITE_PATH='/write?db=telemetry&precision=s'

if [ -z "${LEASEHOLD_BIN:-}" ] || [ -z "${SINK_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked -p leasehold -p leasehold-bench-sink >&2)
fi
LEASEHOLD=$(realpath "${LEASEHOLD_BIN:-$ROOT/target/release/leasehold}")
SINK=$(realpath "${SINK_BIN:-$ROOT/target/release/sink}")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/leasehold-footprint.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start() { # NAME CPU CMD...: sets STARTED
  local name=$1 cpu=$2; shift 2
  if [ "$cpu" = - ]; then "$@" >"$WORK/$name.log" 2>&1 &
  else taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 & fi
  STARTED=$!
  PIDS+=("$STARTED")
}
wait_port() {
  local i
  for i in $(seq 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.02
  done
  die "nothing listens on 127.0.0.1:$1"
}
status_kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$2/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.2f", k / 1024}'; }

awk -v SEED=1 -v LINES=8 -f "$HERE/gen_lines.awk" >"$WORK/small.lp"
read -r P_SINK P_ISSUER P_CONTROL P_LH P_LH_ADMIN <<<"$("$SINK" ports 5 | tr '\n' ' ')"
start sink "$GEN_CPU" "$SINK" serve --listen "127.0.0.1:$P_SINK"
start issuer - "$SINK" issuer --listen "127.0.0.1:$P_ISSUER"
wait_port "$P_SINK"
wait_port "$P_ISSUER"
export LEASEHOLD_HOME=$WORK/home
"$LEASEHOLD" control init --listen "127.0.0.1:$P_CONTROL" >/dev/null
start control - env LEASEHOLD_CONTROL_ADMIN_LISTEN=127.0.0.1:0 "$LEASEHOLD" control serve
wait_port "$P_CONTROL"
INFLUXDB_ADMIN_TOKEN=bench-admin-token "$LEASEHOLD" addon configure influxdb \
  --endpoint-url "http://127.0.0.1:$P_ISSUER" --org-id 0000000000000001 \
  --permissions '[{"action":"write","resource":{"type":"buckets"}}]' \
  --default-ttl 900 --max-ttl 3600 --max-live-leases 1000 --skip-verify >/dev/null
"$LEASEHOLD" identity create bench >/dev/null
"$LEASEHOLD" ticket create >"$WORK/bench.ticket"
"$LEASEHOLD" enroll "$WORK/bench.ticket" --identity bench >/dev/null

# `smaps_kinds PID`: Rss and Private_Dirty (KiB) summed by kind of mapping. The
# binary's and the libraries' pages are file-backed: shared with every process that maps
# the same file, and counted as far as this process has touched them (plus the kernel's
# fault-around: a page fault maps up to 64 KiB of neighbours already in the page cache).
smaps_kinds() {
  awk -v exe="$LEASEHOLD" '
    /^[0-9a-f]+-[0-9a-f]+ / {
      name = $6; perms = $2
      if (name == exe && perms ~ /x/) kind = "binary: code"
      else if (name == exe && perms ~ /w/) kind = "binary: data"
      else if (name == exe) kind = "binary: read-only (rodata, relocations, relro)"
      else if (name == "[heap]") kind = "heap (brk, main malloc arena)"
      else if (name ~ /^\[stack/) kind = "main thread stack"
      else if (name ~ /\.so/) kind = "shared libraries (libc, libm, ld.so, libgcc_s)"
      else if (name == "") kind = "anonymous (thread arenas, thread stacks)"
      else kind = "other: " name
      next
    }
    $1 == "Rss:" { rss[kind] += $2 }
    $1 == "Private_Dirty:" { dirty[kind] += $2 }
    END { for (k in rss) if (rss[k] > 0) printf "  %-48s Rss %6d KiB  private dirty %6d KiB\n", k, rss[k], dirty[k] }
  ' "/proc/$1/smaps" | sort
}

# How much of link/code-order.txt this binary still has (build.rs): a stale list lays
# out less of the code a sidecar runs together, and its code RSS grows back.
ORDER=$ROOT/link/code-order.txt
if [ -f "$ORDER" ] && command -v nm >/dev/null 2>&1; then
  listed=$(grep -vc '^#' "$ORDER")
  found=$(nm --defined-only "$LEASEHOLD" 2>/dev/null | awk 'NR == FNR { if ($0 !~ /^#/) want[$0] = 1; next } ($3 in want) { seen[$3] = 1 } END { print length(seen) }' "$ORDER" -)
  echo "code order: $found of the $listed functions in link/code-order.txt are in this binary"
fi

best_ready='' best_idle='' best_peak=''
for run in $(seq "$RUNS"); do
  # shellcheck disable=SC2086
  start proxy "$PROXY_CPU" ${FOOTPRINT_WRAP:-} "$LEASEHOLD" proxy --identity bench \
    --listen "127.0.0.1:$P_LH" --admin-listen "127.0.0.1:$P_LH_ADMIN" \
    --upstream "http://127.0.0.1:$P_SINK"
  pid=$STARTED
  ready=''
  for i in $(seq 5000); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$P_LH_ADMIN/readyz" 2>/dev/null; then
      ready=$(status_kib VmRSS "$pid"); break
    fi
    sleep 0.002
  done
  [ -n "$ready" ] || die "the proxy did not become ready (see $WORK/proxy.log)"
  curl -fsS -o /dev/null -X POST --data-binary @"$WORK/small.lp" "http://127.0.0.1:$P_LH$WRITE_PATH" ||
    die "the proxy does not forward to the sink"
  sleep 1
  idle=$(status_kib VmRSS "$pid")
  if [ "$run" = 1 ]; then
    echo "idle proxy, by mapping (run 1):"
    smaps_kinds "$pid"
    echo "  threads: $(status_kib Threads "$pid")"
  fi
  peak=''
  if [ "$LOAD_SECS" != 0 ] && command -v wrk >/dev/null 2>&1; then
    BENCH_PATH=$WRITE_PATH BENCH_BODY=$WORK/small.lp BENCH_GZIP=0 BENCH_AUTH='' \
      taskset -c "$GEN_CPU" wrk -t1 -c64 -d"${LOAD_SECS}s" -s "$HERE/wrk/post.lua" \
      "http://127.0.0.1:$P_LH" >/dev/null
    peak=$(status_kib VmHWM "$pid")
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "run $run: ready $(mib "$ready") MiB, idle $(mib "$idle") MiB${peak:+, peak $(mib "$peak") MiB}"
  if [ -z "$best_idle" ] || [ "$idle" -lt "$best_idle" ]; then best_idle=$idle; fi
  if [ -z "$best_ready" ] || [ "$ready" -lt "$best_ready" ]; then best_ready=$ready; fi
  if [ -n "$peak" ] && { [ -z "$best_peak" ] || [ "$peak" -lt "$best_peak" ]; }; then best_peak=$peak; fi
done
echo "RESULT ready_kib=$best_ready idle_kib=$best_idle peak_kib=${best_peak:--}" \
  "(ready $(mib "$best_ready") MiB, idle $(mib "$best_idle") MiB = $((best_idle * 1024)) B)"
