#!/usr/bin/env bash
# The docker-compose topology as local processes on loopback, for development: a 3-node NATS
# JetStream cluster (streams at 3 replicas) and PostgreSQL (from scripts/with-services.sh),
# an aggregator, a persister and two edges
# behind Debian's HAProxy on :3000. Ctrl-C stops everything.
#   public  http://127.0.0.1:3000   (HAProxy: edges on :3001 and :3002)
#   admin   aggregator :9101, persister :9102, edge-a :9103, edge-b :9104
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != "--inside" ]]; then
  cargo build --release -p presence
  NATS_NODES=3 exec scripts/with-services.sh "$0" --inside
fi

bin=target/release/presence
export JWT_SECRET=${JWT_SECRET:-dev-secret} PRESENCE_ENV=${PRESENCE_ENV:-development}
export PRESENCE_TRUSTED_PROXIES=127.0.0.1 RUST_LOG=${RUST_LOG:-info}
dir=$(mktemp -d)
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap stop EXIT INT TERM

start() { # name admin-port [public-port] role
  local name=$1 admin=$2 public=$3 role=$4
  PRESENCE_NODE_ID=$name PRESENCE_ADMIN_ADDR=127.0.0.1:$admin PRESENCE_HTTP_ADDR=127.0.0.1:$public \
    "$bin" "$role" > "$dir/$name.log" 2>&1 &
  pids+=($!)
}
start aggregator 9101 0 aggregator
start persister 9102 0 persister
start edge-a 9103 3001 edge
start edge-b 9104 3002 edge

cat > "$dir/haproxy.cfg" <<CONF
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option forwardfor
    default-server check inter 1s fall 2 rise 2

frontend public
    bind 127.0.0.1:3000
    default_backend edges

backend edges
    balance source
    cookie EDGE insert indirect nocache
    option httpchk GET /readyz
    server edge-a 127.0.0.1:3001 cookie a port 9103
    server edge-b 127.0.0.1:3002 cookie b port 9104
CONF
haproxy -f "$dir/haproxy.cfg" -db > "$dir/haproxy.log" 2>&1 &
pids+=($!)

echo "cluster up: http://127.0.0.1:3000 (logs in $dir); Ctrl-C stops it"
wait -n "${pids[@]}" || true
echo "a process exited; stopping the cluster" >&2
[[ -d "$dir" ]] && tail -n 20 "$dir"/*.log >&2 || true
