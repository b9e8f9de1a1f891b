//! MLflow 3 logged models (`/mlflow/logged-models/*`) and `/mlflow/runs/outputs`.

use axum::Json;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::InWorkspace;
use super::artifacts::{ListUnderRootResponse, download_under_root, list_under_root};
use super::endpoints::Routes;
use super::error::{ApiError, ApiResult, Required};
use super::experiments::{parse_experiment_id, parse_experiment_ids};
use super::request::{Mlflow, lenient};
use super::types::{Empty, KeyValueJson, Metric};
use crate::store::KeyValue;
use crate::store::logged_models::{
    LOGGED_MODEL_STATUSES, LoggedModel as StoreLoggedModel, LoggedModelOrder, LoggedModelSearch,
    ModelOutput, NewLoggedModel,
};

/// Page size when a search does not say.
const DEFAULT_SEARCH_PAGE: i64 = 100;

pub fn routes() -> Routes {
    Routes::new()
        .route("/logged-models", post(create))
        .route("/logged-models/search", post(search))
        .route(
            "/logged-models/{model_id}",
            get(get_model).patch(finalize).delete(delete_model),
        )
        .route("/logged-models/{model_id}/tags", patch(set_tags))
        .route(
            "/logged-models/{model_id}/tags/{tag_key}",
            delete(delete_tag),
        )
        .route("/logged-models/{model_id}/params", post(log_params))
        .route(
            "/logged-models/{model_id}/artifacts/directories",
            get(list_artifacts),
        )
        .route(
            "/logged-models/{model_id}/artifacts/files",
            get(get_artifact_file),
        )
        .route("/runs/outputs", post(log_outputs))
}

#[derive(Serialize)]
pub struct LoggedModelInfo {
    model_id: String,
    experiment_id: String,
    name: String,
    creation_timestamp_ms: i64,
    last_updated_timestamp_ms: i64,
    artifact_uri: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<KeyValueJson>,
}

#[derive(Serialize)]
pub struct LoggedModelData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    params: Vec<KeyValueJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<Metric>,
}

#[derive(Serialize)]
pub struct LoggedModel {
    info: LoggedModelInfo,
    data: LoggedModelData,
}

impl From<StoreLoggedModel> for LoggedModel {
    fn from(model: StoreLoggedModel) -> Self {
        Self {
            info: LoggedModelInfo {
                model_id: model.model_id,
                experiment_id: model.experiment_id.to_string(),
                name: model.name,
                creation_timestamp_ms: model.creation_timestamp_ms,
                last_updated_timestamp_ms: model.last_updated_timestamp_ms,
                artifact_uri: model.artifact_uri,
                status: model.status,
                model_type: model.model_type,
                source_run_id: model.source_run_id,
                status_message: model.status_message,
                tags: model.tags.into_iter().map(Into::into).collect(),
            },
            data: LoggedModelData {
                params: model.params.into_iter().map(Into::into).collect(),
                metrics: model.metrics.into_iter().map(Into::into).collect(),
            },
        }
    }
}

#[derive(Serialize)]
struct ModelResponse {
    model: LoggedModel,
}

fn respond(model: StoreLoggedModel) -> Json<ModelResponse> {
    Json(ModelResponse {
        model: model.into(),
    })
}

#[derive(Deserialize)]
struct CreateRequest {
    experiment_id: Option<String>,
    name: Option<String>,
    model_type: Option<String>,
    source_run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    params: Vec<KeyValueJson>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValueJson>,
}

async fn create(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<CreateRequest>,
) -> ApiResult<Json<ModelResponse>> {
    let experiment_id = parse_experiment_id(request.experiment_id.as_deref())?;
    let model = state
        .store
        .create_logged_model(NewLoggedModel {
            experiment_id,
            name: request.name,
            model_type: request.model_type.filter(|t| !t.is_empty()),
            source_run_id: request.source_run_id.filter(|id| !id.is_empty()),
            params: request.params.into_iter().map(Into::into).collect(),
            tags: request.tags.into_iter().map(Into::into).collect(),
        })
        .await?;
    Ok(respond(model))
}

#[derive(Deserialize)]
struct GetRequest {
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    allow_deleted: Option<bool>,
}

async fn get_model(
    InWorkspace(state): InWorkspace,
    Path(model_id): Path<String>,
    Mlflow(request): Mlflow<GetRequest>,
) -> ApiResult<Json<ModelResponse>> {
    Ok(respond(
        state
            .store
            .get_logged_model(&model_id, request.allow_deleted.unwrap_or(false))
            .await?,
    ))
}

#[derive(Deserialize)]
struct FinalizeRequest {
    #[serde(default, deserialize_with = "lenient::opt_enum")]
    status: Option<String>,
}

/// A logged-model status by name or enum number.
fn parse_status(status: &str) -> ApiResult<&'static str> {
    let by_number = status
        .parse::<usize>()
        .ok()
        .and_then(|n| LOGGED_MODEL_STATUSES.get(n));
    by_number
        .or_else(|| {
            LOGGED_MODEL_STATUSES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(status))
        })
        .copied()
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid logged model status '{status}': expected one of {LOGGED_MODEL_STATUSES:?}"
            ))
        })
}

async fn finalize(
    InWorkspace(state): InWorkspace,
    Path(model_id): Path<String>,
    Mlflow(request): Mlflow<FinalizeRequest>,
) -> ApiResult<Json<ModelResponse>> {
    let status = parse_status(request.status.as_deref().required("status")?)?;
    Ok(respond(
        state.store.finalize_logged_model(&model_id, status).await?,
    ))
}

async fn delete_model(
    InWorkspace(state): InWorkspace,
    Path(model_id): Path<String>,
) -> ApiResult<Json<Empty>> {
    state.store.delete_logged_model(&model_id).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct TagsRequest {
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValueJson>,
}

async fn set_tags(
    InWorkspace(state): InWorkspace,
    Path(model_id): Path<String>,
    Mlflow(request): Mlflow<TagsRequest>,
) -> ApiResult<Json<ModelResponse>> {
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    Ok(respond(
        state.store.set_logged_model_tags(&model_id, &tags).await?,
    ))
}

async fn delete_tag(
    InWorkspace(state): InWorkspace,
    Path((model_id, key)): Path<(String, String)>,
) -> ApiResult<Json<Empty>> {
    state.store.delete_logged_model_tag(&model_id, &key).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct ParamsRequest {
    #[serde(default, deserialize_with = "lenient::list")]
    params: Vec<KeyValueJson>,
}

async fn log_params(
    InWorkspace(state): InWorkspace,
    Path(model_id): Path<String>,
    Mlflow(request): Mlflow<ParamsRequest>,
) -> ApiResult<Json<Empty>> {
    let params: Vec<KeyValue> = request.params.into_iter().map(Into::into).collect();
    state
        .store
        .log_logged_model_params(&model_id, &params)
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct SearchOrder {
    field_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    ascending: Option<bool>,
}

#[derive(Deserialize)]
struct SearchRequest {
    #[serde(default, deserialize_with = "lenient::list")]
    experiment_ids: Vec<Value>,
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<SearchOrder>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct SearchResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    models: Vec<LoggedModel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    let experiment_ids = parse_experiment_ids(&request.experiment_ids)?;
    let order_by = request
        .order_by
        .into_iter()
        .map(|order| {
            let field_name = order.field_name.required("order_by.field_name")?;
            Ok(LoggedModelOrder {
                field_name,
                ascending: order.ascending.unwrap_or(true),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let page = state
        .store
        .search_logged_models(&LoggedModelSearch {
            experiment_ids,
            filter: request.filter.unwrap_or_default(),
            order_by,
            max_results: request.max_results.unwrap_or(DEFAULT_SEARCH_PAGE),
            page_token: request.page_token.unwrap_or_default(),
        })
        .await?;
    Ok(Json(SearchResponse {
        models: page.items.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Deserialize)]
struct ListArtifactsRequest {
    artifact_directory_path: Option<String>,
}

async fn list_artifacts(
    InWorkspace(state): InWorkspace,
    Path(model_id): Path<String>,
    Mlflow(request): Mlflow<ListArtifactsRequest>,
) -> ApiResult<Json<ListUnderRootResponse>> {
    let model = state.store.get_logged_model(&model_id, false).await?;
    let relative = request.artifact_directory_path.unwrap_or_default();
    Ok(Json(
        list_under_root(&state, &model.artifact_uri, &relative).await?,
    ))
}

#[derive(Deserialize)]
struct ArtifactFileRequest {
    artifact_file_path: Option<String>,
}

/// The UI's download of one file of a logged model.
async fn get_artifact_file(
    InWorkspace(state): InWorkspace,
    Path(model_id): Path<String>,
    Query(request): Query<ArtifactFileRequest>,
) -> ApiResult<Response> {
    let model = state.store.get_logged_model(&model_id, false).await?;
    let file = request.artifact_file_path.required("artifact_file_path")?;
    download_under_root(&state, &model.artifact_uri, &file).await
}

#[derive(Deserialize)]
struct OutputRequest {
    model_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    step: Option<i64>,
}

#[derive(Deserialize)]
struct LogOutputsRequest {
    run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    models: Vec<OutputRequest>,
}

async fn log_outputs(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<LogOutputsRequest>,
) -> ApiResult<Json<Empty>> {
    let run_id = request
        .run_id
        .filter(|id| !id.is_empty())
        .required("run_id")?;
    let outputs = request
        .models
        .into_iter()
        .map(|model| {
            let model_id = model.model_id.required("models.model_id")?;
            Ok(ModelOutput {
                model_id,
                step: model.step.unwrap_or(0),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    state.store.log_run_outputs(&run_id, &outputs).await?;
    Ok(Json(Empty {}))
}
