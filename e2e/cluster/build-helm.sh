#!/usr/bin/env bash
# Build (or reuse) helm, pinned by helm/go.mod, and print its path as the last line on
# stdout; everything else goes to stderr. A step of its own beside build.sh, so bumping helm
# does not rebuild Kubernetes (and the reverse). The folder is keyed by a hash of what
# decides its content; GOMODCACHE and GOCACHE stay at Go's defaults, shared with build.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FERROFLOW_CACHE:-$HOME/.cache/ferroflow}/cluster
export CGO_ENABLED=0 GOTOOLCHAIN=local

command -v go >/dev/null || { echo "build-helm.sh: go not found on PATH (need go >= 1.26)" >&2; exit 1; }

stamp=$({
  cat "$HERE/helm/go.mod" "$HERE/helm/go.sum" "$HERE/build-helm.sh"
  go env GOVERSION
} | sha256sum | cut -c1-16)
OUT=$CACHE/helm-$stamp

if [[ -f $OUT/.complete ]]; then
  echo "$OUT/helm"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.build-helm.lock"
flock 9
if [[ -f $OUT/.complete ]]; then
  echo "$OUT/helm"
  exit 0
fi

tmp=$OUT.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS
(
  cd "$HERE/helm"
  version=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
  echo "build-helm.sh: building helm $version into $OUT" >&2
  # As helm's Makefile: its version, and the Kubernetes version of its client-go (v0.N ->
  # 1.N), which `helm template` and `helm lint` assume; without them v3.x-dev and 1.20.
  kube_minor=$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
  done
  go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
) >&2
echo "build-helm.sh: built in $((SECONDS - started))s" >&2
touch "$tmp/.complete"
rm -rf "$OUT"
mv "$tmp" "$OUT"
trap - EXIT
for old in "$CACHE"/helm-*; do
  [[ $old == "$OUT" || ! -d $old ]] && continue
  rm -rf "$old"
done
echo "$OUT/helm"
