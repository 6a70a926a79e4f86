#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the whole suite.
#   - InfluxDB 1.x (Debian package `influxdb`) for the real-database tests;
#   - a Python venv with the official InfluxDB clients, for the real-client tests.
#   - debootstrap, and the Docker base images built from Debian's packages
#     (scripts/docker-base-images.sh, cached), for the Docker sidecar test; the Docker
#     Engine and Compose (`docker-compose` or `docker compose`) must be there already.
#   - wrk, nginx and HAProxy for the benchmark harness's smoke test;
#   - faketime, to run a proxy whose wall clock is wrong;
#   - iproute2 (`ip netns`), for the outlet's two-host test and the control replica cut
#     off from PostgreSQL (run as root).
#   - PostgreSQL (Debian package `postgresql`) for the shared-store tests: they run
#     servers of their own (`initdb` + `pg_ctl` from /usr/lib/postgresql/*/bin, as the
#     unprivileged `postgres` user), never the system service.
# A missing prerequisite fails the run; no test is skipped for want of one.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
[ -x /usr/sbin/debootstrap ] || command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ -x /usr/bin/faketime ] || missing+=(faketime)
# The outlet's two-host test and the cut-off replica: network namespaces and veth pairs
# (needs root).
[ -x /usr/sbin/ip ] || [ -x /usr/bin/ip ] || command -v ip >/dev/null 2>&1 || missing+=(iproute2)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (Debian packages)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts the nginx and haproxy services on install; the benchmarks run their own.
if command -v systemctl >/dev/null 2>&1; then as_root systemctl stop nginx haproxy >/dev/null 2>&1 || true; fi
# Debian's package may start its own influxd; ours run on ephemeral ports, so it is
# harmless, but stop it so it does not hold 8086 for the demo.
if command -v systemctl >/dev/null 2>&1; then as_root systemctl stop influxdb >/dev/null 2>&1 || true; fi
influxd version
# Likewise Debian's PostgreSQL cluster service: the tests start their own servers.
if command -v systemctl >/dev/null 2>&1; then as_root systemctl stop postgresql >/dev/null 2>&1 || true; fi
"$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/pg_ctl" --version

# The Docker test runs on the engine here; it needs no registry.
docker version --format 'Docker Engine {{.Server.Version}}' \
  || { echo "test.sh: the Docker Engine does not answer (the Docker test needs it)" >&2; exit 1; }
if docker-compose version >/dev/null 2>&1; then docker-compose version --short
elif docker compose version >/dev/null 2>&1; then docker compose version --short
else echo "test.sh: Docker Compose is missing (apt-get install docker-compose)" >&2; exit 1
fi
echo "==> Docker base images (built once from Debian's packages, then cached)"
started=$SECONDS
scripts/docker-base-images.sh >/dev/null
echo "    ready in $((SECONDS - started))s"

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating the Python venv for the client tests"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
export LEASEHOLD_TEST_PYTHON="$PWD/$VENV/bin/python"

echo "==> cargo test"
cargo test --workspace --locked "$@"
