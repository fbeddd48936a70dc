#!/usr/bin/env bash
# Builds the Signet container image from the Dockerfile at the repository root and prints its
# reference on stdout (build output goes to stderr).
#
#   IMAGE     image name               [default: signet]
#   TAG       image tag                [default: dev]
#   PLATFORM  e.g. linux/arm64 (buildx only) [default: the builder's]
#   PUSH=1    push instead of loading into the local image store (buildx only)
#
# Needs Docker with BuildKit (docker buildx, or DOCKER_BUILDKIT=1 docker build).
set -euo pipefail
cd "$(dirname "$0")/.."

image="${IMAGE:-signet}"
tag="${TAG:-dev}"
ref="${image}:${tag}"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
args=(
  --file Dockerfile
  --tag "$ref"
  --build-arg "VERSION=${version:-0.0.0}"
  --build-arg "REVISION=${revision}"
)

if docker buildx version >/dev/null 2>&1; then
  if [[ -n "${PLATFORM:-}" ]]; then
    args+=(--platform "$PLATFORM")
  fi
  if [[ "${PUSH:-0}" == 1 ]]; then
    args+=(--push)
  else
    args+=(--load)
  fi
  echo "building $ref with docker buildx" >&2
  docker buildx build "${args[@]}" . >&2
else
  if [[ -n "${PLATFORM:-}" || "${PUSH:-0}" == 1 ]]; then
    echo "PLATFORM and PUSH need docker buildx" >&2
    exit 1
  fi
  echo "building $ref with docker build (BuildKit)" >&2
  DOCKER_BUILDKIT=1 docker build "${args[@]}" . >&2
fi

echo "$ref"
