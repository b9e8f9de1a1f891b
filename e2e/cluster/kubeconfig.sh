# shellcheck shell=bash
# write_kubeconfig FILE USER CERT KEY [NAMESPACE]: a kubeconfig for this cluster's API server
# ($API_PORT, CA $PKI/ca.crt) that authenticates USER with the client certificate CERT/KEY.
# Sourced by up.sh (the admin) and node-up.sh (the kubelet). Written private (mode 600).
write_kubeconfig() {
  local file=$1 user=$2 cert=$3 key=$4 namespace=${5:+, namespace: $5}
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: ferroflow-e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: ferroflow-e2e
  context: {cluster: ferroflow-e2e, user: $user$namespace}
current-context: ferroflow-e2e
KUBECONFIG
  chmod 600 "$file"
}
