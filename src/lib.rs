//! ferroflow: an MLflow-compatible tracking server, model registry and Kubernetes operator.

#![forbid(unsafe_code)]

/// MLflow REST API on axum (`ferroflow server`).
pub mod api;
/// Command-line interface of the one binary.
pub mod cli;
/// The `server` subcommand: wiring store, API and shutdown.
pub mod server;
/// The metadata store: all SQL, Postgres and SQLite.
pub mod store;
/// Logging setup.
pub mod telemetry;
