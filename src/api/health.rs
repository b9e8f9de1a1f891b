//! Probe, metrics and version endpoints outside the MLflow API prefix.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::auth::Auth;
use super::endpoints::Routes;
use super::{AppState, MLFLOW_COMPATIBLE_VERSION};
use crate::telemetry::http::HttpMetrics;

pub fn routes() -> Routes {
    Routes::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/version", get(version))
}

/// Liveness, as MLflow's: `OK` while the process serves. It does not look at the store, so an
/// outage of the database does not get every replica restarted.
async fn health() -> &'static str {
    "OK"
}

/// Readiness: `OK` while the store answers; 503 otherwise, so a load balancer stops sending
/// traffic.
async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "OK"),
        Err(error) => {
            tracing::warn!(error = ?error, "readiness check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

/// Prometheus' text exposition format.
async fn metrics(
    State(state): State<AppState>,
    Extension(metrics): Extension<Arc<HttpMetrics>>,
) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = metrics.render(&state.store).await;
            if let Auth::Kubernetes(authorizer) = &state.auth {
                authorizer.render_metrics(&mut text);
            }
            text
        },
    )
}

async fn version() -> &'static str {
    MLFLOW_COMPATIBLE_VERSION
}
