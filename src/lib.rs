//! ferroflow: an MLflow-compatible tracking server, model registry and Kubernetes operator.
