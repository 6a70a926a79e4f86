#!/usr/bin/env bash
# The control at fleet scale (examples/fleet_bench): the runs BENCHMARKS.md reports in
# "Control fleet scale", one after the other, each line with the load average.
#
#   bench/fleet.sh                 # everything (about 15 minutes on 2 cores)
#   bench/fleet.sh fleet|compare|history
#
# FLEET_CLIENTS (10000), FLEET_TTL (60 s: 5-minute leases compressed 5 times),
# FLEET_SECONDS (60), COMPARE_SECONDS (15), HISTORY_RECORDS (0,100000,1000000).
# Needs PostgreSQL (initdb, pg_ctl, psql: Debian's postgresql) and about 2 x
# FLEET_CLIENTS open files (the clients' sockets here, the replicas' in theirs).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CLIENTS=${FLEET_CLIENTS:-10000}
TTL=${FLEET_TTL:-60}
SECONDS_=${FLEET_SECONDS:-60}
COMPARE=${COMPARE_SECONDS:-15}
RECORDS=${HISTORY_RECORDS:-0,100000,1000000}
WHAT=${1:-all}

# Every client holds a socket; the kernel's hard limit is the ceiling.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((CLIENTS + 1000)) ] ||
  { echo "bench: ulimit -n is $(ulimit -n): too few for $CLIENTS clients" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --example fleet_bench --bin leasehold >&2)
BENCH="$ROOT/target/release/examples/fleet_bench"
echo "# $(date -u +%FT%TZ) $(nproc) cores; uptime:$(uptime | sed 's/.*load/ load/')"

case $WHAT in all | fleet)
  "$BENCH" fleet --clients "$CLIENTS" --replicas 3 --ttl "$TTL" --seconds "$SECONDS_" --herd
esac
case $WHAT in all | compare)
  for fresh in "" --fresh; do
    "$BENCH" saturate --replicas 3 --store postgres --seconds "$COMPARE" $fresh
    "$BENCH" saturate --replicas 1 --store postgres --seconds "$COMPARE" $fresh
    "$BENCH" saturate --replicas 1 --store redb --seconds "$COMPARE" $fresh
  done
  "$BENCH" fleet --clients "$CLIENTS" --replicas 1 --ttl "$TTL" --seconds "$SECONDS_"
  "$BENCH" fleet --clients "$CLIENTS" --replicas 1 --store redb --ttl "$TTL" --seconds "$SECONDS_"
esac
case $WHAT in all | history)
  "$BENCH" history --store postgres --records "$RECORDS"
  "$BENCH" history --store redb --records "$RECORDS"
esac
