#!/usr/bin/env bash
# Runs a command with a NATS JetStream server it can use: NATS_URL if it answers, otherwise
# a throwaway `nats-server -js` on a free loopback port, stopped (and its data removed)
# when the command ends.
set -euo pipefail

reachable() { # host:port
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

hostport() { # nats://host:port -> host:port
  local u=${1#*://}
  echo "${u%%/*}"
}

cleanup() { :; }
trap 'cleanup' EXIT

if [[ -n "${NATS_URL:-}" ]] && reachable "$(hostport "$NATS_URL")"; then
  echo "using the NATS server at $NATS_URL"
else
  command -v nats-server >/dev/null || { echo "nats-server not found: apt-get install nats-server" >&2; exit 1; }
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$dir/nats.conf" <<CONF
listen: 127.0.0.1:$port
jetstream {
  store_dir: "$dir/js"
  max_file_store: 8G
  max_memory_store: 256M
}
CONF
  nats-server -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
  nats_pid=$!
  cleanup() { kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; rm -rf "$dir"; }
  for _ in $(seq 1 100); do reachable "127.0.0.1:$port" && break; sleep 0.1; done
  reachable "127.0.0.1:$port" || { echo "nats-server did not start:" >&2; cat "$dir/nats.log" >&2; exit 1; }
  export NATS_URL="nats://127.0.0.1:$port"
  echo "started nats-server -js at $NATS_URL"
fi

"$@"
