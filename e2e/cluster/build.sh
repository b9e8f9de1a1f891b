#!/usr/bin/env bash
# Build (or reuse) the binaries of the e2e cluster (the control plane, the
# kubelet of the real node, kwok) and print the folder that holds them as the
# last line on stdout; everything else goes to stderr.
#
# The folder lives outside the repo and is keyed by a hash of everything that
# decides its content (both go.mod/go.sum pairs, this script, the Go version),
# so a fresh clone on the same machine reuses it and the warm path is a no-op.
# GOMODCACHE and GOCACHE stay at Go's defaults so they persist across clones.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FERROFLOW_CACHE:-$HOME/.cache/ferroflow}/cluster
export CGO_ENABLED=0 GOTOOLCHAIN=local

command -v go >/dev/null || { echo "build.sh: go not found on PATH (need go >= 1.26)" >&2; exit 1; }

stamp=$({
  cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/kwok/go.mod" "$HERE/kwok/go.sum" "$HERE/build.sh"
  go env GOVERSION
} | sha256sum | cut -c1-16)
OUT=$CACHE/bin-$stamp

if [[ -f $OUT/.complete ]]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$CACHE"
# Two callers (say, up.sh in two shells) must not build into the same folder.
exec 9>"$CACHE/.build.lock"
flock 9
if [[ -f $OUT/.complete ]]; then
  echo "$OUT"
  exit 0
fi

tmp=$OUT.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS

kube_version=$(cd "$HERE" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
kube_minor=$(cut -d. -f2 <<<"$kube_version")
# Without these the binaries report v0.0.0-master; kubectl and logs read
# better with the real version (the API's emulation version does not depend
# on it).
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "build.sh: building Kubernetes $kube_version into $OUT (cold: tens of minutes on 2 cores)" >&2
(
  cd "$HERE"
  # notest,grpcnotrace are the tags upstream builds with: they drop test hooks
  # and the grpc trace import, nothing we use.
  go build -mod=readonly -trimpath -tags=notest,grpcnotrace -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet
  # etcd's main package is its server module root; name the output ourselves.
  go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
) >&2

(
  cd "$HERE/kwok"
  go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
  # kwok's stock node/pod stages ship inside its module; take the ones up.sh
  # uses (pod-complete is replaced by our own stages, see kwok-stages.yaml).
  kwok_dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for stage in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-delete.yaml; do
    printf -- '---\n'
    cat "$kwok_dir/kustomize/stage/$stage"
  done >"$tmp/kwok-default-stages.yaml"
) >&2

echo "build.sh: built in $((SECONDS - started))s" >&2
touch "$tmp/.complete"
rm -rf "$OUT"
mv "$tmp" "$OUT"
trap - EXIT
# Keep one set of binaries: older stamps are dead weight (~0.5 GB each). A
# stamp whose binaries a running process executes (another checkout's cluster)
# stays until a later build finds it unused.
in_use=$(find /proc -maxdepth 2 -name exe -exec readlink {} + 2>/dev/null | grep -o "^$CACHE/bin-[0-9a-f]*" | sort -u || true)
for old in "$CACHE"/bin-*; do
  [[ $old == "$OUT" || ! -d $old ]] && continue
  if grep -qxF "$old" <<<"$in_use"; then
    echo "build.sh: keeping $old (in use by a running process)" >&2
  else
    rm -rf "$old"
  fi
done
echo "$OUT"
