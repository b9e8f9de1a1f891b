//! The HTTP layer against a real server on a loopback port, spoken to as MLflow clients do.

// Test helpers panic on unexpected failures: that is how a test fails.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod artifacts;
mod metrics;
mod process;
mod timeouts;
mod traces;
mod workspaces;

use artifacts::{
    artifacts_round_trip_and_list_like_mlflow, hostile_paths_are_refused_and_change_nothing,
    long_names_are_stored_up_to_the_limit_and_refused_beyond,
    missing_artifacts_are_named_as_the_client_sent_them,
    recursive_delete_and_listings_never_follow_links,
};
use metrics::{
    metrics_and_readiness_follow_the_store_liveness_does_not,
    metrics_move_with_requests_latency_and_artifact_bytes,
};
use workspaces::{artifacts_stay_in_their_workspace, the_workspace_header_scopes_every_object};

use std::sync::Arc;

use ferroflow::api::{self, AppState, ServerConfig};
use ferroflow::artifacts::ArtifactStore;
use ferroflow::server::{self, ConnectionLimits};
use ferroflow::store::Store;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running server and the means to stop it.
struct TestServer {
    base: String,
    artifact_root: std::path::PathBuf,
    client: reqwest::Client,
    /// The store the server serves, for tests that change it behind the API.
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    /// What keeps the store alive (a test store, a private Postgres).
    _store: Box<dyn std::any::Any + Send + Sync>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(test_store: common::TestStore) -> TestServer {
    start_with(test_store, ConnectionLimits::default()).await
}

async fn start_with(test_store: common::TestStore, limits: ConnectionLimits) -> TestServer {
    let artifact_root = test_store.artifact_root();
    let store = test_store.store.clone();
    serve_on(store, artifact_root, Box::new(test_store), limits).await
}

/// Serves `store` on a loopback port with the default connection limits; `keep` lives as long
/// as the server.
async fn start_on(
    store: Store,
    artifact_root: std::path::PathBuf,
    keep: Box<dyn std::any::Any + Send + Sync>,
) -> TestServer {
    serve_on(store, artifact_root, keep, ConnectionLimits::default()).await
}

async fn serve_on(
    store: Store,
    artifact_root: std::path::PathBuf,
    keep: Box<dyn std::any::Any + Send + Sync>,
    limits: ConnectionLimits,
) -> TestServer {
    let artifacts = ArtifactStore::open(artifact_root.to_str().unwrap()).unwrap();
    let state = AppState {
        store: store.clone(),
        artifacts,
        config: Arc::new(ServerConfig {
            default_artifact_root: "mlflow-artifacts:".into(),
            ui_dir: None,
        }),
        auth: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, api::router(state), limits, async {
        let _ = stopped.await;
    }));
    TestServer {
        base: format!("http://{address}"),
        artifact_root,
        client: reqwest::Client::new(),
        store,
        stop: Some(stop),
        _store: keep,
    }
}

impl TestServer {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Logs `metrics` (a JSON list of points) to `run_id` in one log-batch, which must succeed.
    async fn log_metrics(&self, run_id: &str, metrics: Value) {
        let (status, body) = self
            .post(
                "/api/2.0/mlflow/runs/log-batch",
                json!({"run_id": run_id, "metrics": metrics}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The answer's bytes, for answers that must stay byte-identical.
    async fn get_text(&self, path_and_query: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path_and_query).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test]
            async fn $name() { super::$name(super::start(crate::common::sqlite_store().await).await).await; }
        )* }
        mod postgres { $(
            #[tokio::test]
            async fn $name() {
                if let Some(store) = crate::common::postgres_store().await {
                    super::$name(super::start(store).await).await;
                }
            }
        )* }
    };
}

on_both!(
    wire_format_matches_mlflow,
    errors_carry_mlflow_codes_and_statuses,
    camel_case_and_run_uuid_are_accepted,
    get_searches_take_repeated_keys,
    special_floats_travel_as_strings,
    history_pages_are_written_byte_for_byte,
    health_and_version_answer,
    hostile_paths_are_refused_and_change_nothing,
    artifacts_round_trip_and_list_like_mlflow,
    recursive_delete_and_listings_never_follow_links,
    long_names_are_stored_up_to_the_limit_and_refused_beyond,
    missing_artifacts_are_named_as_the_client_sent_them,
    metrics_move_with_requests_latency_and_artifact_bytes,
    metrics_and_readiness_follow_the_store_liveness_does_not,
    the_workspace_header_scopes_every_object,
    artifacts_stay_in_their_workspace,
);

async fn create_run(server: &TestServer) -> (String, String) {
    let (_, created) = server
        .post(
            "/api/2.0/mlflow/experiments/create",
            json!({"name": uuid_name()}),
        )
        .await;
    let experiment_id = created["experiment_id"].as_str().unwrap().to_owned();
    let (status, run) = server
        .post(
            "/api/2.0/mlflow/runs/create",
            json!({"experiment_id": experiment_id, "start_time": 1700000000000_i64}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    (
        experiment_id,
        run["run"]["info"]["run_id"].as_str().unwrap().to_owned(),
    )
}

fn uuid_name() -> String {
    format!("exp-{}", uuid::Uuid::new_v4().simple())
}

async fn wire_format_matches_mlflow(server: TestServer) {
    let (experiment_id, run_id) = create_run(&server).await;
    let (status, body) = server
        .post("/api/2.0/mlflow/runs/log-metric", json!({"run_id": run_id, "key": "m", "value": 1.5, "timestamp": 1700000000001_i64, "step": 3}))
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (_, run) = server
        .get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"))
        .await;
    let info = &run["run"]["info"];
    assert!(info["start_time"].is_i64(), "int64 as JSON number: {info}");
    assert_eq!(info["run_uuid"], info["run_id"]);
    assert_eq!(info["experiment_id"], json!(experiment_id));
    assert_eq!(
        info["artifact_uri"],
        json!(format!(
            "mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
        ))
    );
    assert!(info.get("end_time").is_none(), "unset fields are omitted");
    assert_eq!(
        run["run"]["data"]["metrics"],
        json!([{"key": "m", "value": 1.5, "timestamp": 1700000000001_i64, "step": 3}])
    );
    let tags = run["run"]["data"]["tags"].as_array().unwrap();
    assert!(
        tags.iter().any(|t| t["key"] == "mlflow.runName"),
        "tags are a list of objects: {tags:?}"
    );
    let (_, empty) = server
        .post(
            "/api/2.0/mlflow/runs/search",
            json!({"experiment_ids": [experiment_id], "filter": "metrics.m > 100"}),
        )
        .await;
    assert_eq!(empty, json!({}), "an empty search answers {{}}");
    // The UI's prefix serves the same API.
    let (status, _) = server
        .get(&format!("/ajax-api/2.0/mlflow/runs/get?run_id={run_id}"))
        .await;
    assert_eq!(status, 200);
}

async fn errors_carry_mlflow_codes_and_statuses(server: TestServer) {
    let (status, body) = server
        .get("/api/2.0/mlflow/runs/get?run_id=0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let name = uuid_name();
    server
        .post("/api/2.0/mlflow/experiments/create", json!({"name": name}))
        .await;
    let (status, body) = server
        .post("/api/2.0/mlflow/experiments/create", json!({"name": name}))
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("RESOURCE_ALREADY_EXISTS"))
    );
    let (status, body) = server
        .post("/api/2.0/mlflow/experiments/create", json!({}))
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    assert!(body["message"].as_str().unwrap().contains("'name'"));
    let (status, body) = server.get("/api/2.0/mlflow/no/such/endpoint").await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("ENDPOINT_NOT_FOUND"))
    );
    let response = server
        .client
        .post(format!("{}/api/2.0/mlflow/runs/log-batch", server.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        400,
        "malformed JSON is the client's mistake, not a 5xx"
    );
    let (status, body) = server
        .get("/api/2.0/mlflow/experiments/get?experiment_id=abc")
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    let (_, run_id) = create_run(&server).await;
    let (status, body) = server
        .post(
            "/api/2.0/mlflow/runs/search",
            json!({"experiment_ids": ["0"], "filter": "metrics.acc >> 1"}),
        )
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE")),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/api/2.0/mlflow/runs/log-parameter",
            json!({"run_id": run_id, "key": "k".repeat(251), "value": "v"}),
        )
        .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
}

async fn camel_case_and_run_uuid_are_accepted(server: TestServer) {
    let (_, run_id) = create_run(&server).await;
    let (status, _) = server
        .post(
            "/api/2.0/mlflow/runs/log-parameter",
            json!({"runId": run_id, "key": "a", "value": "1"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post(
            "/api/2.0/mlflow/runs/set-tag",
            json!({"run_uuid": run_id, "key": "t", "value": "v", "unknown_field": 7}),
        )
        .await;
    assert_eq!(status, 200, "unknown fields are ignored");
    let (status, _) = server
        .post("/api/2.0/mlflow/runs/log-metric", json!({"run_id": run_id, "key": "m", "value": 2, "timestamp": "1700000000000", "step": "4"}))
        .await;
    assert_eq!(status, 200, "int64 may come as strings");
    let (_, run) = server
        .get(&format!("/api/2.0/mlflow/runs/get?run_uuid={run_id}"))
        .await;
    assert_eq!(
        run["run"]["data"]["params"],
        json!([{"key": "a", "value": "1"}])
    );
    assert_eq!(run["run"]["data"]["metrics"][0]["step"], json!(4));
    let (status, _) = server
        .post(
            "/api/2.0/mlflow/runs/set-tag",
            json!({"runId": run_id, "run_id": run_id, "key": "t", "value": "v"}),
        )
        .await;
    assert_eq!(status, 400, "one field named both ways is refused");
}

async fn get_searches_take_repeated_keys(server: TestServer) {
    let (experiment_id, run_id) = create_run(&server).await;
    let (_, other_run) = create_run(&server).await;
    for (run, value) in [(&run_id, 1.0), (&other_run, 2.0)] {
        server
            .post(
                "/api/2.0/mlflow/runs/log-metric",
                json!({"run_id": run, "key": "loss", "value": value, "timestamp": 1, "step": 0}),
            )
            .await;
    }
    let (status, body) = server
        .get(&format!(
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={run_id}&run_ids={other_run}&metric_key=loss&max_results=10"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut runs: Vec<&str> = body["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["run_id"].as_str().unwrap())
        .collect();
    runs.sort();
    let mut expected = vec![run_id.as_str(), other_run.as_str()];
    expected.sort();
    assert_eq!(runs, expected);
    let (status, body) = server
        .get(&format!("/api/2.0/mlflow/experiments/search?filter=name%20%3D%20%27nope%27&order_by=name&max_results=5&experiment_id={experiment_id}"))
        .await;
    assert_eq!((status, body), (200, json!({})));
}

async fn special_floats_travel_as_strings(server: TestServer) {
    let (_, run_id) = create_run(&server).await;
    let metrics = json!([
        {"key": "nan", "value": "NaN", "timestamp": 1, "step": 0},
        {"key": "pinf", "value": "Infinity", "timestamp": 1, "step": 0},
    ]);
    server.log_metrics(&run_id, metrics).await;
    let (_, history) = server
        .get(&format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=nan"
        ))
        .await;
    assert_eq!(history["metrics"][0]["value"], json!("NaN"));
    let (_, history) = server
        .get(&format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=pinf"
        ))
        .await;
    assert_eq!(
        history["metrics"][0]["value"],
        json!(f64::MAX),
        "infinity is clamped as in MLflow's SQL store"
    );
}

/// get-history is encoded straight from the store's points, not through an owned metric per
/// point: the bytes are MLflow's (field order, float format, special values, optional fields,
/// escapes) in one page and across a page token, as they were when each point was a `Metric`.
async fn history_pages_are_written_byte_for_byte(server: TestServer) {
    let (_, run_id) = create_run(&server).await;
    let key = "loss/train é";
    let metrics = json!([
        {"key": key, "value": "NaN", "timestamp": 5, "step": 0},
        {"key": key, "value": 0.0, "timestamp": 5, "step": 1},
        {"key": key, "value": "-Infinity", "timestamp": 5, "step": 2},
        {"key": key, "value": 0.1, "timestamp": 5, "step": 3, "model_id": "m-1",
         "dataset_name": "q\"uote\\ \n", "dataset_digest": ""},
        {"key": key, "value": 1e300, "timestamp": 3, "step": 4},
        {"key": key, "value": 123456789.125, "timestamp": 5, "step": 4, "dataset_digest": "d"},
    ]);
    server.log_metrics(&run_id, metrics).await;
    let path = format!(
        "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss%2Ftrain%20%C3%A9"
    );
    let point = |rest: &str| format!(r#"{{"key":"loss/train é",{rest}}}"#);
    let points = [
        point(r#""value":"NaN","timestamp":5,"step":0"#),
        point(r#""value":0.0,"timestamp":5,"step":1"#),
        point(r#""value":-1.7976931348623157e+308,"timestamp":5,"step":2"#),
        point(
            r#""value":0.1,"timestamp":5,"step":3,"dataset_name":"q\"uote\\ \n","model_id":"m-1""#,
        ),
        point(r#""value":1e+300,"timestamp":3,"step":4"#),
        point(r#""value":123456789.125,"timestamp":5,"step":4,"dataset_digest":"d""#),
    ];
    let (status, whole) = server.get_text(&path).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole, format!(r#"{{"metrics":[{}]}}"#, points.join(",")));
    let (_, first) = server.get_text(&format!("{path}&max_results=3")).await;
    let token = "eyJhZnRlciI6WzIsNSwtMS43OTc2OTMxMzQ4NjIzMTU3ZSszMDgsMF19";
    assert_eq!(
        first,
        format!(
            r#"{{"metrics":[{}],"next_page_token":"{token}"}}"#,
            points[..3].join(",")
        )
    );
    let (_, rest) = server
        .get_text(&format!("{path}&max_results=3&page_token={token}"))
        .await;
    assert_eq!(
        rest,
        format!(r#"{{"metrics":[{}]}}"#, points[3..].join(","))
    );
}

async fn health_and_version_answer(server: TestServer) {
    let health = server
        .client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.text().await.unwrap(), "OK");
    let version = server
        .client
        .get(format!("{}/version", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        version.text().await.unwrap(),
        ferroflow::api::MLFLOW_COMPATIBLE_VERSION
    );
}

// After `on_both!`, which the modules use.
mod concurrency;
mod hostile_input;
mod missing;
mod outage;
mod registry;
mod ui;
