#!/usr/bin/env bash
# Writes the chart files derived from other sources, so they cannot drift (`make generate`
# runs it; `make generate-check` fails when the result differs from what is committed):
#   ferroflow/crds/*.yaml             the CRDs of crds/ (which `ferroflow crd` generates)
#   ferroflow-crds/templates/*.yaml   the same, each with helm.sh/resource-policy: keep
#   ferroflow/templates/_rbac-rules.tpl  the rules of config/rbac's Roles and ClusterRoles
#   ferroflow/README.md               the values table, from the `# --` comments of values.yaml
#   ferroflow/tests/golden/*.yaml     `helm template` of the default and ci/ values files:
#                                     any change to the rendered manifests shows in review
# Needs helm (e2e/cluster/build-helm.sh builds the pinned one; FERROFLOW_HELM overrides).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
helm=${FERROFLOW_HELM:-$(bash "$root/e2e/cluster/build-helm.sh" | tail -n1)}

rm -f "$here"/ferroflow/crds/*.yaml "$here"/ferroflow-crds/templates/*.yaml
for crd in "$root"/crds/*.yaml; do
  name=$(basename "$crd")
  [[ $name == kustomization.yaml ]] && continue
  cp "$crd" "$here/ferroflow/crds/$name"
  # The annotation goes right under `metadata:` (the generated CRDs carry no annotations).
  awk '{ print } /^metadata:$/ && !done { print "  annotations:"; print "    helm.sh/resource-policy: keep"; done = 1 }' \
    "$crd" >"$here/ferroflow-crds/templates/$name"
done

python3 "$here/rbac-rules.py" "$root/config/rbac" "$here/ferroflow/templates/_rbac-rules.tpl"
python3 "$here/values-table.py" "$here/ferroflow/values.yaml" "$here/ferroflow/README.md"

golden=$here/ferroflow/tests/golden
mkdir -p "$golden"
rm -f "$golden"/*.yaml
render() { "$helm" template ferroflow "$here/ferroflow" --namespace ferroflow-system "$@"; }
render >"$golden/default.yaml"
for values in "$here"/ferroflow/ci/*-values.yaml; do
  render --values "$values" >"$golden/$(basename "$values" -values.yaml).yaml"
done
