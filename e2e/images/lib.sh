# shellcheck shell=bash disable=SC2034  # sourced: the image scripts use the variables
# Shared by the image scripts in this folder (sourced, not run).
#
# Images are built without a registry or a container engine: root file systems
# made with mmdebstrap or by copying files, packed into OCI layouts by umoci,
# and kept as OCI archives (tar of the layout) in the ferroflow cache, one per
# key. A key hashes everything that decides the content, so a warm run reuses
# the archive and a change rebuilds only what it touches.
set -euo pipefail

IMAGES_CACHE=${FERROFLOW_CACHE:-$HOME/.cache/ferroflow}/images
IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Every image and every e2e process that runs MLflow code keeps MLflow's usage
# telemetry off: this machine may only talk to loopback and its own namespaces.
IMAGE_ENV=(MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true)

image_log() { echo "images: $*" >&2; }

# Install the Debian packages named as "command:package" pairs when the command
# is missing (a fresh CI machine has none of them).
need_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x ${pair%%:*} ]] || missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  image_log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

hash_of() { sha256sum | cut -c1-16; }

# One build of a cache entry at a time, also across checkouts. Holding the lock,
# any scratch folder in the cache is a killed build's leftover.
image_lock() {
  mkdir -p "$IMAGES_CACHE"
  exec 8>"$IMAGES_CACHE/.lock"
  flock 8
  find "$IMAGES_CACHE" -mindepth 1 -maxdepth 1 -name '*.scratch.*' -exec rm -rf {} +
}

# image_scratch: a scratch folder in the cache (same file system as the archives),
# removed on exit and, if this is killed, by the next image_lock.
image_scratch() {
  IMAGE_SCRATCH=$(mktemp -d "$IMAGES_CACHE/build.scratch.XXXXXX")
  trap 'rm -rf "$IMAGE_SCRATCH"' EXIT
}

# pack_layout <layout> <tag> <archive>: the layout as an OCI archive that
# `ctr images import` reads, written atomically.
pack_layout() {
  local layout=$1 tag=$2 archive=$3
  umoci gc --layout "$layout" >&2
  tar -C "$layout" -cf "$archive.tmp" .
  mv "$archive.tmp" "$archive"
  image_log "packed $tag into $archive ($(du -h "$archive" | cut -f1))"
}

# Keep the newest $2 archives matching the glob $1; older keys are dead weight.
prune_old() {
  local pattern=$1 keep=$2
  # shellcheck disable=SC2012,SC2086  # a glob on purpose; names are ours: no spaces
  ls -1dt $pattern 2>/dev/null | tail -n +$((keep + 1)) | xargs -r rm -rf
}

# image_from_rootfs <ref> <archive> [umoci config args...]: a one-layer image
# of $IMAGE_SCRATCH/rootfs (under a second for a static binary).
image_from_rootfs() {
  local ref=$1 archive=$2 rootfs=$IMAGE_SCRATCH/rootfs layout=$IMAGE_SCRATCH
  shift 2
  umoci init --layout "$layout/oci" >&2
  umoci new --image "$layout/oci:${ref##*:}" >&2
  tar --numeric-owner -C "$rootfs" -cf "$layout/layer.tar" .
  umoci raw add-layer --image "$layout/oci:${ref##*:}" "$layout/layer.tar" >&2
  local env_args=() kv
  for kv in "${IMAGE_ENV[@]}"; do env_args+=(--config.env "$kv"); done
  umoci config --image "$layout/oci:${ref##*:}" "${env_args[@]}" "$@" >&2
  pack_layout "$layout/oci" "$ref" "$archive"
}
