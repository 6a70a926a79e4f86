#!/usr/bin/env bash
# Builds the leasehold image from a binary built on this host, with no container
# registry: the Dockerfile's `prebuilt` target (the same runtime stage as the default
# target, around the given binary) on a base image made from Debian's packages.
#
#   scripts/docker-image.sh    # cargo build --release --locked, then leasehold:latest
#
# Environment (all optional):
#   LEASEHOLD_BIN=PATH     wrap this binary instead of building one. It runs on the
#                          image's glibc, so build it on Debian bookworm (or older).
#   LEASEHOLD_IMAGE=TAG    the image's tag (default leasehold:latest)
#   RUNTIME_BASE=IMAGE     the base (default: the one scripts/docker-base-images.sh
#                          builds, or reuses when present)
# Prints the tag on stdout; progress goes to stderr. The Docker tests build their image
# with this script.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${LEASEHOLD_IMAGE:-leasehold:latest}
if [ -z "${RUNTIME_BASE:-}" ]; then
  RUNTIME_BASE=$(scripts/docker-base-images.sh | sed -n 's/^RUNTIME_BASE=//p')
fi
if [ -z "${LEASEHOLD_BIN:-}" ]; then
  echo "==> cargo build --release --locked --bin leasehold" >&2
  cargo build --release --locked --bin leasehold >&2
  LEASEHOLD_BIN=target/release/leasehold
fi
[ -x "$LEASEHOLD_BIN" ] || { echo "docker-image: $LEASEHOLD_BIN is not an executable" >&2; exit 1; }

# The build context is a directory holding only the binary: nothing else is sent to
# the engine. Debug info is dropped (a debug build's is most of its size); the symbols
# stay, for readable backtraces.
command -v strip >/dev/null || { echo "docker-image: strip is missing (apt-get install binutils)" >&2; exit 1; }
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
strip --strip-debug -o "$CONTEXT/leasehold" "$LEASEHOLD_BIN"
chmod 0755 "$CONTEXT/leasehold"

echo "==> docker build --target prebuilt (base $RUNTIME_BASE) -> $TAG" >&2
docker build --quiet --file Dockerfile --target prebuilt \
  --build-arg "RUNTIME_BASE=$RUNTIME_BASE" --tag "$TAG" "$CONTEXT" >&2
echo "$TAG"
