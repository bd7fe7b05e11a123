# syntax=docker/dockerfile:1
# Sextant's image for machines with a container daemon (BuildKit). Without one, `make image`
# builds an equivalent OCI image with umoci (scripts/image.sh).
#
#   docker build -t REGISTRY/sextant:0.1.0 \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker build --target init -t REGISTRY/sextant-init:0.1.0 \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) .
#
# The binary is `make release`'s: --locked, paths remapped, the `demo` feature left out, so a
# commit gives the same bytes here as in any other checkout with the same toolchain.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src/sextant
COPY . .
# The commit's time (make falls back to `git log`, and .git is not in the context).
ARG SOURCE_DATE_EPOCH=0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/sextant/target \
    make release \
    && install -D -m 0755 target/dist/release/sextant /out/usr/local/bin/sextant

# The injected init container's image (`--target init`): `sextant iptables` runs Debian's
# iptables-restore, nft and ip, as root with NET_ADMIN, for a moment before the Pod starts.
# Set the chart's `sidecar.initImage` to it. Debian's base, so it has a shell; `make image`'s
# sextant-init has none.
FROM docker.io/library/debian:bookworm-slim AS init
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       iptables nftables iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /
ENTRYPOINT ["/usr/local/bin/sextant"]

# The control plane (the default target).
# glibc, libgcc_s and a passwd naming nonroot (65532); no shell, no package manager. Bookworm,
# as the build stage, so the binary finds the glibc it was linked against.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=""
ARG REVISION=""
LABEL org.opencontainers.image.title="sextant" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://example.invalid/sextant" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /
USER 65532:65532
# xDS (plaintext), xDS + CA over TLS, admin HTTP, admission webhooks.
EXPOSE 15010 15012 15014 15017
ENTRYPOINT ["/usr/local/bin/sextant"]
