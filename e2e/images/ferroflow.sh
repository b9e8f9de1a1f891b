#!/usr/bin/env bash
# Build (or reuse) ferroflow's own image for the real e2e node from a built
# binary: the Dockerfile's shape (binary at /usr/local/bin/ferroflow, user
# 65532:65532, entrypoint the binary, `server --host 0.0.0.0 --port 5000` as
# command) on a minimal base: /etc/passwd and /etc/group with root and nonroot,
# /tmp, /home/nonroot, and, for a dynamically linked (debug) build, the shared
# libraries ldd names. No CA bundle (nothing here dials TLS endpoints).
#
#   e2e/images/ferroflow.sh [binary]   (default $FERROFLOW_BIN)
#
# Prints `<archive> <ref>` as the last stdout line.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

binary=${1:-${FERROFLOW_BIN:?usage: ferroflow.sh <binary> (or FERROFLOW_BIN)}}
[[ -x $binary ]] || { image_log "not an executable: $binary"; exit 1; }
need_packages umoci:umoci

# The loader and libraries of a dynamic build (none for a static musl build).
libs=$(ldd "$binary" 2>/dev/null | grep -o '/[^ ]*' | sort -u || true)
key=$( { sha256sum "$binary"; for lib in $libs; do sha256sum "$(readlink -f "$lib")"; done
  cat "${BASH_SOURCE[0]}" "$IMAGES_DIR/lib.sh"; } | hash_of)
archive=$IMAGES_CACHE/ferroflow-$key.oci.tar
ref=localhost/ferroflow-e2e:$key
if [[ ! -f $archive ]]; then
  image_lock
  if [[ ! -f $archive ]]; then
    image_scratch
    rootfs=$IMAGE_SCRATCH/rootfs
    install -D -m 0755 "$binary" "$rootfs/usr/local/bin/ferroflow"
    for lib in $libs; do
      install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done
    mkdir -p "$rootfs/etc" "$rootfs/home/nonroot" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    chown 65532:65532 "$rootfs/home/nonroot"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
      >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
    image_from_rootfs "$ref" "$archive" --config.user 65532:65532 \
      --config.entrypoint /usr/local/bin/ferroflow \
      --config.cmd server --config.cmd --host --config.cmd 0.0.0.0 --config.cmd --port --config.cmd 5000 \
      --config.exposedports 5000/tcp --config.workingdir /home/nonroot
    prune_old "$IMAGES_CACHE/ferroflow-*.oci.tar" 2
  fi
fi
echo "$archive $ref"
