#!/usr/bin/env bash
# Build (or reuse) the Python image of the real e2e node and print its OCI
# archive and image reference as the last stdout line: `<archive> <ref>`.
#
# Two layers, cached apart:
#   base  Debian bookworm minbase + python3 (mmdebstrap), keyed by the recipe below;
#   venv  /opt/venv with python-requirements.txt (pip in a chroot of the base),
#         keyed by the base key, the requirements and this script;
# so a requirements change rebuilds only the venv (~1 min) and a cold build takes
# ~3 min. pip needs this machine's CA bundle (PyPI goes through a TLS proxy) and
# resolver during the install only: both live outside /opt/venv, so neither is in
# any layer, and the base layer has no resolv.conf or hostname of this host.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=bookworm
MIRROR=${FERROFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The base layer's whole recipe: its key hashes these arguments. ($1 is
# mmdebstrap's, in its hook.)
# shellcheck disable=SC2016,SC2054
BASE_ARGS=(--variant=minbase --include=python3,python3-venv,ca-certificates
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"')
REQUIREMENTS=$IMAGES_DIR/python-requirements.txt
NAME=localhost/ferroflow-e2e-python

need_packages mmdebstrap:mmdebstrap umoci:umoci

base_key=$(printf '%s\n' "${BASE_ARGS[@]}" "$SUITE" "$MIRROR" | hash_of)
key=$( { echo "$base_key"; cat "$REQUIREMENTS" "${BASH_SOURCE[0]}" "$IMAGES_DIR/lib.sh"; } | hash_of)
archive=$IMAGES_CACHE/python-$key.oci.tar
ref=$NAME:$key
if [[ -f $archive ]]; then
  echo "$archive $ref"
  exit 0
fi
image_lock
if [[ -f $archive ]]; then
  echo "$archive $ref"
  exit 0
fi

base_layout=$IMAGES_CACHE/python-base-$base_key
image_scratch
scratch=$IMAGE_SCRATCH
started=$SECONDS

if [[ ! -f $base_layout/.complete ]]; then
  image_log "building the Debian $SUITE base layer (mmdebstrap, ~1.5 min)"
  rm -rf "$base_layout"
  mmdebstrap --quiet "${BASE_ARGS[@]}" "$SUITE" "$scratch/base.tar" "$MIRROR" >&2
  umoci init --layout "$scratch/base-layout" >&2
  umoci new --image "$scratch/base-layout:base" >&2
  umoci raw add-layer --image "$scratch/base-layout:base" "$scratch/base.tar" >&2
  touch "$scratch/base-layout/.complete"
  mv "$scratch/base-layout" "$base_layout"
  prune_old "$IMAGES_CACHE/python-base-*" 2
  image_log "base layer built in $((SECONDS - started))s"
fi

image_log "building the venv layer (pip install in a chroot, ~1 min)"
rootfs=$scratch/rootfs
mkdir -p "$rootfs"
if [[ -f $scratch/base.tar ]]; then
  tar -C "$rootfs" -xf "$scratch/base.tar"
else
  # The cached base: its only layer is the base rootfs.
  blob=$(python3 - "$base_layout" <<'PY'
import json, sys, os
layout = sys.argv[1]
index = json.load(open(os.path.join(layout, "index.json")))
digest = index["manifests"][0]["digest"].split(":", 1)[1]
manifest = json.load(open(os.path.join(layout, "blobs", "sha256", digest)))
print(os.path.join(layout, "blobs", "sha256", manifest["layers"][0]["digest"].split(":", 1)[1]))
PY
)
  tar -C "$rootfs" -xzf "$blob"
fi
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/tmp/host-ca.pem"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
cp "$REQUIREMENTS" "$rootfs/tmp/requirements.txt"
# A private mount namespace: /proc and /dev vanish with it, even if this is killed.
# shellcheck disable=SC2016  # expanded by the inner shell
unshare --mount --propagation private sh -euc '
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  chroot "$1" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true python3 -m venv /opt/venv
  chroot "$1" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
    /opt/venv/bin/pip install --no-cache-dir --no-input --progress-bar off \
    --cert /tmp/host-ca.pem -r /tmp/requirements.txt
' sh "$rootfs" >&2
rm -f "$rootfs/tmp/host-ca.pem" "$rootfs/etc/resolv.conf"
tar --numeric-owner -C "$rootfs" -cf "$scratch/venv.tar" ./opt/venv

layout=$scratch/layout
cp -a "$base_layout" "$layout"
rm -f "$layout/.complete"
umoci raw add-layer --image "$layout:base" --tag "$key" "$scratch/venv.tar" >&2
config=(--config.user 0:0 --config.workingdir /
  --config.env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --config.env LANG=C.UTF-8 --config.env PYTHONUNBUFFERED=1 --config.cmd python3)
for kv in "${IMAGE_ENV[@]}"; do config+=(--config.env "$kv"); done
umoci config --image "$layout:$key" "${config[@]}" >&2
umoci rm --image "$layout:base" >&2
pack_layout "$layout" "$ref" "$archive"
prune_old "$IMAGES_CACHE/python-*.oci.tar" 2
image_log "python image built in $((SECONDS - started))s"
echo "$archive $ref"
