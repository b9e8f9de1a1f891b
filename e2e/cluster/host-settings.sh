#!/usr/bin/env bash
# Print the host settings the real node may change (HOST_SETTINGS in
# node-env.sh), one `key=value` a line: node-up.sh records them before the
# node starts, node-down.sh writes them back, test-all.sh compares them before
# the cluster starts and after it is gone.
set -euo pipefail
# shellcheck source=node-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-env.sh"
for key in "${HOST_SETTINGS[@]}"; do
  echo "$key=$(sysctl -n "$key")"
done
