#!/usr/bin/env bash
# The benchmark suite at a size this machine holds (`make bench`): presence-bench against
# `presence standalone` and against a local cluster (NATS JetStream, aggregator, edges),
# the aggregator's fold and replay rate from a pre-filled stream, and the persister's write
# rate. Figures are printed as they come; JSON reports land in target/bench/.
#
#   scripts/bench.sh [MODE]              quick (default): 1k and 10k connections
#                                        full: also the capacity runs and the largest 90/10
#                                          runs (19k on one edge, 50k on 3 edges)
#                                        churn: only a 5-minute churn run at 10k (ghosts, flaps)
#                                        fanout: only the steady fan-out run at 10k
#                                        delivery: only the delivery modes side by side (10k:
#                                          broadcast, broadcast + batch, subscriptions + batch;
#                                          DELIVERY_HOLD_SECS, default 300)
#                                        capacity: only the connection-capacity runs (19k on
#                                          one edge, 50k on three, light fan-out)
#                                        largest: only the largest 90/10 runs
#                                        log: only the aggregator/replay and persister runs
#                                        partitions: the cost of partitioning: 10k connections
#                                          heartbeating on a cluster of 1 and of 4 partitions
#                                        idle: idle cost: 10k and 19k connections heartbeating,
#                                          no churn, 60 s steady; CPU per heartbeat of the edge,
#                                          the aggregator and NATS, RSS per connection; side by
#                                          side with PRESENCE_PREV_BIN (a previous release
#                                          build) when it is given
# EDGE_ENV: extra environment for the edges (e.g. EDGE_ENV=TOKIO_WORKER_THREADS=1).
# Needs release builds (make bench builds them) and nats-server / PostgreSQL (started by
# scripts/with-services.sh, which runs this script).
set -euo pipefail
cd "$(dirname "$0")/.."

size=${1:-quick}
bin=target/release
out=target/bench
mkdir -p "$out"
secret=bench-secret
timeout_ms=15000
sweep_ms=3000
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Common environment of every role: production timings, limits out of the way of the load.
role_env=(
  JWT_SECRET=$secret PRESENCE_ENV=production RUST_LOG=warn
  PRESENCE_HEARTBEAT_TIMEOUT_MS=$timeout_ms PRESENCE_SWEEP_INTERVAL_MS=$sweep_ms
  PRESENCE_RATE_LIMIT_IP_PER_MIN=100000000 PRESENCE_RATE_LIMIT_CUSTOMER_PER_MIN=100000000
  # Every simulated client connects from 127.0.0.1.
  PRESENCE_MAX_CONNECTIONS_PER_IP=0 PRESENCE_CONNECTS_PER_IP_PER_MIN=0
  PRESENCE_MAX_SESSIONS_PER_IP_PER_CUSTOMER=0
  # Every cluster run has streams of its own, and JetStream reserves each one's limit: 512 MiB
  # (the largest run appends about 150 MB) keeps the whole suite within the server's store.
  PRESENCE_EVENTS_MAX_BYTES=536870912
)

# start ROLE NAME [ENV...]: starts `presence ROLE` with its own ports; sets $started_pid,
# $started_http and $started_admin.
start() {
  local role=$1 name=$2; shift 2
  local http admin
  http=$(free_port); admin=$(free_port)
  env "${role_env[@]}" PRESENCE_HTTP_ADDR=127.0.0.1:$http PRESENCE_ADMIN_ADDR=127.0.0.1:$admin \
    PRESENCE_NODE_ID="$name" "$@" \
    sh -c 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"' "${presence_bin:-$bin/presence}" "$role" \
    > "$out/$name.log" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
  started_http=http://127.0.0.1:$http
  started_admin=http://127.0.0.1:$admin
  for _ in $(seq 1 200); do
    curl -sf "$started_admin/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "$role $name did not become ready; its log:" >&2
  cat "$out/$name.log" >&2
  exit 1
}

stop_all() { cleanup; pids=(); }

# load NAME USERS [presence-bench flags...]: one presence-bench run against $edges.
load() {
  local name=$1 users=$2; shift 2
  echo
  echo "=== $name: $users users ==="
  local edge_flags=() e
  for e in "${edges[@]}"; do edge_flags+=(--edge "$e"); done
  "$bin/presence-bench" "${edge_flags[@]}" --users "$users" --jwt-secret $secret \
    --timeout-ms $timeout_ms --sweep-ms $sweep_ms "${probes[@]}" \
    --json "$out/$name.json" "$@"
}

# --- standalone -------------------------------------------------------------------------
standalone_runs() {
  local users
  for users in 1000 10000; do
    start standalone standalone
    edges=("$started_http")
    probes=(--proc "standalone=$started_pid" --metrics "standalone=$started_admin/metrics")
    load "standalone-$users" "$users" --ramp-per-sec 1000 --hold-secs 30 \
      --churn-per-sec 5 --silent-percent 2
    stop_all
  done
}

# --- cluster: NATS JetStream + aggregator + edges ---------------------------------------
cluster() {
  local n_edges=$1 ns
  ns=bench$(date +%s%N | tail -c 9)
  start aggregator aggregator PRESENCE_NAMESPACE="$ns" NATS_URL="$NATS_URL" \
    PRESENCE_PARTITIONS="${PARTITIONS:-4}"
  probes=(--proc "aggregator=$started_pid" --metrics "aggregator=$started_admin/metrics")
  edges=()
  for i in $(seq 1 "$n_edges"); do
    start edge "edge-$i" PRESENCE_NAMESPACE="$ns" NATS_URL="$NATS_URL" \
      PRESENCE_PARTITIONS="${PARTITIONS:-4}" ${EDGE_ENV:-}
    edges+=("$started_http")
    probes+=(--proc "edge-$i=$started_pid" --metrics "edge-$i=$started_admin/metrics")
  done
}

cluster_runs() {
  local users
  for users in 1000 10000; do
    cluster 1
    load "cluster-$users" "$users" --ramp-per-sec 1000 --hold-secs 30 \
      --churn-per-sec 5 --silent-percent 2
    stop_all
  done
  # Heartbeat cost: male users only, so their updates reach just the observers; no churn.
  cluster 1
  load "heartbeat-cost-10000" 10000 --female-percent 0 --ramp-per-sec 500 --hold-secs 60
  stop_all
}

capacity_runs() {
  # Connections held, without the 90/10 ramp's quadratic fan-out: male users only, whose
  # changes reach just the observers, heartbeating every 5 s.
  cluster 1
  load "capacity-19000" 19000 --female-percent 0 --ramp-per-sec 1000 --hold-secs 30
  stop_all
  cluster 3
  load "capacity-3-edges-50000" 50000 --female-percent 0 --ramp-per-sec 1000 --hold-secs 30
  stop_all
}

largest_runs() {
  # One edge at the edge of its 20,000 open files; then three edges.
  cluster 1
  load "cluster-19000" 19000 --ramp-per-sec 1000 --hold-secs 30
  stop_all
  cluster 3
  load "cluster-3-edges-50000" 50000 --ramp-per-sec 1000 --hold-secs 30
  stop_all
}

fanout_run() {
  # Steady fan-out: 15 users/s leave and come back, each change delivered to everyone allowed
  # to see it (about 60,000 deliveries/s at 10k); heartbeats are a small share of the cost.
  # With PRESENCE_PREV_BIN, the previous build runs first, in the same run.
  local variant name
  local variants=(current)
  [[ -n ${PRESENCE_PREV_BIN:-} ]] && variants=(previous current)
  for variant in "${variants[@]}"; do
    presence_bin= name=fanout-10000
    [[ $variant == previous ]] && presence_bin=$PRESENCE_PREV_BIN name=fanout-previous-10000
    cluster 1
    load "$name" 10000 --ramp-per-sec 1000 --hold-secs 30 --churn-per-sec 15 \
      --churn-pause-ms 1000
    stop_all
  done
  presence_bin=
}

delivery_runs() {
  # The same 10k users (1,000/s ramp, then 15 users/s churning) three ways, side by side:
  # broadcast (every change to everyone allowed to see it), broadcast with batched frames,
  # and subscriptions (each socket subscribed to 50 random others) with batched frames.
  local hold=${DELIVERY_HOLD_SECS:-300}
  cluster 1
  load "delivery-broadcast-10000" 10000 --ramp-per-sec 1000 --hold-secs "$hold" \
    --churn-per-sec 15 --churn-pause-ms 1000
  stop_all
  cluster 1
  load "delivery-broadcast-batch-10000" 10000 --ramp-per-sec 1000 --hold-secs "$hold" \
    --churn-per-sec 15 --churn-pause-ms 1000 --batch
  stop_all
  cluster 1
  load "delivery-subscriptions-batch-10000" 10000 --ramp-per-sec 1000 --hold-secs "$hold" \
    --churn-per-sec 15 --churn-pause-ms 1000 --delivery subscriptions --subscribe 50 --batch
  stop_all
}

churn_run() {
  # Five minutes of users leaving and coming back, and of silent users: ghosts and flaps.
  cluster 1
  load "churn-5min-10000" 10000 --ramp-per-sec 500 --hold-secs 300 \
    --churn-per-sec 10 --silent-percent 2
  stop_all
}

partition_runs() {
  # The same heartbeating 10k (male users only: no fan-out storm) on 1 and on 4 partitions,
  # side by side: edge and aggregator CPU of each.
  local p
  for p in 1 4; do
    PARTITIONS=$p cluster 1
    load "partitions-$p-10000" 10000 --female-percent 0 --ramp-per-sec 1000 --hold-secs 60
    stop_all
  done
}

# --- idle cost: heartbeating connections, nothing else ----------------------------------
idle_runs() {
  # Male users only (their changes reach just the observers), no churn, 60 s steady; each
  # size on the previous build and on this one, one after the other in the same run.
  local users variant nats_pid
  nats_pid=$(pgrep -n -x nats-server || true)
  # `transport`: this build with PRESENCE_LIVENESS=transport and clients that never send
  # `user:heartbeat` (only the transport's pings keep them): the edge beats for them.
  local variants=(current transport)
  [[ -n ${PRESENCE_PREV_BIN:-} ]] && variants=(previous current transport)
  local edge_env=${EDGE_ENV:-} beat_flags
  for users in 10000 19000; do
    for variant in "${variants[@]}"; do
      presence_bin= EDGE_ENV=$edge_env beat_flags=()
      [[ $variant == previous ]] && presence_bin=$PRESENCE_PREV_BIN
      if [[ $variant == transport ]]; then
        EDGE_ENV="$edge_env PRESENCE_LIVENESS=transport" beat_flags=(--heartbeat-ms 3600000)
      fi
      cluster 1
      [[ -n $nats_pid ]] && probes+=(--proc "nats=$nats_pid")
      load "idle-$variant-$users" "$users" --female-percent 0 --ramp-per-sec 1000 --hold-secs 60 \
        "${beat_flags[@]}"
      stop_all
    done
  done
  EDGE_ENV=$edge_env presence_bin=
  python3 scripts/idle_table.py "$out" "${variants[@]}"
}

# --- aggregator and replay, persister ---------------------------------------------------
log_runs() {
  echo
  echo "=== aggregator: fold and replay from a pre-filled stream ==="
  PRESENCE_BIN=$bin/presence "$bin/presence-bench-aggregator" 100000 20
  echo
  echo "=== aggregator: the partitioned fold, 1 partition; 4 over 1 and over 2 aggregators ==="
  PRESENCE_BIN=$bin/presence "$bin/presence-bench-aggregator" 100000 20 1 1
  PRESENCE_BIN=$bin/presence "$bin/presence-bench-aggregator" 100000 20 4 1
  PRESENCE_BIN=$bin/presence "$bin/presence-bench-aggregator" 100000 20 4 2
  echo
  echo "=== failover: 20 SIGKILLs of the busiest of 3 aggregators ==="
  PRESENCE_BIN=$bin/presence "$bin/presence-bench-failover" 20
  echo
  echo "=== persister: a burst of 10,000 changes ==="
  PRESENCE_BIN=$bin/presence "$bin/presence-bench-persister" 10000
}

# --- what a history of users who came and went costs ---------------------------------------
history_runs() {
  echo
  echo "=== history: 0, 100,000 and 1,000,000 users ever seen besides 10,000 online ==="
  PRESENCE_BIN=$bin/presence "$bin/presence-bench-history"
}

case $size in
  quick) standalone_runs; cluster_runs; fanout_run; delivery_runs; partition_runs; idle_runs; log_runs ;;
  full) standalone_runs; cluster_runs; fanout_run; delivery_runs; partition_runs; idle_runs; capacity_runs; largest_runs; log_runs; history_runs ;;
  history) history_runs ;;
  capacity) capacity_runs ;;
  largest) largest_runs ;;
  log) log_runs ;;
  churn) churn_run ;;
  fanout) fanout_run ;;
  delivery) delivery_runs ;;
  partitions) partition_runs ;;
  idle) idle_runs ;;
  *) echo "usage: $0 [quick|full|churn|fanout|delivery|capacity|largest|log|partitions|history]" >&2; exit 2 ;;
esac
