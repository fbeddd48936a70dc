#!/usr/bin/env bash
# Runs every cargo-fuzz target on the stable toolchain (RUSTC_BOOTSTRAP) and prints the
# executions each reached.
#   hack/fuzz.sh [SECONDS]          each target for SECONDS (default 60)
#   hack/fuzz.sh --runs N [TARGET…] each target (or the ones named) until N executions (R3: 10000000)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "install cargo-fuzz first: cargo install cargo-fuzz --locked" >&2; exit 1; }
limit=(-max_total_time=60)
if [[ "${1:-}" == "--runs" ]]; then
  limit=(-runs="${2:?--runs needs a number}")
  shift 2
elif [[ -n "${1:-}" ]]; then
  limit=(-max_total_time="$1")
  shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo fuzz list)
fi
python3 ../hack/fuzz-seeds.py corpus
cargo fuzz build
failed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "--- $target (${limit[*]})"
  started=$(date +%s)
  if cargo fuzz run "$target" "corpus/$target" -- "${limit[@]}" -max_len=8192 -print_final_stats=1 \
      >"/tmp/signet-fuzz-$target.log" 2>&1; then
    runs=$(grep -E '^stat::number_of_executed_units' "/tmp/signet-fuzz-$target.log" | awk '{print $2}')
    echo "$target: ${runs:-?} executions in $(( $(date +%s) - started )) s, no crash"
  else
    failed=1
    grep -E '==[0-9]+== ERROR|SUMMARY|panicked|Test unit written' "/tmp/signet-fuzz-$target.log" || true
    echo "$target: FAILED (log: /tmp/signet-fuzz-$target.log)"
  fi
done
exit "$failed"
