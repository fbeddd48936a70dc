#!/usr/bin/env bash
# Deterministic regression figures (issue 19 item 3): instructions per operation of the hot
# paths, counted with valgrind's callgrind, compared with hack/instructions.baseline.
#   mint, workload, controller: only inside the path's `measured_*` function
#     (crates/signet-server/benches/instructions.rs; the controller's in its own benchmark,
#     crates/signet-controller/benches/controller.rs), 100 operations each;
#   proxied_request: the inbound `signet proxy` process over 200 keep-alive requests (mTLS in,
#     SPIFFE ID and policy checked, forwarded to nginx, answer relayed), counted between
#     `callgrind_control -i on` and `-i off` (hack/bench_proxy.py --instructions; needs root
#     and nginx).
#   hack/instructions.sh           check: fails when a path grew by more than 10 %
#   hack/instructions.sh --record  write the current counts as the new baseline
# Installs valgrind and nginx when missing. Takes about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
record=false
[[ "${1:-}" == "--record" ]] && record=true
missing=()
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
if ((${#missing[@]})); then
  echo "--- installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  pkill -x nginx 2>/dev/null || true
fi
# The executable of `cargo bench -p <package> --bench <name>`.
bench_executable() {
  cargo bench -p "$1" --bench "$2" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2"
}
binary=$(bench_executable signet-server instructions)
controller=$(bench_executable signet-controller controller)
[[ -x "$binary" && -x "$controller" ]] || { echo "could not build the benchmarks" >&2; exit 1; }
cargo build --release -q -p signet-cli --bin signet
baseline=hack/instructions.baseline
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
declare -A counts
paths=(mint workload controller proxied_request)

check() {
  local path=$1 per=$2 recorded
  counts[$path]=$per
  recorded=$(awk -v p="$path" '$1 == p {print $2}' "$baseline" 2>/dev/null || true)
  if [[ -z "$recorded" ]]; then
    printf '%-16s %12d instructions/op (no baseline)\n' "$path" "$per"
    return
  fi
  local change verdict=ok
  change=$(python3 -c "print(f'{($per - $recorded) / $recorded * 100:+.1f}')")
  if python3 -c "import sys; sys.exit(0 if $per > $recorded * 1.10 else 1)"; then
    verdict="REGRESSION (more than +10 %)"
    status=1
  fi
  printf '%-16s %12d instructions/op (baseline %d, %s %%) %s\n' "$path" "$per" "$recorded" "$change" "$verdict"
}

for path in mint workload controller; do
  if [[ "$path" == controller ]]; then
    run=("$controller" instructions)
  else
    run=("$binary" "$path")
  fi
  valgrind --tool=callgrind --toggle-collect="*measured_${path}*" \
    --callgrind-out-file="$work/$path.out" "${run[@]}" >/dev/null 2>"$work/$path.log"
  total=$(grep -E '^(summary|totals):' "$work/$path.out" | awk '{print $2}' | sort -n | tail -1)
  check "$path" $(( total / 100 ))
done
proxied=$(python3 hack/bench_proxy.py --signet target/release/signet --instructions 200 | awk '/^proxied_request/ {print $2}')
check proxied_request "$proxied"

if $record; then
  {
    echo "# path instructions-per-operation (hack/instructions.sh --record, $(date -u +%F), $(rustc --version))"
    for path in "${paths[@]}"; do echo "$path ${counts[$path]}"; done
  } > "$baseline"
  echo "baseline written to $baseline"
  exit 0
fi
exit "$status"
