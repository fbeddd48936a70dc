#!/usr/bin/env bash
# The fault-injection suite's long variants: every TTL and outage 10× the CI variants (agent SVID
# 80 s, workload SVID 60 s, outages of 2 minutes), one scenario at a time with the recovery
# times printed. Needs root (network namespaces, tmpfs mounts), iproute2, faketime, python3.
# Takes about 25 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
SIGNET_FAULTS_LONG=1 cargo nextest run -p signet-cli --test faults --no-capture --no-fail-fast \
  "$@" 2>&1 | grep -E --line-buffered 'fault ended|rotated|refused after|PASS|FAIL|panicked|Summary'
