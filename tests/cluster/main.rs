//! E2e tests against a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok fake nodes) started on
//! loopback by `e2e/cluster/up.sh`:
//!
//! ```sh
//! eval "$(bash e2e/cluster/up.sh)"   # builds on first use, then seconds
//! cargo test --test cluster
//! bash e2e/cluster/down.sh
//! ```
//!
//! Without a reachable cluster each test prints SKIP and passes, unless `CI`
//! is set: then it fails.

mod auth;
mod harness;
mod owned;
mod smoke;
