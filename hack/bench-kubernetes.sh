#!/usr/bin/env bash
# Kubernetes-mode benchmarks: P4 (controller: 30k pods x 10 ClusterSPIFFEIDs), P2 (pod scheduled
# -> SVID cached on its agent, 10k pods over 100 in-process agents) and P6 (one agent syncing 100k
# entries). All in process against an in-memory API server; prints the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p signet-controller --bench controller
cargo bench -p signet-cli --bench kubernetes
