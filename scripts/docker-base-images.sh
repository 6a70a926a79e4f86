#!/usr/bin/env bash
# Builds the base images that leasehold's container image and its Docker tests use, from
# Debian's packages alone: no container registry is needed (air-gapped sites, CI).
#
#   leasehold-base:bookworm-KEY       the runtime base of the leasehold image: a minimal
#                                     bookworm (debootstrap --variant=minbase) with
#                                     ca-certificates
#   leasehold-influxdb1:bookworm-KEY  InfluxDB 1.x from Debian's `influxdb` package, with
#                                     `influxdb-client` and curl; runs `influxd` as the
#                                     user `influxdb`, data in the /var/lib/influxdb volume
#
# Each is debootstrapped into a temporary directory and `docker import`ed. KEY is a hash
# of this script, which holds the suite and the package lists: an image whose tag is
# present already is reused, so only the first run builds (about a minute or two per
# image on a fast mirror). To pick up the archive's newer packages, remove the images
# (`docker image rm TAG`) and run again. The newest build is also tagged
# `leasehold-base:bookworm` and `leasehold-influxdb1:bookworm`.
#
# Prints on stdout, for `eval "$(scripts/docker-base-images.sh)"` or an env file:
#   RUNTIME_BASE=leasehold-base:bookworm-KEY
#   INFLUXDB1_IMAGE=leasehold-influxdb1:bookworm-KEY
# Progress goes to stderr.
#
# Needs root (or sudo) for debootstrap and chroot, and the docker CLI.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              LEASEHOLD_DEBOOTSTRAP_CACHE (downloaded .debs, default
#              /var/cache/leasehold-debootstrap).
set -euo pipefail

SUITE=bookworm
RUNTIME_PACKAGES=ca-certificates
INFLUXDB1_PACKAGES=ca-certificates,curl,influxdb,influxdb-client
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${LEASEHOLD_DEBOOTSTRAP_CACHE:-/var/cache/leasehold-debootstrap}
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { echo "==> $*" >&2; }
# Runs a command with its (long) output in $LOG, which is shown only if it fails.
quietly() {
  if ! "$@" >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "docker-base-images: failed: $* (whole log: $LOG)" >&2
    return 1
  fi
}

command -v docker >/dev/null || { echo "docker-base-images: the docker CLI is not installed" >&2; exit 1; }
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] \
  || { echo "docker-base-images: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
docker version --format '{{.Server.Version}}' >/dev/null \
  || { echo "docker-base-images: the Docker engine does not answer" >&2; exit 1; }

KEY=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
RUNTIME_TAG=leasehold-base:$SUITE-$KEY
INFLUXDB1_TAG=leasehold-influxdb1:$SUITE-$KEY

# Two runs at once (a test and a user) build each image once.
exec 9>"${TMPDIR:-/tmp}/leasehold-docker-base-images.lock"
flock 9

ROOTFS=
cleanup() {
  [ -n "$ROOTFS" ] || return 0
  # The second stage mounts /proc and /sys inside; never delete through a mount.
  if command -v findmnt >/dev/null; then
    findmnt -rn -o TARGET | { grep -F "$ROOTFS/" || true; } | sort -r \
      | while read -r m; do as_root umount -l "$m" || true; done
  fi
  as_root rm -rf --one-file-system "$ROOTFS"
  ROOTFS=
}
trap cleanup EXIT

# build TAG PACKAGES [--change INSTRUCTION]...
build() {
  local tag=$1 include=$2
  shift 2
  if docker image inspect "$tag" >/dev/null 2>&1; then
    say "$tag is present (cached)"
    return
  fi
  local started=$SECONDS
  say "building $tag: debootstrap $SUITE (minbase + $include) from $MIRROR"
  as_root mkdir -p "$CACHE"
  ROOTFS=$(mktemp -d "${TMPDIR:-/var/tmp}/leasehold-rootfs.XXXXXX")
  LOG=$ROOTFS.log
  quietly as_root debootstrap --foreign --variant=minbase --include="$include" \
    --cache-dir="$CACHE" "$SUITE" "$ROOTFS" "$MIRROR"
  # Packages with a daemon (influxdb) would start it inside the chroot: deny service
  # starts for the second stage, as Debian's own container images do.
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$ROOTFS/usr/sbin/policy-rc.d" >/dev/null
  as_root chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
  quietly as_root chroot "$ROOTFS" /debootstrap/debootstrap --second-stage
  as_root rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  # Nothing of the build host in the image; the engine provides these at run time.
  # Documentation and translations are left out too, as in Debian's slim images.
  as_root rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/usr/share/locale/*/
  as_root truncate -s 0 "$ROOTFS/etc/resolv.conf" "$ROOTFS/etc/hostname"
  as_root tar --numeric-owner -C "$ROOTFS" -c . \
    | docker import --change "ENV PATH=$PATH_ENV" \
        --change "LABEL org.leasehold.base-key=$KEY" "$@" - "$tag" >/dev/null
  docker tag "$tag" "${tag%-"$KEY"}"
  cleanup
  rm -f "$LOG"
  say "built $tag in $((SECONDS - started))s"
}

build "$RUNTIME_TAG" "$RUNTIME_PACKAGES" \
  --change 'CMD ["bash"]'
build "$INFLUXDB1_TAG" "$INFLUXDB1_PACKAGES" \
  --change 'USER influxdb:influxdb' \
  --change 'EXPOSE 8086' \
  --change 'VOLUME ["/var/lib/influxdb"]' \
  --change 'CMD ["influxd", "-config", "/etc/influxdb/influxdb.conf"]'

echo "RUNTIME_BASE=$RUNTIME_TAG"
echo "INFLUXDB1_IMAGE=$INFLUXDB1_TAG"
