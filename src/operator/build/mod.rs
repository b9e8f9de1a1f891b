//! Pure builders: from a resource and what the operator resolved to the Kubernetes objects it
//! owns. No I/O here; the reconcilers apply what these return.

pub mod model_deployment;
