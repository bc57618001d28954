#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 60),
# starting from the seeds in fuzz/seeds/<target> and the corpus kept in fuzz/corpus/<target>
# (not committed); installs the pinned cargo-fuzz first if needed. A crash stops the run:
# its input is in fuzz/artifacts/<target>/, and (from fuzz/)
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none --release <target> <file>` replays it.
#
# The machine has one stable toolchain; RUSTC_BOOTSTRAP lets cargo-fuzz pass the compiler
# the flags of its instrumentation. No sanitizer: the code is safe Rust, a fuzz failure is a
# panic or a broken round trip. Debug assertions are on (-a), so an arithmetic overflow is a
# failure too.
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
CARGO_FUZZ_VERSION=0.13.2
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" >&2
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build --debug-assertions --sanitizer none --release
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds} s" >&2
  set +e
  cargo fuzz run --debug-assertions --sanitizer none --release "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 2>&1 |
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|SUMMARY|Test unit written" >&2
  status=${PIPESTATUS[0]}
  set -e
  # grep hides libFuzzer's chatter; the status is cargo-fuzz's.
  if [[ $status -ne 0 ]]; then
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
