//! The calls MLflow's web UI makes beyond the tracking and registry API: its dataset filter,
//! the MLmodel view of a model version, and the GenAI features' probes, answered "off" so the
//! pages stay quiet (telemetry disabled, no assistant, no traces, no gateway endpoints).

use axum::Json;
use axum::extract::Query;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::InWorkspace;
use super::artifacts::download_under_root;
use super::endpoints::Routes;
use super::error::ApiResult;
use super::error::{Required, non_empty};
use super::experiments::parse_experiment_id;
use super::registry::parse_version;
use super::request::{Mlflow, lenient};
use crate::store::dataset_summaries::DatasetSummary;

/// Routes at MLflow's paths (outside the `/api/2.0/mlflow` nest).
pub fn routes() -> Routes {
    const V3: &str = "/ajax-api/3.0/mlflow";
    Routes::new()
        .route(
            &format!("{V3}/ui-telemetry"),
            get(telemetry_config).post(telemetry_records),
        )
        .route(&format!("{V3}/assistant/config"), get(assistant_config))
        .route(
            &format!("{V3}/assistant/providers"),
            get(assistant_providers),
        )
        .route(&format!("{V3}/traces/metrics"), post(trace_metrics))
        .route("/ajax-api/2.0/mlflow/gateway-proxy", get(gateway_endpoints))
        .route(
            "/ajax-api/2.0/mlflow/experiments/search-datasets",
            post(search_datasets),
        )
        .route("/model-versions/get-artifact", get(model_version_artifact))
}

/// MLflow's answer when telemetry is disabled (`FALLBACK_UI_CONFIG`): ferroflow sends none.
async fn telemetry_config() -> Json<Value> {
    Json(json!({
        "disable_ui_telemetry": true,
        "disable_ui_events": [],
        "ui_rollout_percentage": 0,
    }))
}

async fn telemetry_records() -> Json<Value> {
    Json(json!({"status": "disabled"}))
}

/// No coding assistant is configured (MLflow's answer without one).
async fn assistant_config() -> Json<Value> {
    Json(json!({"providers": {}, "projects": {}, "remote_access_allowed": false}))
}

async fn assistant_providers() -> Json<Value> {
    Json(json!({"providers": []}))
}

/// ferroflow stores no traces: every trace metric is empty.
async fn trace_metrics() -> Json<Value> {
    Json(json!({"data_points": []}))
}

/// No AI gateway: its endpoint list is empty.
async fn gateway_endpoints() -> Json<Value> {
    Json(json!({"endpoints": []}))
}

#[derive(Deserialize)]
struct SearchDatasetsRequest {
    #[serde(default, deserialize_with = "lenient::list")]
    experiment_ids: Vec<String>,
}

#[derive(Serialize)]
struct SearchDatasetsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dataset_summaries: Vec<DatasetSummaryJson>,
}

#[derive(Serialize)]
struct DatasetSummaryJson {
    experiment_id: String,
    name: String,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

impl From<DatasetSummary> for DatasetSummaryJson {
    fn from(summary: DatasetSummary) -> Self {
        Self {
            experiment_id: summary.experiment_id.to_string(),
            name: summary.name,
            digest: summary.digest,
            context: summary.context,
        }
    }
}

async fn search_datasets(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<SearchDatasetsRequest>,
) -> ApiResult<Json<SearchDatasetsResponse>> {
    let experiment_ids = request
        .experiment_ids
        .iter()
        .map(|id| parse_experiment_id(Some(id)))
        .collect::<ApiResult<Vec<i64>>>()?;
    let summaries = state
        .store
        .search_dataset_summaries(&experiment_ids)
        .await?;
    Ok(Json(SearchDatasetsResponse {
        dataset_summaries: summaries.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize)]
struct ModelVersionArtifactRequest {
    name: Option<String>,
    version: Option<String>,
    path: Option<String>,
}

/// A file of a model version's model (the version page shows its `MLmodel`).
async fn model_version_artifact(
    InWorkspace(state): InWorkspace,
    Query(request): Query<ModelVersionArtifactRequest>,
) -> ApiResult<Response> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    let path = non_empty(request.path).required("path")?;
    let root = state
        .store
        .get_model_version_download_uri(&name, version)
        .await?;
    download_under_root(&state, &root, &path).await
}
