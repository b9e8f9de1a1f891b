//! ferroflow: an MLflow-compatible tracking server, model registry and Kubernetes operator.

#![forbid(unsafe_code)]

/// MLflow REST API on axum (`ferroflow server`).
pub mod api;
/// Artifact storage on object_store: confined paths, streamed bytes.
pub mod artifacts;
/// Command-line interface of the one binary.
pub mod cli;
/// A client of MLflow's REST API: `ferroflow model download`.
pub mod client;
/// Custom resource types (`ferroflow.dev/v1alpha1`): schemas, CEL rules, conditions.
pub mod crd;
/// MLflow Projects: MLproject files, parameters, and `ferroflow run`.
pub mod mlproject;
/// The Kubernetes operator (`ferroflow operator`): one reconciler per kind.
pub mod operator;
/// Percent-decoding for URLs and object names.
pub mod percent;
/// The `server` subcommand: wiring store, API and shutdown.
pub mod server;
/// The metadata store: all SQL, Postgres and SQLite.
pub mod store;
/// Logging setup.
pub mod telemetry;
