# syntax=docker/dockerfile:1
#
# The one Signet image: `signet server`, `signet agent`, `signet csi` and the CLI.
# Build it with hack/build-image.sh (or `docker buildx build .`); BuildKit is required for the
# cache mounts below.
#
# The build needs no protoc and no cmake: protobuf is compiled in Rust (protox), SQLite is
# bundled (rusqlite) and aws-lc-sys builds with the C compiler the rust image ships.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
# Only what the workspace needs to build (see .dockerignore).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY xtask ./xtask
COPY proto ./proto
COPY crds ./crds
# target/ lives in a cache mount, so the binary is copied out within the same step.
RUN --mount=type=cache,id=signet-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=signet-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=signet-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p signet-cli --bin signet \
    && install -D -m 0755 target/release/signet /out/signet \
    && /out/signet --version

# glibc + libgcc_s (all the binary links against), CA certificates, no shell, user 65532.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="signet" \
      org.opencontainers.image.description="SPIFFE workload identity for Kubernetes: server, node agent, CSI driver and CLI in one binary" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/signet /usr/local/bin/signet
# The server runs as this user. The Helm chart runs the agent and the CSI container as root:
# they need the hostPath socket directory, other pods' /proc entries and mount(2).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/signet"]
CMD ["--help"]
