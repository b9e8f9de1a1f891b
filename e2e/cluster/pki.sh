#!/usr/bin/env bash
# Generate the throwaway PKI of the loopback e2e cluster into the folder given
# as $1: one CA that signs both the apiserver's serving cert and the admin's
# client cert (so one kubeconfig CA entry suffices), plus the service-account
# signing key pair, and the apiserver's client cert for kubelets. With a node
# name and IP ($2, $3) also that real node's kubelet certs (client, serving).
# Keeps what exists (up.sh is idempotent).
set -euo pipefail

PKI=${1:?usage: pki.sh <folder> [<node-name> <node-ip>]}
mkdir -p "$PKI"
cd "$PKI"
command -v openssl >/dev/null || { echo "pki.sh: openssl not found" >&2; exit 1; }

# sign <name> <subject> <extensions, one per line>
sign() {
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -out "$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
  rm -f "$1.csr"
  chmod 600 "$1.key"
}
CLIENT="basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"

if [[ ! -f .complete ]]; then
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ferroflow-e2e-ca" \
  -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# 10.96.0.1 is the `kubernetes` Service IP of --service-cluster-ip-range.
sign apiserver "/CN=kube-apiserver" \
  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
# O=system:masters: the admin bypasses RBAC, as a cluster admin does.
sign admin "/O=system:masters/CN=ferroflow-e2e-admin" "$CLIENT"

openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
touch .complete
fi

# The apiserver's identity towards kubelets (logs, exec): the real node's
# kubelet accepts any client cert this CA signed.
[[ -f apiserver-kubelet-client.crt ]] ||
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$CLIENT"

if [[ -n ${2:-} ]]; then
  node=$2 ip=${3:?pki.sh: a node name needs its IP}
  # O=system:nodes, CN=system:node:<name>: what the Node authorizer expects.
  [[ -f kubelet-$node.crt ]] || sign "kubelet-$node" "/O=system:nodes/CN=system:node:$node" "$CLIENT"
  [[ -f kubelet-$node-$ip-serving.crt ]] ||
    sign "kubelet-$node-$ip-serving" "/CN=$node" \
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$ip,DNS:$node\n"
fi
