#!/usr/bin/env bash
# P1 benchmark: X509/JWT-SVID minting rates and the raw ECDSA P-256 rate of this machine
# (openssl speed), in one run. Prints a markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { echo "openssl is required (apt-get install openssl)" >&2; exit 1; }
exec cargo bench -p signet-ca --bench mint
