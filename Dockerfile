# syntax=docker/dockerfile:1
#
# One image for both roles of leasehold (the ENTRYPOINT is the binary):
#   control:  docker run -v control:/var/lib/leasehold IMAGE control serve
#             (after `control init`; examples/docker-compose.yml has an idempotent
#             init-then-serve command)
#   sidecar:  docker run --network container:APP -v app-id:/var/lib/leasehold \
#               -v ./tickets:/tickets:ro IMAGE
#             (the default command: `proxy --identity app --ticket /tickets/app.ticket`)
#
# $LEASEHOLD_HOME (/var/lib/leasehold) holds the identities, enrollments and, for the
# control, its store: keep it on a volume. The image runs as the unprivileged user
# 10001. The HEALTHCHECK probes the proxy's admin listener with the binary itself (no
# shell tools in the image); the control has no HTTP listener, so disable it there
# (`docker run --no-healthcheck`, compose `healthcheck: {disable: true}`).

# --- build -----------------------------------------------------------------------------
# The toolchain the project is tested with; Cargo.toml's rust-version (1.90) is the floor.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# --locked: build exactly the dependency versions in Cargo.lock, or fail.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin leasehold \
 && install -m 0755 target/release/leasehold /usr/local/bin/leasehold

# --- runtime ---------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the system roots for a TLS upstream (InfluxDB Cloud). Unpinned on
# purpose: the newest roots of the release are the point.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 leasehold \
 && useradd --system --uid 10001 --gid leasehold --home-dir /var/lib/leasehold \
      --shell /usr/sbin/nologin leasehold \
 && install -d -o leasehold -g leasehold -m 0700 /var/lib/leasehold \
 && install -d -o leasehold -g leasehold -m 0750 /tickets
COPY --from=build /usr/local/bin/leasehold /usr/local/bin/leasehold

# JSON log lines for container log collectors; RUST_LOG sets the level.
ENV LEASEHOLD_HOME=/var/lib/leasehold \
    LEASEHOLD_LOG_FORMAT=json
# A named volume mounted here starts out owned by 10001, like the directory above.
VOLUME ["/var/lib/leasehold"]
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# The control's secure channel. The sidecar's ports (8086 for the application, 8087 for
# /healthz, /readyz, /metrics) are on loopback inside the shared network namespace.
EXPOSE 4100

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["leasehold", "health", "--url", "http://127.0.0.1:8087/healthz"]
ENTRYPOINT ["leasehold"]
CMD ["proxy", "--identity", "app", "--ticket", "/tickets/app.ticket"]
