#!/usr/bin/env bash
# Build (and with PUSH=1 push) the vesselseg images; needs a Docker engine. Writes build/images.env with the
# digest-pinned references that `vesselseg compile-cluster` reads (VESSELSEG_IMAGE_CPU|GPU|TRAINJOB).
#   REGISTRY=ghcr.io/my-org PUSH=1 docker/build-images.sh
set -euo pipefail
cd "${BASH_SOURCE[0]%/*}/.."

REGISTRY="${REGISTRY:-ghcr.io/vesselseg}"
PUSH="${PUSH:-0}"
# shellcheck source=docker/base-images.env
source docker/base-images.env

for ref in "$PYTHON_BASE" "$CUDA_DEVEL_BASE" "$CUDA_RUNTIME_BASE"; do
  if [[ "$ref" != *@sha256:* || "$ref" == *@sha256:0000000000000000* ]]; then
    echo "error: docker/base-images.env: $ref is a placeholder; pin the real digest first (see docker/README.md)" >&2
    exit 2
  fi
done

CODE_VERSION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)-${CODE_VERSION}"

build() {  # name dockerfile target build-args...
  local name="$1" file="$2" target="$3"
  shift 3
  docker build --file "$file" --target "$target" --build-arg "CODE_VERSION=${CODE_VERSION}" "$@" \
    --tag "${REGISTRY}/${name}:${VERSION}" .
}

build vesselseg-cpu docker/Dockerfile.cpu runtime \
  --build-arg "PYTHON_BASE=${PYTHON_BASE}" --build-arg "TORCH_INDEX_CPU=${TORCH_INDEX_CPU}"
cuda_args=(--build-arg "CUDA_DEVEL_BASE=${CUDA_DEVEL_BASE}" --build-arg "CUDA_RUNTIME_BASE=${CUDA_RUNTIME_BASE}"
           --build-arg "TORCH_INDEX_CUDA=${TORCH_INDEX_CUDA}" --build-arg "WITH_FLASH_ATTN=${WITH_FLASH_ATTN:-0}")
build vesselseg-cuda docker/Dockerfile.cuda runtime "${cuda_args[@]}"
build vesselseg-trainjob docker/Dockerfile.cuda trainjob "${cuda_args[@]}"

mkdir -p build
: > build/images.env
for pair in CPU:vesselseg-cpu GPU:vesselseg-cuda TRAINJOB:vesselseg-trainjob; do
  var="VESSELSEG_IMAGE_${pair%%:*}" image="${REGISTRY}/${pair#*:}:${VERSION}"
  if [[ "$PUSH" == "1" ]]; then
    docker push "$image"
    # The registry digest, not the local image id: that is what a cluster pulls and KFP caches on.
    echo "${var}=$(docker inspect --format '{{index .RepoDigests 0}}' "$image")" >> build/images.env
  else
    echo "# ${var}: ${image} (not pushed, so no registry digest yet)" >> build/images.env
  fi
done
cat build/images.env
