# shellcheck shell=bash
# Sourced by scripts/demo.sh and bench/run.sh: the configuration of a throwaway
# InfluxDB 1.x on loopback, with authentication on and everything optional off. The log
# stays at info: the demo reads the listening address from it.
# (testkit/src/influxd.rs writes the same for the Rust tests.)

# `influxd_conf DIR HTTP_PORT RPC_PORT`: prints a config keeping its data under DIR.
influxd_conf() {
  local dir=$1 http_port=$2 rpc_port=$3
  cat <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc_port"
[meta]
  dir = "$dir/meta"
  logging-enabled = false
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$http_port"
  auth-enabled = true
  log-enabled = false
[logging]
  suppress-logo = true
CONF
}
