#!/usr/bin/env bash
# A Python base image made from Debian packages, for machines that reach a Debian mirror but no container
# registry: debootstrap builds a bookworm root file system (minbase), `docker import` turns it into an image, and
# Debian's Python 3.11 goes on top in a container (where its packages configure as on any Debian). Prints the
# image's reference. Reuses the image when it exists, else the root file system's tarball cached under
# $VESSELSEG_CACHE (default ~/.cache/vesselseg), so a machine that keeps either pays debootstrap once.
#   docker/debian-base.sh [image-tag]       (default vesselseg-base:bookworm-python3.11-<hash of the package list>)
# MIRROR overrides the Debian mirror; by default the first one apt's own sources name for Debian.
set -euo pipefail

SUITE=bookworm
PACKAGES="python3.11 python3.11-venv python-is-python3"
TAG="${1:-vesselseg-base:$SUITE-python3.11-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-8)}"
CACHE="${VESSELSEG_CACHE:-${HOME:-/root}/.cache/vesselseg}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"
  exit 0
fi

apt_mirror() {  # the first Debian archive URI in apt's sources (deb822 or one-line format)
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local uri
  uri="$(cat "${files[@]}" 2>/dev/null \
    | sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
             -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
    | grep -E '/debian/?$' | head -n 1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${MIRROR:-$(apt_mirror)}"
KEY="$(printf '%s %s' "$SUITE" "$MIRROR" | sha256sum | cut -c1-12)"
TARBALL="$CACHE/debian-$SUITE-minbase-$KEY.tar"
MINBASE="vesselseg-base:$SUITE-minbase-$KEY"

if ! docker image inspect "$MINBASE" >/dev/null 2>&1; then
  if [[ ! -s "$TARBALL" ]]; then
    command -v debootstrap >/dev/null || {
      echo "debootstrap is missing: apt-get install debootstrap (or docker/engine.sh install as root)" >&2
      exit 1
    }
    [[ "$(id -u)" == 0 ]] || { echo "debootstrap needs root" >&2; exit 1; }
    mkdir -p "$CACHE"
    root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap --variant=minbase $SUITE from $MIRROR" >&2
    if ! debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
      tail -n 20 "$CACHE/debootstrap.log" >&2
      exit 1
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/*
    tar --numeric-owner -C "$root" -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
  fi
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE $MIRROR" "$TARBALL" "$MINBASE" >/dev/null
fi

printf '%s\n' \
  "FROM $MINBASE" \
  "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES \\" \
  "    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb" \
  'CMD ["python3"]' \
  | docker build --network host --tag "$TAG" - >&2
echo "$TAG"
