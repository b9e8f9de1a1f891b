//! `/mlflow/runs/*` and `/mlflow/metrics/*` handlers.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Identity;
use super::endpoints::Routes;
use super::error::{ApiError, ApiResult, Required};
use super::experiments::{parse_experiment_id, parse_experiment_ids};
use super::request::{Mlflow, lenient};
use super::types::{
    DatasetInput, Empty, KeyValueJson, Metric, MetricInput, ModelInput, Run, RunInfo,
};
use super::{InWorkspace, parse_view_type};
use crate::store::KeyValue;
use crate::store::metric_sampling::MAX_BULK_POINTS;
use crate::store::metrics::{HistoryChunk, HistoryPoint};
use crate::store::runs::{self, NewRun, RunSearch, USER_TAG};

/// Page size when a runs search does not say (the proto's default).
const DEFAULT_SEARCH_PAGE: i64 = 1000;
/// Tag holding the JSON list of models logged with the legacy log-model call.
const LOG_MODEL_HISTORY_TAG: &str = "mlflow.log-model.history";

pub fn routes() -> Routes {
    Routes::new()
        .route("/runs/create", post(create))
        .route("/runs/get", get(get_run))
        .route("/runs/update", post(update))
        .route("/runs/delete", post(delete))
        .route("/runs/restore", post(restore))
        .route("/runs/log-parameter", post(log_param))
        .route("/runs/log-metric", post(log_metric))
        .route("/runs/set-tag", post(set_tag))
        .route("/runs/delete-tag", post(delete_tag))
        .route("/runs/log-batch", post(log_batch))
        .route("/runs/log-inputs", post(log_inputs))
        .route("/runs/log-model", post(log_model))
        .route("/runs/search", post(search).get(search))
        .route("/metrics/get-history", get(get_history))
        .route(
            "/metrics/get-history-bulk-interval",
            get(get_history_bulk_interval),
        )
}

/// The run id of a request: `run_id`, or the deprecated `run_uuid` the client also sends.
#[derive(Deserialize, Default)]
struct RunRef {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

impl RunRef {
    fn id(self) -> ApiResult<String> {
        self.run_id
            .filter(|id| !id.is_empty())
            .or(self.run_uuid.filter(|id| !id.is_empty()))
            .required("run_id")
    }
}

#[derive(Serialize)]
struct RunResponse {
    run: Run,
}

#[derive(Deserialize)]
struct CreateRequest {
    experiment_id: Option<String>,
    user_id: Option<String>,
    run_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    start_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValueJson>,
}

async fn create(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<CreateRequest>,
) -> ApiResult<Json<RunResponse>> {
    let experiment_id = match request.experiment_id.as_deref() {
        None | Some("") => crate::store::experiments::DEFAULT_EXPERIMENT_ID,
        id => parse_experiment_id(id)?,
    };
    let (user_id, tags) = run_user(
        &identity,
        request.user_id,
        request.tags.into_iter().map(Into::into).collect(),
    );
    let run = state
        .store
        .create_run(NewRun {
            experiment_id,
            user_id,
            run_name: request.run_name,
            start_time: request.start_time,
            tags,
        })
        .await?;
    Ok(Json(RunResponse { run: run.into() }))
}

/// A new run's `user_id` and tags: with authentication, the caller in both `user_id` and the
/// `mlflow.user` tag (MLflow's client sends one value for both), whatever the body says;
/// without, what the client sent.
fn run_user(
    identity: &Identity,
    user_id: Option<String>,
    mut tags: Vec<KeyValue>,
) -> (String, Vec<KeyValue>) {
    let Some(user) = identity.user() else {
        return (user_id.unwrap_or_default(), tags);
    };
    tags.retain(|tag| tag.key != USER_TAG);
    tags.push(KeyValue::new(USER_TAG, user));
    (user.to_owned(), tags)
}

/// With authentication a run's `mlflow.user` is the caller who created it: writing or
/// removing it later (tag `keys` of a request) is refused, so nobody re-attributes a run.
fn keep_run_user<'a>(
    identity: &Identity,
    keys: impl IntoIterator<Item = &'a str>,
) -> ApiResult<()> {
    if identity.user().is_some() && keys.into_iter().any(|key| key == USER_TAG) {
        return Err(ApiError::invalid(format!(
            "Tag '{USER_TAG}' names the authenticated user who created the run; it cannot be changed."
        )));
    }
    Ok(())
}

async fn get_run(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<RunRef>,
) -> ApiResult<Json<RunResponse>> {
    let run = state.store.get_run(&request.id()?).await?;
    Ok(Json(RunResponse { run: run.into() }))
}

#[derive(Deserialize)]
struct UpdateRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::opt_enum")]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    end_time: Option<i64>,
    run_name: Option<String>,
}

#[derive(Serialize)]
struct UpdateResponse {
    run_info: RunInfo,
}

async fn update(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<UpdateRequest>,
) -> ApiResult<Json<UpdateResponse>> {
    let run_id = request.run.id()?;
    let status = request
        .status
        .as_deref()
        .map(parse_run_status)
        .transpose()?;
    let info = state
        .store
        .update_run(
            &run_id,
            status,
            request.end_time,
            request.run_name.as_deref(),
        )
        .await?;
    Ok(Json(UpdateResponse {
        run_info: info.into(),
    }))
}

/// A run status by name or by its enum number (protobuf JSON accepts both).
fn parse_run_status(status: &str) -> ApiResult<&'static str> {
    let by_number = status
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| runs::RUN_STATUSES.get(i));
    by_number
        .or_else(|| {
            runs::RUN_STATUSES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(status))
        })
        .copied()
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid run status '{status}': expected one of {:?}",
                runs::RUN_STATUSES
            ))
        })
}

async fn delete(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<RunRef>,
) -> ApiResult<Json<Empty>> {
    state.store.delete_run(&request.id()?).await?;
    Ok(Json(Empty {}))
}

async fn restore(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<RunRef>,
) -> ApiResult<Json<Empty>> {
    state.store.restore_run(&request.id()?).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct KeyValueRequest {
    #[serde(flatten)]
    run: RunRef,
    key: Option<String>,
    value: Option<String>,
}

impl KeyValueRequest {
    fn into_parts(self) -> ApiResult<(String, KeyValue)> {
        let run_id = self.run.id()?;
        let key = self.key.required("key")?;
        let value = self.value.required("value")?;
        Ok((run_id, KeyValue::new(key, value)))
    }
}

async fn log_param(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<KeyValueRequest>,
) -> ApiResult<Json<Empty>> {
    let (run_id, param) = request.into_parts()?;
    state.store.log_param(&run_id, param).await?;
    Ok(Json(Empty {}))
}

async fn set_tag(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<KeyValueRequest>,
) -> ApiResult<Json<Empty>> {
    let (run_id, tag) = request.into_parts()?;
    keep_run_user(&identity, [tag.key.as_str()])?;
    state.store.set_run_tag(&run_id, tag).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct DeleteTagRequest {
    #[serde(flatten)]
    run: RunRef,
    key: Option<String>,
}

async fn delete_tag(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<DeleteTagRequest>,
) -> ApiResult<Json<Empty>> {
    let run_id = request.run.id()?;
    let key = request.key.required("key")?;
    keep_run_user(&identity, [key.as_str()])?;
    state.store.delete_run_tag(&run_id, &key).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct LogMetricRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(flatten)]
    metric: MetricInput,
}

/// Checks the required fields of a logged metric and converts it.
fn metric_from_input(input: MetricInput) -> ApiResult<runs::Metric> {
    let key = input.key.required("key")?;
    let value = input.value.required("value")?;
    let timestamp = input.timestamp.required("timestamp")?;
    let mut metric = runs::Metric::new(key, value, timestamp, input.step.unwrap_or(0));
    metric.model_id = input.model_id.filter(|id| !id.is_empty());
    metric.dataset_name = input.dataset_name.filter(|name| !name.is_empty());
    metric.dataset_digest = input.dataset_digest.filter(|digest| !digest.is_empty());
    Ok(metric)
}

async fn log_metric(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<LogMetricRequest>,
) -> ApiResult<Json<Empty>> {
    let run_id = request.run.id()?;
    let metric = metric_from_input(request.metric)?;
    state.store.log_metric(&run_id, metric).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct LogBatchRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::list")]
    metrics: Vec<MetricInput>,
    #[serde(default, deserialize_with = "lenient::list")]
    params: Vec<KeyValueJson>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValueJson>,
}

async fn log_batch(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<LogBatchRequest>,
) -> ApiResult<Json<Empty>> {
    let run_id = request.run.id()?;
    let metrics = request
        .metrics
        .into_iter()
        .map(metric_from_input)
        .collect::<ApiResult<Vec<_>>>()?;
    let params: Vec<KeyValue> = request.params.into_iter().map(Into::into).collect();
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    keep_run_user(&identity, tags.iter().map(|tag| tag.key.as_str()))?;
    state
        .store
        .log_batch(&run_id, &metrics, &params, &tags)
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct LogInputsRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::list")]
    datasets: Vec<DatasetInput>,
    #[serde(default, deserialize_with = "lenient::list")]
    models: Vec<ModelInput>,
}

async fn log_inputs(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<LogInputsRequest>,
) -> ApiResult<Json<Empty>> {
    let run_id = request.run.id()?;
    let inputs: Vec<_> = request.datasets.into_iter().map(Into::into).collect();
    state.store.log_inputs(&run_id, &inputs).await?;
    if !request.models.is_empty() {
        let model_ids: Vec<String> = request
            .models
            .into_iter()
            .map(|model| model.model_id)
            .collect();
        state
            .store
            .log_run_model_inputs(&run_id, &model_ids)
            .await?;
    }
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct LogModelRequest {
    #[serde(flatten)]
    run: RunRef,
    model_json: Option<String>,
}

/// Legacy log-model: appends the model's dict to the run's `mlflow.log-model.history` tag.
async fn log_model(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<LogModelRequest>,
) -> ApiResult<Json<Empty>> {
    let run_id = request.run.id()?;
    let model_json = request.model_json.required("model_json")?;
    let model: Value = serde_json::from_str(&model_json)
        .map_err(|error| ApiError::invalid(format!("Malformed model info: {error}")))?;
    for field in ["artifact_path", "flavors", "utc_time_created", "run_id"] {
        if model.get(field).is_none() {
            return Err(ApiError::invalid(format!(
                "Model json is missing mandatory fields: '{field}'"
            )));
        }
    }
    let run = state.store.get_run(&run_id).await?;
    let mut history: Vec<Value> = run
        .tags
        .iter()
        .find(|tag| tag.key == LOG_MODEL_HISTORY_TAG)
        .and_then(|tag| serde_json::from_str(&tag.value).ok())
        .unwrap_or_default();
    history.push(model);
    let value =
        serde_json::to_string(&history).map_err(|error| ApiError::invalid(error.to_string()))?;
    state
        .store
        .log_batch(
            &run_id,
            &[],
            &[],
            &[KeyValue::new(LOG_MODEL_HISTORY_TAG, value)],
        )
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct SearchRequest {
    #[serde(default, deserialize_with = "lenient::list")]
    experiment_ids: Vec<Value>,
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_enum")]
    run_view_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<String>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct SearchResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runs: Vec<Run>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    let experiment_ids = parse_experiment_ids(&request.experiment_ids)?;
    let page = state
        .store
        .search_runs(&RunSearch {
            experiment_ids,
            filter: request.filter.unwrap_or_default(),
            view_type: parse_view_type(request.run_view_type.as_deref())?,
            max_results: request.max_results.unwrap_or(DEFAULT_SEARCH_PAGE),
            order_by: request.order_by,
            page_token: request.page_token.unwrap_or_default(),
        })
        .await?;
    Ok(Json(SearchResponse {
        runs: page.items.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Deserialize)]
struct HistoryRequest {
    #[serde(flatten)]
    run: RunRef,
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct HistoryResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<Metric>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// The answer is written as the store reads it: `{"metrics":[…],"next_page_token":"…"}` in
/// chunks, so a page of any size costs the server a few chunks of memory. The first chunk is
/// awaited before answering: an error up to there is still an MLflow error response.
async fn get_history(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<HistoryRequest>,
) -> ApiResult<Response> {
    let run_id = request.run.id()?;
    let key = request.metric_key.required("metric_key")?;
    let mut chunks = state
        .store
        .stream_metric_history(
            &run_id,
            &key,
            request.max_results,
            request.page_token.as_deref().unwrap_or(""),
        )
        .await?;
    let first = chunks.next().await.transpose()?;
    let encoder = HistoryEncoder { opened: false, key };
    let body = futures::stream::unfold(Some((encoder, first, chunks)), |state| async move {
        let (mut encoder, pending, mut chunks) = state?;
        let chunk = match pending {
            Some(chunk) => Some(Ok(chunk)),
            None => chunks.next().await,
        };
        Some(match chunk {
            Some(Ok(HistoryChunk::Points(points))) => {
                let bytes = encoder.points(points);
                (bytes, Some((encoder, None, chunks)))
            }
            Some(Ok(HistoryChunk::NextPageToken(token))) => (encoder.end(Some(token)), None),
            Some(Err(error)) => (Err(error.into()), None),
            None => (encoder.end(None), None),
        })
    });
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Writes a history answer piece by piece, as `HistoryResponse` would serialize it whole.
struct HistoryEncoder {
    /// `{"metrics":[` written
    opened: bool,
    /// every point's key
    key: String,
}

impl HistoryEncoder {
    fn points(&mut self, points: Vec<HistoryPoint>) -> Result<Bytes, BoxError> {
        let mut out = Vec::with_capacity(points.len() * 96);
        for point in &points {
            out.extend_from_slice(if self.opened { b"," } else { b"{\"metrics\":[" });
            self.opened = true;
            let metric = Metric {
                key: self.key.as_str(),
                value: point.value,
                timestamp: point.timestamp,
                step: point.step,
                dataset_name: point.dataset_name.as_deref(),
                dataset_digest: point.dataset_digest.as_deref(),
                model_id: point.model_id.as_deref(),
                run_id: None,
            };
            serde_json::to_writer(&mut out, &metric)?;
        }
        Ok(out.into())
    }

    fn end(&self, next_page_token: Option<String>) -> Result<Bytes, BoxError> {
        let token = next_page_token
            .map(|token| serde_json::to_string(&token))
            .transpose()?;
        let close = match (self.opened, token) {
            (true, Some(token)) => format!("],\"next_page_token\":{token}}}"),
            (true, None) => "]}".to_owned(),
            (false, Some(token)) => format!("{{\"next_page_token\":{token}}}"),
            (false, None) => "{}".to_owned(),
        };
        Ok(Bytes::from(close))
    }
}

#[derive(Deserialize)]
struct BulkIntervalRequest {
    #[serde(default, deserialize_with = "lenient::list")]
    run_ids: Vec<String>,
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    start_step: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    end_step: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
}

async fn get_history_bulk_interval(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<BulkIntervalRequest>,
) -> ApiResult<Json<HistoryResponse>> {
    if request.run_ids.is_empty() {
        return Err(ApiError::missing("run_ids"));
    }
    let key = request.metric_key.required("metric_key")?;
    let points = state
        .store
        .sample_metric_history(
            &request.run_ids,
            &key,
            request.start_step,
            request.end_step,
            request.max_results.unwrap_or(MAX_BULK_POINTS),
        )
        .await?;
    Ok(Json(HistoryResponse {
        metrics: points.into_iter().map(Into::into).collect(),
        next_page_token: None,
    }))
}
