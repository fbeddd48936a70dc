#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60) on the stable toolchain, and prints the
# executions each reached. Needs `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "install cargo-fuzz first: cargo install cargo-fuzz" >&2; exit 1; }
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "--- $target (${seconds}s)"
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=8192 2>&1 \
    | tee "/tmp/signet-fuzz-$target.log" | grep -E '^(#[0-9]+ +DONE|==[0-9]+== ERROR|SUMMARY)' || true
  grep -E 'Done [0-9]+ runs' "/tmp/signet-fuzz-$target.log" | tail -1 || true
done
