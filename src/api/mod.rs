//! `ferroflow server`: MLflow's REST API on axum. Owns the wire format; all data goes
//! through [`crate::store`].

pub mod artifacts;
pub mod auth;
pub mod endpoints;
pub mod error;
pub mod experiments;
pub mod graphql;
pub mod health;
pub mod logged_models;
pub mod promotions;
pub mod registry;
pub mod request;
pub mod runs;
pub mod types;
pub mod ui;
pub mod ui_endpoints;
pub mod workspaces;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use tower_http::trace::TraceLayer;

use self::endpoints::Routes;
use self::error::{ApiError, ApiResult, ErrorCode};
use crate::artifacts::ArtifactStore;
use crate::store::{Store, ViewType};
use crate::telemetry::http::{self as http_metrics, HttpMetrics};

/// The MLflow version whose REST surface we implement; `/version` answers it because the
/// client compares it to enable features.
pub const MLFLOW_COMPATIBLE_VERSION: &str = "3.17.2";

/// Largest request body: log-batch's 1 MB limit plus room for JSON overhead. Artifact
/// uploads stream and are not bound by it.
const MAX_JSON_BODY: usize = 16 * 1024 * 1024;

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Root under which new experiments get their artifact location (`mlflow-artifacts:` by default,
    /// so clients upload through this server and need no storage credentials).
    pub default_artifact_root: String,
    /// MLflow's web UI bundle served at `/` (`--ui-dir`); `None`: `/` says how to get it.
    pub ui_dir: Option<std::path::PathBuf>,
}

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub artifacts: ArtifactStore,
    pub config: Arc<ServerConfig>,
    /// Who may call what (`--auth`).
    pub auth: auth::Auth,
}

/// The handlers' state with its store scoped to the request's workspace (`X-MLFLOW-WORKSPACE`,
/// else the caller's service-account namespace, else `default`: see [`auth::workspace`]), so
/// that an id or name from another workspace is not found.
pub struct InWorkspace(pub AppState);

impl FromRequestParts<AppState> for InWorkspace {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        // The auth middleware resolved it; public routes skip that, so it is read here then.
        let workspace = match parts.extensions.get::<auth::Workspace>() {
            Some(workspace) => workspace.clone(),
            None => auth::workspace(&parts.headers, None)?,
        };
        let mut scoped = state.clone();
        scoped.store = state.store.in_workspace(&workspace.0);
        Ok(Self(scoped))
    }
}

/// The whole HTTP surface: `/api/2.0/mlflow/*`, the UI's `/ajax-api/2.0/mlflow/*`, `/graphql`,
/// the UI bundle itself, the probes and `/metrics`, every request counted by the metrics
/// middleware.
pub fn router(state: AppState) -> Router {
    let metrics = Arc::new(HttpMetrics::default());
    served_routes(state)
        .into_router()
        .fallback(unknown_endpoint)
        .layer(axum::middleware::from_fn(request::refuse_nul_in_uri))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(http_metrics::request_span)
                .on_response(http_metrics::record_status),
        )
        .layer(Extension(Arc::clone(&metrics)))
        .layer(middleware::from_fn_with_state(metrics, http_metrics::track))
}

/// Every route served (the paths remembered for [`endpoints`]' test), without the fallback
/// and the outer layers.
pub fn served_routes(state: AppState) -> Routes<()> {
    // Every route's auth middleware reads the setting from the request; GraphQL's
    // in-process calls skip the outer layers, so the REST routes carry it too.
    let auth = Extension(state.auth.clone());
    let mlflow = Routes::new()
        .merge(experiments::routes())
        .merge(runs::routes())
        .merge(registry::routes())
        .merge(logged_models::routes())
        .merge(artifacts::mlflow_routes())
        .map_router(|router| router.route_layer(middleware::from_fn(refuse_oversized_body)));
    let api = Routes::new()
        .nest("/api/2.0/mlflow", mlflow.clone())
        .nest("/ajax-api/2.0/mlflow", mlflow)
        .nest("/api/2.0/ferroflow", promotions::routes())
        .merge(health::routes())
        .merge(artifacts::routes())
        .merge(ui_endpoints::routes())
        .merge(ui::routes())
        .merge(workspaces::routes())
        .map_router(|router| router.layer(auth.clone()))
        .with_state(state);
    // GraphQL answers through the REST routes, dispatched in-process.
    let graphql = graphql::routes(api.router().clone()).map_router(|router| router.layer(auth));
    api.merge(graphql)
}

/// A JSON request that declares a body over the limit is refused before any of it is read
/// (413), instead of after reading 16 MiB, or after waiting for bytes that never come.
async fn refuse_oversized_body(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_JSON_BODY as u64 => body_too_large(Some(length)),
        _ => next.run(request).await,
    }
}

/// 413 with MLflow's error body, for a body over [`MAX_JSON_BODY`]: declared so (`length`) or,
/// for a chunked body, found so while reading it.
fn body_too_large(length: Option<u64>) -> Response {
    let size = length.map_or_else(String::new, |length| format!(" of {length} bytes"));
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(ApiError::invalid(format!(
            "Request body{size} exceeds the limit of {MAX_JSON_BODY} bytes"
        ))),
    )
        .into_response()
}

async fn unknown_endpoint(uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::EndpointNotFound,
        format!("No API endpoint found for path '{}'", uri.path()),
    )
}

/// MLflow's ViewType by name or number; absent means ACTIVE_ONLY.
pub fn parse_view_type(view_type: Option<&str>) -> ApiResult<ViewType> {
    match view_type.map(str::to_ascii_uppercase).as_deref() {
        None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Ok(ViewType::ActiveOnly),
        Some("DELETED_ONLY") | Some("2") => Ok(ViewType::DeletedOnly),
        Some("ALL") | Some("3") => Ok(ViewType::All),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid view type '{other}': expected ACTIVE_ONLY, DELETED_ONLY or ALL"
        ))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::{AppState, ServerConfig};
    use crate::artifacts::ArtifactStore;
    use crate::store::Store;

    /// Handler state on a fresh SQLite file and artifact folder under `dir`.
    pub async fn state(dir: &Path) -> AppState {
        let uri = format!("sqlite:///{}", dir.join("test.db").display());
        let artifacts = dir.join("artifacts");
        AppState {
            store: Store::open_migrated(&uri).await.expect("store"),
            artifacts: ArtifactStore::open(&artifacts.display().to_string()).expect("artifacts"),
            config: Arc::new(ServerConfig {
                default_artifact_root: "mlflow-artifacts:".into(),
                ui_dir: None,
            }),
            auth: super::auth::Auth::None,
        }
    }
}
