#!/usr/bin/env bash
# Print the path of one YAML file with the Gateway API CRDs the e2e cluster
# installs (GatewayClass, Gateway, HTTPRoute, ReferenceGrant: the standard
# channel's kinds an HTTPRoute needs), taken from the sigs.k8s.io/gateway-api
# module pinned in gateway-api/go.mod. The module is fetched once into Go's
# module cache (GOPROXY, verified by go.sum); the file is cached by version,
# so a warm call costs no Go invocation at all.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FERROFLOW_CACHE:-$HOME/.cache/ferroflow}/cluster
KINDS=(gatewayclasses gateways httproutes referencegrants)

version=$(awk '$1 == "require" && $2 == "sigs.k8s.io/gateway-api" {print $3}' "$HERE/gateway-api/go.mod")
[[ -n $version ]] || { echo "gateway-api.sh: no sigs.k8s.io/gateway-api version in gateway-api/go.mod" >&2; exit 1; }
out=$CACHE/gateway-api-$version-standard.yaml
if [[ ! -f $out ]]; then
  mkdir -p "$CACHE"
  dir=$(cd "$HERE/gateway-api" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
    go mod download -json sigs.k8s.io/gateway-api >/dev/null &&
    GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)
  tmp=$out.tmp.$$
  for kind in "${KINDS[@]}"; do
    printf -- '---\n'
    cat "$dir/config/crd/standard/gateway.networking.k8s.io_$kind.yaml"
  done >"$tmp"
  mv "$tmp" "$out"
fi
echo "$out"
