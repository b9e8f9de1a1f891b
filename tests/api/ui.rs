//! What MLflow's web UI calls besides the REST API, with MLflow 3.17's answers: the chart
//! sampling, the dataset filter, the model version's files, GraphQL, the GenAI probes
//! answered "off", and the bundle itself (with and without a static prefix).

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use ferroflow::api::{self, AppState, ServerConfig};
use ferroflow::artifacts::ArtifactStore;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{TestServer, create_run, start};

on_both!(
    bulk_interval_samples_points_as_mlflow,
    search_datasets_summarizes_run_inputs,
    model_version_artifact_serves_the_models_files,
    graphql_answers_the_uis_operations,
    genai_probes_answer_disabled,
);

const AJAX: &str = "/ajax-api/2.0/mlflow";

async fn log_points(server: &TestServer, run_id: &str, points: &[(i64, i64, f64)]) {
    let metrics: Vec<Value> = points
        .iter()
        .map(|(step, timestamp, value)| {
            json!({"key": "loss", "value": value, "timestamp": timestamp, "step": step})
        })
        .collect();
    server.log_metrics(run_id, Value::Array(metrics)).await;
}

/// A new registered model with version 1 made from the run's `model` folder; its name.
async fn register_version(server: &TestServer, experiment_id: &str, run_id: &str) -> String {
    let name = super::uuid_name();
    let (status, body) = server
        .post(
            "/api/2.0/mlflow/registered-models/create",
            json!({"name": name}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post(
            "/api/2.0/mlflow/model-versions/create",
            json!({"name": name, "run_id": run_id,
                   "source": format!("mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    name
}

fn steps_and_timestamps(answer: &Value) -> Vec<(i64, i64)> {
    answer["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["step"].as_i64().unwrap(),
                m["timestamp"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The expected answers were read from `mlflow server` 3.17.2 for the same points.
async fn bulk_interval_samples_points_as_mlflow(server: TestServer) {
    let (experiment_id, ten_steps) = create_run(&server).await;
    log_points(
        &server,
        &ten_steps,
        &(0..10).map(|i| (i, 100 + i, i as f64)).collect::<Vec<_>>(),
    )
    .await;
    let (_, one_step) = server
        .post(
            "/api/2.0/mlflow/runs/create",
            json!({"experiment_id": experiment_id}),
        )
        .await;
    let one_step = one_step["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Five values at step 0: sampling is by point, not by distinct step.
    log_points(
        &server,
        &one_step,
        &(0..5).map(|i| (0, 200 + i, i as f64)).collect::<Vec<_>>(),
    )
    .await;
    let url = |max_results: u32, extra: &str| {
        format!(
            "{AJAX}/metrics/get-history-bulk-interval?run_ids={one_step}&run_ids={ten_steps}&metric_key=loss&max_results={max_results}{extra}"
        )
    };
    let (status, answer) = server.get(&url(3, "")).await;
    assert_eq!(status, 200, "{answer}");
    // Tiles of 2+2+1 and 4+3+3 points; each tile's first point, the last point replacing the final one.
    assert_eq!(
        steps_and_timestamps(&answer),
        vec![(0, 200), (0, 202), (0, 204), (0, 100), (4, 104), (9, 109)]
    );
    assert_eq!(
        answer["metrics"][0]["run_id"],
        json!(one_step),
        "run order as asked"
    );
    assert_eq!(
        answer["metrics"][5],
        json!({"key": "loss", "value": 9.0, "timestamp": 109, "step": 9, "run_id": ten_steps})
    );
    let (_, answer) = server.get(&url(1, "")).await;
    assert_eq!(steps_and_timestamps(&answer), vec![(0, 204), (9, 109)]);
    let (_, answer) = server.get(&url(4, "&start_step=2&end_step=6")).await;
    assert_eq!(
        steps_and_timestamps(&answer),
        vec![(2, 102), (4, 104), (5, 105), (6, 106)]
    );
    for (query, message) in [
        (
            "metric_key=loss".to_owned(),
            "Missing value for required parameter 'run_ids'.",
        ),
        (
            format!("run_ids={one_step}&metric_key=loss&max_results=2501"),
            "max_results must be between 1 and 2500.",
        ),
        (
            format!("run_ids={one_step}&metric_key=loss&start_step=1"),
            "If either start step or end step are specified, both must be specified.",
        ),
    ] {
        let (status, body) = server
            .get(&format!("{AJAX}/metrics/get-history-bulk-interval?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
        assert!(
            body["message"].as_str().unwrap().starts_with(message),
            "{body}"
        );
    }
}

async fn search_datasets_summarizes_run_inputs(server: TestServer) {
    let (experiment_id, run_id) = create_run(&server).await;
    let (status, empty) = server
        .post(
            &format!("{AJAX}/experiments/search-datasets"),
            json!({"experiment_ids": [experiment_id]}),
        )
        .await;
    assert_eq!((status, empty), (200, json!({})));
    let dataset =
        |name: &str| json!({"name": name, "digest": "d1", "source_type": "local", "source": "{}"});
    let (status, body) = server
        .post(
            "/api/2.0/mlflow/runs/log-inputs",
            json!({"run_id": run_id, "datasets": [
                {"dataset": dataset("train"), "tags": [{"key": "mlflow.data.context", "value": "training"}]},
                {"dataset": dataset("plain"), "tags": []},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = server
        .post(
            &format!("{AJAX}/experiments/search-datasets"),
            json!({"experiment_ids": [experiment_id]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"dataset_summaries": [
            {"experiment_id": experiment_id, "name": "plain", "digest": "d1"},
            {"experiment_id": experiment_id, "name": "train", "digest": "d1", "context": "training"},
        ]})
    );
    let (status, body) = server
        .post(
            &format!("{AJAX}/experiments/search-datasets"),
            json!({"experiment_ids": []}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
}

async fn model_version_artifact_serves_the_models_files(server: TestServer) {
    let (experiment_id, run_id) = create_run(&server).await;
    let upload = server
        .client
        .put(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/model/MLmodel",
            server.base
        ))
        .body("flavors:\n  sklearn: {}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let name = register_version(&server, &experiment_id, &run_id).await;
    let response = server
        .client
        .get(format!(
            "{}/model-versions/get-artifact?path=MLmodel&name={name}&version=1",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "flavors:\n  sklearn: {}\n");
    let (status, body) = server
        .get(&format!(
            "/model-versions/get-artifact?path=absent&name={name}&version=1"
        ))
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let (status, body) = server
        .get(&format!(
            "/model-versions/get-artifact?path=../../x&name={name}&version=1"
        ))
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn graphql(server: &TestServer, query: &str, variables: Value) -> Value {
    let (status, answer) = server
        .post("/graphql", json!({"query": query, "variables": variables}))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The UI's own operations (the bundle's `GetRun`, `SearchRuns`, `MlflowGetExperimentQuery`,
/// `GetMetricHistoryBulkInterval`), answered in MLflow's GraphQL shapes.
async fn graphql_answers_the_uis_operations(server: TestServer) {
    let (experiment_id, run_id) = create_run(&server).await;
    let (status, body) = server
        .post(
            "/api/2.0/mlflow/runs/log-batch",
            json!({"run_id": run_id, "metrics": [
                {"key": "loss", "value": 0.5, "timestamp": 10, "step": 1},
                {"key": "loss", "value": "NaN", "timestamp": 20, "step": 2},
            ], "params": [{"key": "p", "value": "NaN"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let name = register_version(&server, &experiment_id, &run_id).await;
    let get_run = r#"query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {
        mlflowGetRun(input: $data) {
          apiError { helpUrl code message }
          run {
            info { runName status runUuid experimentId endTime startTime }
            experiment { experimentId name tags { key value } lastUpdateTime }
            modelVersions { status version name }
            data { metrics { key value step timestamp } params { key value } }
            inputs { datasetInputs { dataset { name } } modelInputs { modelId } }
            outputs { modelOutputs { modelId step } }
          }
        }
      }"#;
    let answer = graphql(&server, get_run, json!({"data": {"runId": run_id}})).await;
    assert_eq!(answer["errors"], Value::Null, "{answer}");
    let run = &answer["data"]["mlflowGetRun"]["run"];
    assert_eq!(answer["data"]["mlflowGetRun"]["apiError"], Value::Null);
    assert_eq!(run["info"]["runUuid"], json!(run_id));
    assert_eq!(run["info"]["status"], "RUNNING");
    assert_eq!(run["info"]["startTime"], "1700000000000", "LongString");
    assert_eq!(run["experiment"]["experimentId"], json!(experiment_id));
    assert!(run["experiment"]["lastUpdateTime"].is_string());
    assert_eq!(
        run["modelVersions"],
        json!([{"status": "READY", "version": "1", "name": name}])
    );
    assert_eq!(
        run["data"]["metrics"],
        json!([{"key": "loss", "value": null, "step": "2", "timestamp": "20"}]),
        "the latest point; NaN as null"
    );
    assert_eq!(run["data"]["params"], json!([{"key": "p", "value": "NaN"}]));
    assert_eq!(
        run["inputs"],
        json!({"datasetInputs": [], "modelInputs": []})
    );
    assert_eq!(run["outputs"], json!({"modelOutputs": []}));

    let search = r#"mutation SearchRuns($data: MlflowSearchRunsInput!) {
        mlflowSearchRuns(input: $data) { apiError { code } runs { info { runUuid } } nextPageToken }
      }"#;
    let answer = graphql(
        &server,
        search,
        json!({"data": {"experimentIds": [experiment_id], "maxResults": 10, "runViewType": "ACTIVE_ONLY"}}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"data": {"mlflowSearchRuns": {"apiError": null, "runs": [{"info": {"runUuid": run_id}}], "nextPageToken": null}}, "errors": null})
    );

    let bulk = r#"query GetMetricHistoryBulkInterval($data: MlflowGetMetricHistoryBulkIntervalInput!) {
        mlflowGetMetricHistoryBulkInterval(input: $data) { __typename metrics { timestamp step runId key value } apiError { code message } }
      }"#;
    let answer = graphql(
        &server,
        bulk,
        json!({"data": {"runIds": [run_id], "metricKey": "loss", "maxResults": 320}}),
    )
    .await;
    assert_eq!(
        answer["data"]["mlflowGetMetricHistoryBulkInterval"],
        json!({"__typename": "MlflowGetMetricHistoryBulkIntervalResponse",
               "metrics": [{"timestamp": "10", "step": "1", "runId": run_id, "key": "loss", "value": 0.5},
                           {"timestamp": "20", "step": "2", "runId": run_id, "key": "loss", "value": null}],
               "apiError": null})
    );

    // Errors as MLflow's server reports them: the field null, the message in `errors`.
    let answer = graphql(
        &server,
        "query { mlflowGetExperiment(input: {experimentId: \"987654\"}) { experiment { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"data": {"mlflowGetExperiment": null}, "errors": ["No Experiment with id=987654 exists"]})
    );
    let answer = graphql(&server, "query { mlflowGetExperiment(", json!({})).await;
    assert_eq!(answer["data"], Value::Null);
    assert!(
        answer["errors"][0]
            .as_str()
            .unwrap()
            .contains("Syntax Error")
    );
}

async fn genai_probes_answer_disabled(server: TestServer) {
    let (status, telemetry) = server.get("/ajax-api/3.0/mlflow/ui-telemetry").await;
    assert_eq!(
        (status, telemetry),
        (
            200,
            json!({"disable_ui_telemetry": true, "disable_ui_events": [], "ui_rollout_percentage": 0})
        )
    );
    let (status, config) = server.get("/ajax-api/3.0/mlflow/assistant/config").await;
    assert_eq!(
        (status, config),
        (
            200,
            json!({"providers": {}, "projects": {}, "remote_access_allowed": false})
        )
    );
    let (status, info) = server.get("/ajax-api/3.0/mlflow/server-info").await;
    assert_eq!((status, &info["store_type"]), (200, &json!("SqlStore")));
    let (status, metrics) = server
        .post(
            "/ajax-api/3.0/mlflow/traces/metrics",
            json!({"experiment_ids": ["0"], "metric_name": "trace_count"}),
        )
        .await;
    assert_eq!((status, metrics), (200, json!({"data_points": []})));
    let (status, _) = server.get(&format!("{AJAX}/users/current")).await;
    assert_eq!(status, 404, "no users without auth, as MLflow");
}

/// The bundle, in-process: `/` and `/static-files/…` with MLflow's headers, a static prefix,
/// and the page saying how to get the bundle when there is none.
#[tokio::test]
async fn the_bundle_is_served_with_mlflows_headers_and_prefix() {
    let test_store = crate::common::sqlite_store().await;
    let ui = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ui.path().join("static/js")).unwrap();
    std::fs::write(ui.path().join("index.html"), "<html>ui</html>").unwrap();
    std::fs::write(ui.path().join("static/js/main.abc.js"), "let x;").unwrap();
    let router = |ui_dir: Option<std::path::PathBuf>, prefix: Option<&str>| {
        let state = AppState {
            store: test_store.store.clone(),
            artifacts: ArtifactStore::open(test_store.artifact_root().to_str().unwrap()).unwrap(),
            config: Arc::new(ServerConfig {
                default_artifact_root: "mlflow-artifacts:".into(),
                ui_dir,
            }),
            auth: Default::default(),
        };
        api::ui::with_static_prefix(api::router(state), prefix)
    };
    let get = |router: axum::Router, path: &str| {
        let request = Request::get(path).body(Body::empty()).unwrap();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let served = router(Some(ui.path().to_owned()), None);
    let (status, headers, body) = get(served.clone(), "/").await;
    assert_eq!((status, body.as_str()), (200, "<html>ui</html>"));
    assert_eq!(headers["cache-control"], "no-cache");
    let (status, headers, body) = get(served.clone(), "/static-files/static/js/main.abc.js").await;
    assert_eq!((status, body.as_str()), (200, "let x;"));
    assert_eq!(headers["cache-control"], "public, max-age=2419200");
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    for hostile in [
        "/static-files/../index.html",
        "/static-files/%2e%2e/x",
        "/static-files/absent.js",
    ] {
        assert_eq!(get(served.clone(), hostile).await.0, 404, "{hostile}");
    }

    let prefixed = router(Some(ui.path().to_owned()), Some("/mlflow"));
    let (status, headers, _) = get(prefixed.clone(), "/mlflow").await;
    assert_eq!(
        (status, &headers["location"]),
        (308, &"/mlflow/".parse().unwrap())
    );
    assert_eq!(get(prefixed.clone(), "/mlflow/").await.2, "<html>ui</html>");
    assert_eq!(
        get(
            prefixed.clone(),
            "/mlflow/static-files/static/js/main.abc.js"
        )
        .await
        .0,
        200
    );
    assert_eq!(get(prefixed.clone(), "/mlflow/health").await.0, 200);
    assert_eq!(
        get(prefixed.clone(), "/mlflow/ajax-api/3.0/mlflow/server-info")
            .await
            .0,
        200
    );
    assert_eq!(get(prefixed, "/").await.0, 404);

    let (status, _, body) = get(router(None, None), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("make ui"), "{body}");
}
