//! `POST /graphql`: the seven fields of MLflow's GraphQL schema its web UI uses
//! (`mlflowGetExperiment`, `mlflowGetRun`, `mlflowSearchRuns`, `mlflowGetMetricHistoryBulkInterval`,
//! `mlflowListArtifacts`, `mlflowSearchModelVersions`, `mlflowSearchDatasets`).
//!
//! MLflow's schema mirrors its REST messages field for field in lowerCamel, so each root field
//! is answered by the REST endpoint it mirrors (dispatched in-process through the API router,
//! with its validation and error codes), and the answer is cut down to the query's selection.
//! A small executor for that subset (selections, aliases, arguments, variables, `__typename`,
//! directives ignored; no fragments or introspection) keeps the build free of a GraphQL crate
//! and its schema macros; the UI's operations need nothing more.
//!
//! Answers follow MLflow's server: `{"data": …, "errors": [message, …] | null}`, int64 fields
//! as strings (its `LongString` scalar), NaN metric values as null, absent lists as `[]`.

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, header};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use super::auth::{Caller, WORKSPACE_HEADER};
use super::endpoints::Routes;
use super::request::to_snake_case;

mod parser;

use parser::{Field, parse_operation};

/// Largest REST answer a resolver reads (a page of 1000 runs with their data).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// `/graphql`, answered by dispatching to `api` (the REST routes).
pub fn routes(api: Router) -> Routes<()> {
    Routes::new().route(
        "/graphql",
        post(
            move |caller: Option<Extension<Caller>>,
                  headers: HeaderMap,
                  Json(request): Json<Value>| {
                let api = Dispatch {
                    router: api.clone(),
                    caller: caller.map(|Extension(caller)| caller),
                    workspace: headers.get(WORKSPACE_HEADER).cloned(),
                };
                execute(api, request)
            },
        )
        .get(|| async {
            Json(json!({"data": null, "errors": ["GraphQL queries are sent with POST."]}))
        }),
    )
}

/// The REST routes, called as the GraphQL request's caller in its workspace.
struct Dispatch {
    router: Router,
    /// Already authenticated (`--auth kubernetes`): the fields are authorized, not re-authenticated.
    caller: Option<Caller>,
    workspace: Option<HeaderValue>,
}

async fn execute(api: Dispatch, request: Value) -> Json<Value> {
    let query = request.get("query").and_then(Value::as_str).unwrap_or("");
    let operation_name = request.get("operationName").and_then(Value::as_str);
    let variables = request
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let selections = match parse_operation(query, operation_name) {
        Ok(selections) => selections,
        Err(message) => return Json(json!({"data": null, "errors": [message]})),
    };
    let mut data = Map::new();
    let mut errors = Vec::new();
    for field in &selections {
        let answer = if field.name == "__typename" {
            Ok(Value::String("Query".into()))
        } else {
            resolve_root(&api, field, &variables).await
        };
        match answer {
            Ok(value) => {
                data.insert(field.response_key().to_owned(), value);
            }
            Err(message) => {
                data.insert(field.response_key().to_owned(), Value::Null);
                errors.push(Value::String(message));
            }
        }
    }
    let errors = if errors.is_empty() {
        Value::Null
    } else {
        Value::Array(errors)
    };
    Json(json!({"data": data, "errors": errors}))
}

/// How a root field maps onto the REST API.
struct RootField {
    method: Method,
    path: &'static str,
    type_name: &'static str,
}

fn root_field(name: &str) -> Option<RootField> {
    let (method, path, type_name) = match name {
        "mlflowGetExperiment" => (
            Method::GET,
            "/api/2.0/mlflow/experiments/get",
            "MlflowGetExperimentResponse",
        ),
        "mlflowGetRun" => (
            Method::GET,
            "/api/2.0/mlflow/runs/get",
            "MlflowGetRunResponse",
        ),
        "mlflowSearchRuns" => (
            Method::POST,
            "/api/2.0/mlflow/runs/search",
            "MlflowSearchRunsResponse",
        ),
        "mlflowGetMetricHistoryBulkInterval" => (
            Method::GET,
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
            "MlflowGetMetricHistoryBulkIntervalResponse",
        ),
        "mlflowListArtifacts" => (
            Method::GET,
            "/api/2.0/mlflow/artifacts/list",
            "MlflowListArtifactsResponse",
        ),
        "mlflowSearchModelVersions" => (
            Method::GET,
            "/api/2.0/mlflow/model-versions/search",
            "MlflowSearchModelVersionsResponse",
        ),
        "mlflowSearchDatasets" => (
            Method::POST,
            "/ajax-api/2.0/mlflow/experiments/search-datasets",
            "MlflowSearchDatasetsResponse",
        ),
        _ => return None,
    };
    Some(RootField {
        method,
        path,
        type_name,
    })
}

async fn resolve_root(
    api: &Dispatch,
    field: &Field,
    variables: &Map<String, Value>,
) -> Result<Value, String> {
    let root = root_field(&field.name)
        .ok_or_else(|| format!("Cannot query field '{}' on type 'Query'.", field.name))?;
    let input = match field.arguments.iter().find(|(name, _)| name == "input") {
        Some((_, value)) => value.resolve(variables)?,
        None => Value::Object(Map::new()),
    };
    let mut answer = call(api, root.method, root.path, &input).await?;
    // MLflow's run type adds two fields the REST run lacks: its experiment and the model
    // versions registered from it.
    if matches!(
        root.type_name,
        "MlflowGetRunResponse" | "MlflowSearchRunsResponse"
    ) {
        let wanted = RunExtras::wanted(field);
        if let Some(run) = answer.get_mut("run") {
            wanted.add_to(api, run).await?;
        }
        if let Some(Value::Array(runs)) = answer.get_mut("runs") {
            for run in runs {
                wanted.add_to(api, run).await?;
            }
        }
    }
    Ok(project(&answer, root.type_name, &field.selections))
}

/// Which of the run type's extra fields a query selects.
struct RunExtras {
    experiment: bool,
    model_versions: bool,
}

impl RunExtras {
    fn wanted(root: &Field) -> Self {
        let runs = root
            .selections
            .iter()
            .filter(|field| field.name == "run" || field.name == "runs");
        let mut wanted = RunExtras {
            experiment: false,
            model_versions: false,
        };
        for run in runs {
            for field in &run.selections {
                wanted.experiment |= field.name == "experiment";
                wanted.model_versions |= field.name == "modelVersions";
            }
        }
        wanted
    }

    async fn add_to(&self, api: &Dispatch, run: &mut Value) -> Result<(), String> {
        let experiment_id = run["info"]["experiment_id"].as_str().map(str::to_owned);
        let run_id = run["info"]["run_id"].as_str().map(str::to_owned);
        if let (true, Some(experiment_id)) = (self.experiment, experiment_id) {
            let answer = call(
                api,
                Method::GET,
                "/api/2.0/mlflow/experiments/get",
                &json!({"experiment_id": experiment_id}),
            )
            .await?;
            run["experiment"] = answer["experiment"].clone();
        }
        if let (true, Some(run_id)) = (self.model_versions, run_id) {
            let answer = call(
                api,
                Method::GET,
                "/api/2.0/mlflow/model-versions/search",
                &json!({"filter": format!("run_id='{run_id}'")}),
            )
            .await?;
            run["model_versions"] = answer
                .get("model_versions")
                .cloned()
                .unwrap_or_else(|| json!([]));
        }
        Ok(())
    }
}

/// One in-process REST call: `input` as the query string (GET) or the JSON body; an error
/// answer becomes its message.
async fn call(api: &Dispatch, method: Method, path: &str, input: &Value) -> Result<Value, String> {
    let request = if method == Method::GET {
        Request::get(format!("{path}?{}", query_string(input))).body(Body::empty())
    } else {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(input.to_string()))
    }
    .map_err(|error| format!("Invalid request for {path}: {error}"))?;
    let mut request = request;
    if let Some(caller) = &api.caller {
        request.extensions_mut().insert(caller.clone());
    }
    if let Some(workspace) = &api.workspace {
        request
            .headers_mut()
            .insert(WORKSPACE_HEADER, workspace.clone());
    }
    let response = api
        .router
        .clone()
        .oneshot(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let bytes = to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|error| format!("Reading the answer of {path}: {error}"))?;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        Ok(answer)
    } else {
        Err(answer
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{path} answered {status}")))
    }
}

/// `key=value&…` of an input object; lists repeat their key, as MLflow's GET requests do.
fn query_string(input: &Value) -> String {
    let mut pairs = url::form_urlencoded::Serializer::new(String::new());
    if let Value::Object(fields) = input {
        for (key, value) in fields {
            let items = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                match item {
                    Value::Null => {}
                    Value::String(text) => {
                        pairs.append_pair(key, text);
                    }
                    other => {
                        pairs.append_pair(key, &other.to_string());
                    }
                }
            }
        }
    }
    pairs.finish()
}

/// The object type of a field holding objects (or lists of them); `None` for scalars.
fn object_type(parent: &str, field: &str) -> Option<&'static str> {
    Some(match (parent, field) {
        (_, "apiError") => "ApiError",
        ("ApiError", "errorDetails") => "ErrorDetail",
        ("MlflowGetExperimentResponse", "experiment") | ("MlflowRunExtension", "experiment") => {
            "MlflowExperiment"
        }
        ("MlflowExperiment", "tags") => "MlflowExperimentTag",
        ("MlflowGetRunResponse", "run") | ("MlflowSearchRunsResponse", "runs") => {
            "MlflowRunExtension"
        }
        ("MlflowRunExtension", "info") => "MlflowRunInfo",
        ("MlflowRunExtension", "data") => "MlflowRunData",
        ("MlflowRunExtension", "inputs") => "MlflowRunInputs",
        ("MlflowRunExtension", "outputs") => "MlflowRunOutputs",
        ("MlflowRunExtension", "modelVersions")
        | ("MlflowSearchModelVersionsResponse", "modelVersions") => "MlflowModelVersion",
        ("MlflowRunData", "metrics") => "MlflowMetricExtension",
        ("MlflowRunData", "params") => "MlflowParam",
        ("MlflowRunData", "tags") => "MlflowRunTag",
        ("MlflowRunInputs", "datasetInputs") => "MlflowDatasetInput",
        ("MlflowRunInputs", "modelInputs") => "MlflowModelInput",
        ("MlflowDatasetInput", "tags") => "MlflowInputTag",
        ("MlflowDatasetInput", "dataset") => "MlflowDataset",
        ("MlflowRunOutputs", "modelOutputs") => "MlflowModelOutput",
        ("MlflowModelVersion", "tags") => "MlflowModelVersionTag",
        ("MlflowModelVersion", "modelParams") => "MlflowModelParam",
        ("MlflowModelVersion", "modelMetrics") => "MlflowModelMetric",
        ("MlflowModelVersion", "deploymentJobState") => "MlflowModelVersionDeploymentJobState",
        ("MlflowGetMetricHistoryBulkIntervalResponse", "metrics") => "MlflowMetricWithRunId",
        ("MlflowListArtifactsResponse", "files") => "MlflowFileInfo",
        ("MlflowSearchDatasetsResponse", "datasetSummaries") => "MlflowDatasetSummary",
        _ => return None,
    })
}

/// List-typed fields: absent from a REST answer (proto3 drops empty lists) they are `[]`.
fn is_list(field: &str) -> bool {
    matches!(
        field,
        "tags"
            | "metrics"
            | "params"
            | "runs"
            | "datasetInputs"
            | "modelInputs"
            | "modelOutputs"
            | "modelVersions"
            | "files"
            | "datasetSummaries"
            | "aliases"
            | "modelParams"
            | "modelMetrics"
            | "errorDetails"
    )
}

/// int64 fields, which MLflow's schema sends as strings (`LongString`).
fn is_long(field: &str) -> bool {
    matches!(
        field,
        "timestamp"
            | "step"
            | "creationTimestamp"
            | "lastUpdatedTimestamp"
            | "fileSize"
            | "startTime"
            | "endTime"
            | "lastUpdateTime"
            | "creationTime"
    )
}

/// The part of `value` (a REST object of type `type_name`) the selections ask for.
fn project(value: &Value, type_name: &str, selections: &[Field]) -> Value {
    let mut out = Map::new();
    for field in selections {
        let key = field.response_key().to_owned();
        if field.name == "__typename" {
            out.insert(key, Value::String(type_name.to_owned()));
            continue;
        }
        let source = value
            .get(to_snake_case(&field.name))
            .unwrap_or(&Value::Null);
        let projected = match object_type(type_name, &field.name) {
            // The error object exists only on failures, which MLflow reports in `errors`.
            Some("ApiError") => Value::Null,
            Some(child) => match source {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|item| project(item, child, &field.selections))
                        .collect(),
                ),
                Value::Null if is_list(&field.name) => Value::Array(Vec::new()),
                // An absent message reads as an empty one in MLflow (protobuf defaults).
                Value::Null if type_name == "MlflowRunExtension" => {
                    project(&Value::Null, child, &field.selections)
                }
                Value::Null => Value::Null,
                object => project(object, child, &field.selections),
            },
            None => scalar(type_name, &field.name, source),
        };
        out.insert(key, projected);
    }
    Value::Object(out)
}

fn scalar(type_name: &str, field: &str, value: &Value) -> Value {
    match value {
        Value::Null if is_list(field) => Value::Array(Vec::new()),
        Value::Number(number) if is_long(field) => Value::String(number.to_string()),
        // NaN and infinities travel as strings in REST; GraphQL's Float cannot hold them.
        Value::String(_) if field == "value" && type_name.contains("Metric") => Value::Null,
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_keeps_the_selection_in_mlflow_graphql_types() {
        let selections = parse_operation(
            "query Q { x { apiError { code } run { __typename info { runUuid startTime endTime } \
             data { metrics { key value step } params { key } } inputs { datasetInputs { tags { key } } } } } }",
            None,
        )
        .unwrap();
        let run_field = &selections[0];
        let answer = json!({"run": {
            "info": {"run_uuid": "r", "start_time": 17, "run_name": "n"},
            "data": {"metrics": [{"key": "m", "value": "NaN", "step": 3, "timestamp": 1}],
                     "params": [{"key": "p", "value": "NaN"}]},
        }});
        assert_eq!(
            project(&answer, "MlflowGetRunResponse", &run_field.selections),
            json!({
                "apiError": null,
                "run": {
                    "__typename": "MlflowRunExtension",
                    "info": {"runUuid": "r", "startTime": "17", "endTime": null},
                    "data": {"metrics": [{"key": "m", "value": null, "step": "3"}], "params": [{"key": "p"}]},
                    "inputs": {"datasetInputs": []},
                },
            })
        );
    }

    #[test]
    fn get_inputs_become_query_strings_with_repeated_keys() {
        // lowerCamel keys stay: the REST side reads them as MLflow does.
        let input = json!({"runIds": ["a", "b"], "metricKey": "loss", "maxResults": 320});
        assert_eq!(
            query_string(&input),
            "maxResults=320&metricKey=loss&runIds=a&runIds=b"
        );
    }
}
