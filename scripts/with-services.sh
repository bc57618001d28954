#!/usr/bin/env bash
# Runs a command with a NATS JetStream server and a PostgreSQL server it can use: NATS_URL /
# DATABASE_URL if they answer, otherwise throwaway ones (the pinned `nats-server -js` of
# scripts/nats-server.sh, and a fresh `initdb` cluster run as the postgres user) on free
# loopback ports, stopped (and their data removed) when the command ends.
set -euo pipefail

reachable() { # host:port
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

hostport() { # nats://host:port -> host:port
  local u=${1#*://}
  echo "${u%%/*}"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stops=()
cleanup() { for stop in "${stops[@]}"; do eval "$stop" || true; done; }
trap 'cleanup' EXIT

# The pinned server, for tests that start NATS clusters of their own.
NATS_SERVER_BIN=$("$(dirname "$0")/nats-server.sh")
export NATS_SERVER_BIN

# NATS_NODES=3: a 3-node cluster (routes on loopback) with every stream at 3 replicas.
nats_nodes=${NATS_NODES:-1}
if [[ -n "${NATS_URL:-}" ]] && reachable "$(hostport "${NATS_URL%%,*}")"; then
  echo "using the NATS server at $NATS_URL"
else
  dir=$(mktemp -d)
  ports=() routes=()
  for i in $(seq 1 "$nats_nodes"); do
    ports+=("$(free_port)")
    routes+=("nats-route://127.0.0.1:$(free_port)")
  done
  urls=()
  for i in $(seq 1 "$nats_nodes"); do
    port=${ports[$((i - 1))]}
    cluster=""
    if ((nats_nodes > 1)); then
      route=${routes[$((i - 1))]}
      cluster="cluster { name: presence-local, listen: ${route#nats-route://}, routes: [$(IFS=,; echo "${routes[*]}")] }"
    fi
    cat > "$dir/nats-$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$port
jetstream {
  store_dir: "$dir/js-$i"
  max_file_store: 8G
  max_memory_store: 256M
}
$cluster
CONF
    "$NATS_SERVER_BIN" -c "$dir/nats-$i.conf" > "$dir/nats-$i.log" 2>&1 &
    stops+=("kill $! 2>/dev/null; wait $! 2>/dev/null")
    urls+=("nats://127.0.0.1:$port")
  done
  stops+=("rm -rf '$dir'")
  for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do reachable "127.0.0.1:$port" && break; sleep 0.1; done
    reachable "127.0.0.1:$port" || { echo "nats-server did not start:" >&2; cat "$dir"/nats-*.log >&2; exit 1; }
  done
  NATS_URL=$(IFS=,; echo "${urls[*]}")
  export NATS_URL
  if ((nats_nodes > 1)); then
    export PRESENCE_STREAM_REPLICAS=${PRESENCE_STREAM_REPLICAS:-$nats_nodes}
    # JetStream needs its meta leader before streams can be created.
    sleep 3
  fi
  echo "started $nats_nodes nats-server -js at $NATS_URL"
fi

db_hostport() { # postgres://user@host:port/db -> host:port
  local u=${1#*://}; u=${u#*@}; echo "${u%%/*}"
}

if [[ -n "${DATABASE_URL:-}" ]] && reachable "$(db_hostport "$DATABASE_URL")"; then
  echo "using the PostgreSQL server at $(db_hostport "$DATABASE_URL")"
else
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n "$pg_bin" ]] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
  as_pg=()
  [[ $(id -u) == 0 ]] && as_pg=(runuser -u postgres --)
  pgdir=$(mktemp -d)
  [[ $(id -u) == 0 ]] && chown postgres "$pgdir"
  pgport=$(free_port)
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$pgdir/initdb.log" 2>&1 \
    || { cat "$pgdir/initdb.log" >&2; exit 1; }
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w \
    -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=400" \
    start >/dev/null || { cat "$pgdir/postgres.log" >&2; exit 1; }
  stops+=("${as_pg[*]} $pg_bin/pg_ctl -D '$pgdir/data' -m immediate stop >/dev/null; rm -rf '$pgdir'")
  export DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/postgres"
  echo "started PostgreSQL at 127.0.0.1:$pgport"
fi

"$@"
