#!/usr/bin/env bash
# Deterministic regression figures (issue 19 item 3): counts the instructions of each hot path
# with valgrind's callgrind (only inside the path's `measured_*` function; see
# crates/signet-server/benches/instructions.rs) and compares them with hack/instructions.baseline.
#   hack/instructions.sh           check: fails when a path grew by more than 10 %
#   hack/instructions.sh --record  write the current counts as the new baseline
# Needs valgrind (installed when missing). A path takes 10 s to a few minutes under callgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
record=false
[[ "${1:-}" == "--record" ]] && record=true
if ! command -v valgrind >/dev/null 2>&1; then
  echo "--- installing valgrind"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
binary=$(cargo bench -p signet-server --bench instructions --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
[[ -x "$binary" ]] || { echo "could not build the instructions bench" >&2; exit 1; }
iterations=100
baseline=hack/instructions.baseline
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
declare -A counts
for path in mint workload controller; do
  valgrind --tool=callgrind --toggle-collect="*measured_${path}*" \
    --callgrind-out-file="$work/$path.out" "$binary" "$path" >/dev/null 2>"$work/$path.log"
  total=$(grep -E '^(summary|totals):' "$work/$path.out" | head -1 | awk '{print $2}')
  per=$(( total / iterations ))
  counts[$path]=$per
  recorded=$(awk -v p="$path" '$1 == p {print $2}' "$baseline" 2>/dev/null || true)
  if [[ -n "$recorded" ]]; then
    change=$(python3 -c "print(f'{($per - $recorded) / $recorded * 100:+.1f}')")
    verdict=ok
    if python3 -c "import sys; sys.exit(0 if $per > $recorded * 1.10 else 1)"; then
      verdict="REGRESSION (> +10 %)"
      status=1
    fi
    printf '%-11s %'"'"'15d instructions/op (baseline %'"'"'d, %s %%) %s\n' "$path" "$per" "$recorded" "$change" "$verdict"
  else
    printf '%-11s %'"'"'15d instructions/op (no baseline)\n' "$path" "$per"
  fi
done
if $record; then
  {
    echo "# path instructions-per-operation (hack/instructions.sh --record, $(date -u +%F), $(rustc --version))"
    for path in mint workload controller; do echo "$path ${counts[$path]}"; done
  } > "$baseline"
  echo "baseline written to $baseline"
  exit 0
fi
exit "$status"
