// The Gateway API CRDs the e2e cluster installs (HTTPRoute, for
// ModelDeployment's traffic split): config/crd/standard of this module,
// pinned here and verified by go.sum. No Go code imports it, so keep the
// require when editing (`go mod tidy` would drop it); gateway-api.sh fetches
// the module into Go's module cache.
module ferroflow.dev/e2e/cluster/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.6.3
