#!/usr/bin/env bash
# signet proxy vs HAProxy vs direct, in one run (docs/benchmarks.md "versus peers"): installs
# Debian's haproxy, nginx and wrk when missing, builds the release binary and runs
# hack/bench_proxy.py (as root: the two workloads are told apart by unix group).
#   hack/bench-proxy.sh [--rounds N] [--seconds S] [--connections C] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in haproxy nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "--- installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts the services it installs: the benchmark runs its own.
for service in haproxy nginx; do
  pkill -x "$service" 2>/dev/null || true
done
cargo build --release -p signet-cli --bin signet
exec python3 hack/bench_proxy.py --signet target/release/signet "$@"
