#!/usr/bin/env bash
# Import an OCI archive into the real e2e node's containerd (CRI namespace
# k8s.io) under the given reference, unless it is there already.
#
#   e2e/images/import.sh <archive> <ref>
#
# Finds the node's containerd socket from FERROFLOW_E2E_STATE and
# FERROFLOW_E2E_PORT_BASE, as e2e/cluster/node-env.sh derives it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
archive=${1:?usage: import.sh <archive> <ref>}
ref=${2:?usage: import.sh <archive> <ref>}
# shellcheck source=../cluster/node-env.sh
source "$here/../cluster/node-env.sh"
[[ -S $CONTAINERD_SOCK ]] || { echo "import.sh: no containerd at $CONTAINERD_SOCK (is the real node up?)" >&2; exit 1; }

ctr() { command ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
if ctr images check "name==$ref" 2>/dev/null | grep -q complete; then
  exit 0
fi
started=$SECONDS
ctr images import --base-name "${ref%:*}" "$archive" >&2
echo "import.sh: imported $ref in $((SECONDS - started))s" >&2
