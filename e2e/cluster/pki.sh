#!/usr/bin/env bash
# Generate the throwaway PKI of the loopback e2e cluster into the folder given
# as $1: one CA that signs both the apiserver's serving cert and the admin's
# client cert (so one kubeconfig CA entry suffices), plus the service-account
# signing key pair. Keeps an existing, complete PKI (up.sh is idempotent).
set -euo pipefail

PKI=${1:?usage: pki.sh <folder>}
mkdir -p "$PKI"
cd "$PKI"
if [[ -f .complete ]]; then
  exit 0
fi
command -v openssl >/dev/null || { echo "pki.sh: openssl not found" >&2; exit 1; }

openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ferroflow-e2e-ca" \
  -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# sign <name> <subject> <extensions, one per line>
sign() {
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -out "$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
  rm -f "$1.csr"
}

# 10.96.0.1 is the `kubernetes` Service IP of --service-cluster-ip-range.
sign apiserver "/CN=kube-apiserver" \
  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
# O=system:masters: the admin bypasses RBAC, as a cluster admin does.
sign admin "/O=system:masters/CN=ferroflow-e2e-admin" \
  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"

openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
touch .complete
