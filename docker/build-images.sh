#!/usr/bin/env bash
# Build the vesselseg images on any machine with a Docker engine; writes build/images.env.
#   BASE=official (default)  the official Python image by tag (docker/base-images.env), pulled once
#   BASE=debian              a Python base made from Debian packages (docker/debian-base.sh): no registry needed
#   IMAGES="cpu cuda"        which images (default: cpu cuda trainjob)
#   REGISTRY=ghcr.io/my-org PUSH=1   also push, and record the registry digests for `vesselseg compile-cluster`
#   IMAGES_ENV=path          where the record goes (default build/images.env)
# The base's digest is read back before the build, pinned in FROM and recorded in the image's labels
# (org.opencontainers.image.base.*) and build/images.env, beside each built image's own id.
set -euo pipefail
cd "${BASH_SOURCE[0]%/*}/.."

BASE="${BASE:-official}"
IMAGES="${IMAGES:-cpu cuda trainjob}"
REGISTRY="${REGISTRY:-ghcr.io/vesselseg}"
PUSH="${PUSH:-0}"
PYTHON="${PYTHON:-python3}"
IMAGES_ENV="${IMAGES_ENV:-build/images.env}"
# shellcheck source=docker/base-images.env
source docker/base-images.env

if ! docker info >/dev/null 2>&1; then
  echo "error: no Docker engine answers: start one (as root: docker/engine.sh start; Debian: apt-get install docker.io)" >&2
  exit 2
fi

case "$BASE" in
  official)
    base_name="$PYTHON_BASE"
    if ! docker image inspect "$base_name" >/dev/null 2>&1 && ! docker pull "$base_name" >&2; then
      echo "error: cannot pull $base_name (no registry reachable?); BASE=debian builds a base from Debian packages" >&2
      exit 2
    fi
    repo_digest="$(docker image inspect --format '{{index .RepoDigests 0}}' "$base_name")"
    base_digest="${repo_digest#*@}"
    base_ref="${base_name%:*}@${base_digest}"
    ;;
  debian)
    base_name="$(docker/debian-base.sh)"
    # An imported image has no registry digest: its id (the sha256 of its config) is what pins it.
    base_digest="$(docker image inspect --format '{{.Id}}' "$base_name")"
    base_ref="$base_digest"
    ;;
  *)
    echo "error: BASE=$BASE: expected official or debian" >&2
    exit 2
    ;;
esac
echo "base: $base_name ($base_digest)" >&2

CODE_VERSION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)-${CODE_VERSION}"

build() {  # kind dockerfile target torch-index-url
  local kind="$1" file="$2" target="$3" index="$4" torch_index image
  # The host's CA bundle and local wheels of the lock's pins, for the builder stage only (see stage_pip.py).
  torch_index="$("$PYTHON" docker/stage_pip.py requirements.lock build/pip "$index")"
  echo "torch: ${torch_index:-from the pip configuration (local wheels or the default index)}" >&2
  image="${REGISTRY}/vesselseg-${kind}:${VERSION}"
  local started=$SECONDS
  docker build --network host --file "$file" --target "$target" \
    --build-arg "PYTHON_BASE=${base_ref}" --build-arg "BASE_NAME=${base_name}" \
    --build-arg "BASE_DIGEST=${base_digest}" --build-arg "CODE_VERSION=${CODE_VERSION}" \
    --build-arg "TORCH_INDEX=${torch_index}" --tag "$image" .
  echo "built $image in $((SECONDS - started)) s: $(docker image inspect --format '{{.Size}}' "$image") bytes" >&2
  local var="VESSELSEG_IMAGE_${kind^^}"
  [[ "$kind" == cuda ]] && var=VESSELSEG_IMAGE_GPU
  {
    echo "VESSELSEG_LOCAL_${var#VESSELSEG_}=${image}"
    echo "VESSELSEG_LOCAL_${var#VESSELSEG_}_ID=$(docker image inspect --format '{{.Id}}' "$image")"
    if [[ "$PUSH" == "1" ]]; then
      docker push "$image" >&2
      # The registry digest, not the local image id: that is what a cluster pulls and KFP caches on.
      echo "${var}=$(docker image inspect --format '{{index .RepoDigests 0}}' "$image")"
    fi
  } >> "$IMAGES_ENV.part"
}

mkdir -p build "$(dirname "$IMAGES_ENV")"
{
  echo "# written by docker/build-images.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) (BASE=${BASE})"
  echo "VESSELSEG_BASE_IMAGE=${base_name}"
  echo "VESSELSEG_BASE_DIGEST=${base_digest}"
} > "$IMAGES_ENV.part"
for kind in $IMAGES; do
  case "$kind" in
    cpu) build cpu docker/Dockerfile.cpu runtime "$TORCH_INDEX_CPU" ;;
    cuda) build cuda docker/Dockerfile.cuda runtime "$TORCH_INDEX_CUDA" ;;
    trainjob) build trainjob docker/Dockerfile.cuda trainjob "$TORCH_INDEX_CUDA" ;;
    *) echo "error: IMAGES: unknown image $kind (cpu, cuda, trainjob)" >&2; exit 2 ;;
  esac
done
mv "$IMAGES_ENV.part" "$IMAGES_ENV"
cat "$IMAGES_ENV"
