#!/usr/bin/env bash
# Build (or reuse) the pause image of the real e2e node: Debian's static
# catatonit run as `/pause -P` (what a pause container does: hold the Pod's
# namespaces, reap zombies). Prints `<archive> <ref>` as the last stdout line.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_packages catatonit:catatonit umoci:umoci
catatonit=$(command -v catatonit)
key=$( { sha256sum "$catatonit"; cat "${BASH_SOURCE[0]}" "$IMAGES_DIR/lib.sh"; } | hash_of)
archive=$IMAGES_CACHE/pause-$key.oci.tar
ref=localhost/ferroflow-e2e-pause:$key
if [[ ! -f $archive ]]; then
  image_lock
  if [[ ! -f $archive ]]; then
    image_scratch
    install -D -m 0755 "$catatonit" "$IMAGE_SCRATCH/rootfs/pause"
    image_from_rootfs "$ref" "$archive" --config.entrypoint /pause --config.cmd -P \
      --config.user 65535:65535
    prune_old "$IMAGES_CACHE/pause-*.oci.tar" 2
  fi
fi
echo "$archive $ref"
