//! Liveness and version endpoints outside the MLflow API prefix.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::{AppState, MLFLOW_COMPATIBLE_VERSION};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
}

/// `OK` while the store answers; 503 otherwise, so a load balancer stops sending traffic.
async fn health(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "OK"),
        Err(error) => {
            tracing::warn!(error = ?error, "health check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

async fn version() -> &'static str {
    MLFLOW_COMPATIBLE_VERSION
}
