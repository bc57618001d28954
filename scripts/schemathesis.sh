#!/usr/bin/env bash
# Prints the path of the schemathesis the API contract test runs (tests/tests/openapi.rs),
# installing it first if needed: PyPI's `schemathesis`, in a project-local virtual environment
# (.venv-schemathesis). The version is pinned here, and only here.
set -euo pipefail
SCHEMATHESIS_VERSION=4.32.5

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-schemathesis"
bin="$venv/bin/st"
if [[ ! -x "$bin" ]] || [[ "$("$bin" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi
echo "$bin"
