//! `/mlflow/experiments/*` handlers.

use axum::Json;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::endpoints::Routes;
use super::error::{ApiError, ApiResult, Required, non_empty};
use super::request::{Mlflow, lenient};
use super::types::{Empty, Experiment, KeyValueJson};
use super::{InWorkspace, parse_view_type};
use crate::store::KeyValue;
use crate::store::experiments::ExperimentSearch;
use crate::store::registry::Actor;

/// Page size when a search does not say (the client's default).
const DEFAULT_SEARCH_PAGE: i64 = 1000;

pub fn routes() -> Routes {
    Routes::new()
        .route("/experiments/create", post(create))
        .route("/experiments/get", get(get_experiment))
        .route("/experiments/get-by-name", get(get_by_name))
        .route("/experiments/search", post(search).get(search))
        .route("/experiments/update", post(update))
        .route("/experiments/delete", post(delete))
        .route("/experiments/restore", post(restore))
        .route("/experiments/set-experiment-tag", post(set_tag))
        .route("/experiments/delete-experiment-tag", post(delete_tag))
}

/// Parses an experiment id as MLflow's SQL store does (a decimal integer).
/// The experiment ids of a search request, given as strings or numbers.
pub fn parse_experiment_ids(ids: &[Value]) -> ApiResult<Vec<i64>> {
    ids.iter()
        .map(|id| match id {
            Value::String(text) => parse_experiment_id(Some(text)),
            Value::Number(number) => parse_experiment_id(Some(&number.to_string())),
            other => Err(ApiError::invalid(format!("Invalid experiment ID {other}"))),
        })
        .collect()
}

pub fn parse_experiment_id(id: Option<&str>) -> ApiResult<i64> {
    let id = non_empty(id).required("experiment_id")?;
    id.trim().parse().map_err(|_| {
        ApiError::invalid(format!(
            "Invalid experiment ID '{id}': experiment IDs are integers"
        ))
    })
}

#[derive(Deserialize)]
struct CreateRequest {
    name: Option<String>,
    artifact_location: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValueJson>,
}

#[derive(Serialize)]
struct CreateResponse {
    experiment_id: String,
}

async fn create(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<CreateRequest>,
) -> ApiResult<Json<CreateResponse>> {
    let name = request.name.required("name")?;
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    let id = state
        .store
        .create_experiment(
            &name,
            request.artifact_location.as_deref(),
            &tags,
            &state.config.default_artifact_root,
        )
        .await?;
    Ok(Json(CreateResponse {
        experiment_id: id.to_string(),
    }))
}

#[derive(Deserialize)]
struct IdRequest {
    experiment_id: Option<String>,
}

#[derive(Serialize)]
struct ExperimentResponse {
    experiment: Experiment,
}

async fn get_experiment(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<IdRequest>,
) -> ApiResult<Json<ExperimentResponse>> {
    let id = parse_experiment_id(request.experiment_id.as_deref())?;
    let experiment = state.store.get_experiment(id).await?;
    Ok(Json(ExperimentResponse {
        experiment: experiment.into(),
    }))
}

#[derive(Deserialize)]
struct ByNameRequest {
    experiment_name: Option<String>,
}

async fn get_by_name(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<ByNameRequest>,
) -> ApiResult<Json<ExperimentResponse>> {
    let name = request.experiment_name.required("experiment_name")?;
    let experiment = state.store.get_experiment_by_name(&name).await?;
    Ok(Json(ExperimentResponse {
        experiment: experiment.into(),
    }))
}

#[derive(Deserialize)]
struct SearchRequest {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    page_token: Option<String>,
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_enum")]
    view_type: Option<String>,
}

#[derive(Serialize)]
struct SearchResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    experiments: Vec<Experiment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    let page = state
        .store
        .search_experiments(&ExperimentSearch {
            view_type: parse_view_type(request.view_type.as_deref())?,
            filter: request.filter.unwrap_or_default(),
            order_by: request.order_by,
            max_results: request.max_results.unwrap_or(DEFAULT_SEARCH_PAGE),
            page_token: request.page_token.unwrap_or_default(),
        })
        .await?;
    Ok(Json(SearchResponse {
        experiments: page.items.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Deserialize)]
struct UpdateRequest {
    experiment_id: Option<String>,
    new_name: Option<String>,
}

async fn update(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<UpdateRequest>,
) -> ApiResult<Json<Empty>> {
    let id = parse_experiment_id(request.experiment_id.as_deref())?;
    if let Some(new_name) = request.new_name {
        state
            .store
            .rename_experiment(id, &new_name, Actor::Api)
            .await?;
    }
    Ok(Json(Empty {}))
}

async fn delete(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<IdRequest>,
) -> ApiResult<Json<Empty>> {
    let id = parse_experiment_id(request.experiment_id.as_deref())?;
    state.store.delete_experiment(id, Actor::Api).await?;
    Ok(Json(Empty {}))
}

async fn restore(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<IdRequest>,
) -> ApiResult<Json<Empty>> {
    let id = parse_experiment_id(request.experiment_id.as_deref())?;
    state.store.restore_experiment(id, Actor::Api).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct TagRequest {
    experiment_id: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

async fn set_tag(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<TagRequest>,
) -> ApiResult<Json<Empty>> {
    let id = parse_experiment_id(request.experiment_id.as_deref())?;
    let key = request.key.required("key")?;
    let value = request.value.required("value")?;
    state
        .store
        .set_experiment_tag(id, &KeyValue::new(key, value), Actor::Api)
        .await?;
    Ok(Json(Empty {}))
}

async fn delete_tag(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<TagRequest>,
) -> ApiResult<Json<Empty>> {
    let id = parse_experiment_id(request.experiment_id.as_deref())?;
    let key = request.key.required("key")?;
    state
        .store
        .delete_experiment_tag(id, &key, Actor::Api)
        .await?;
    Ok(Json(Empty {}))
}
