#!/usr/bin/env bash
# Standalone benchmarks (P3, entry → SVID delivery, RSS) against release-built server and agent
# processes on this machine. Prints a markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p signet-cli --bench standalone
