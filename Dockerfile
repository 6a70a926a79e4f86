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
# 10001 and writes nothing outside that volume, so a read-only root filesystem works.
# The HEALTHCHECK probes the proxy's admin listener with the binary itself, and the
# ENTRYPOINT is the binary: the image needs no shell. The control's admin listener is
# elsewhere (127.0.0.1:4101), so disable the check there (`docker run --no-healthcheck`,
# compose `healthcheck: {disable: true}`) or probe that instead. On SIGTERM the sidecar
# drains in-flight requests for up to `--shutdown-grace` (10s): give the container a
# longer stop timeout.
#
# Two targets make the same runtime image (both are `runtime-base` plus the binary):
#   runtime   (the default) compiles leasehold in the Rust image; needs BuildKit
#             (`RUN --mount`) and a registry:   docker build -t leasehold:latest .
#   prebuilt  wraps a binary built on the host, from a build context that holds only
#             that file (named `leasehold`); works with the classic builder and no
#             registry. scripts/docker-image.sh does it.
# The base images are build arguments: RUNTIME_BASE (any Debian bookworm or newer;
# scripts/docker-base-images.sh makes one from Debian's packages) and RUST_IMAGE.
# There is no `# syntax=` line on purpose: BuildKit's built-in frontend suffices, and a
# syntax image would have to come from a registry.

# The toolchain the project is tested with; Cargo.toml's rust-version (1.90) is the floor.
ARG RUST_VERSION=1.95
ARG RUST_IMAGE=rust:${RUST_VERSION}-slim-bookworm
ARG RUNTIME_BASE=debian:bookworm-slim

# --- runtime base: everything of the image but the binary --------------------------------
FROM ${RUNTIME_BASE} AS runtime-base
# ca-certificates: the system roots for a TLS upstream (InfluxDB Cloud). Unpinned on
# purpose: the newest roots of the release are the point. A base that has them already
# (scripts/docker-base-images.sh) needs no network here.
# hadolint ignore=DL3008
RUN if ! dpkg-query -W -f '${Status}' ca-certificates 2>/dev/null | grep -q 'ok installed'; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 leasehold \
 && useradd --system --uid 10001 --gid leasehold --home-dir /var/lib/leasehold \
      --shell /usr/sbin/nologin leasehold \
 && install -d -o leasehold -g leasehold -m 0700 /var/lib/leasehold \
 && install -d -o leasehold -g leasehold -m 0750 /tickets \
 && install -d -o leasehold -g leasehold -m 0700 /var/lib/leasehold-buffer

# JSON log lines for container log collectors; RUST_LOG sets the level.
ENV LEASEHOLD_HOME=/var/lib/leasehold \
    LEASEHOLD_LOG_FORMAT=json
# A named volume mounted here starts out owned by 10001, like the directory above
# (as does one on /var/lib/leasehold-buffer, for `proxy --buffer-dir`).
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

# --- prebuilt: the runtime image around a host-built binary ------------------------------
# Before the build stage on purpose: the classic builder runs every stage up to its
# target, and this target must not need the Rust image.
FROM runtime-base AS prebuilt
COPY leasehold /usr/local/bin/leasehold

# --- build -------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# --locked: build exactly the dependency versions in Cargo.lock, or fail.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin leasehold \
 && install -m 0755 target/release/leasehold /usr/local/bin/leasehold

# --- runtime (the default target) --------------------------------------------------------
FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/leasehold /usr/local/bin/leasehold
