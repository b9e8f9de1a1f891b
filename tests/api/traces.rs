//! OTLP trace export, end to end: `ferroflow server` as a process, pointed by the standard
//! environment at a small OTLP/HTTP receiver that decodes what arrives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::process::spawn_server;

/// The name of the SDK's exporting thread, as /proc shows it (cut to 15 bytes).
const EXPORTER_THREAD: &str = "OpenTelemetry.T";

/// Spans received so far, each with the `service.name` of its resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }
}

/// An OTLP/HTTP (protobuf) trace receiver on a loopback port; returns its base URL.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

async fn collect(State(received): State<Received>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = received.0.lock().unwrap();
    for resource_spans in request.resource_spans {
        let attributes = resource_spans.resource.map(|r| r.attributes);
        let service = string_attribute(attributes.as_deref().unwrap_or_default(), "service.name")
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            spans.extend(scope_spans.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    StatusCode::OK
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()
        .and_then(|AnyValue { value }| value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(value) => Some(value.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(value) => Some(*value),
        _ => None,
    }
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let comm = task.unwrap().path().join("comm");
            std::fs::read_to_string(comm).unwrap().trim().to_owned()
        })
        .collect()
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Requests show as server spans named by method and route template with their status, the
/// store calls they made as their children, under the service name `ferroflow-server`.
#[tokio::test]
async fn request_spans_reach_an_otlp_collector_with_routes_statuses_and_store_calls() {
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let (server, base) = spawn_server(
        dir.path(),
        &root,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // export every 50 ms instead of every 5 s: the test waits for the spans
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    assert!(
        thread_names(server.id().unwrap()).contains(&EXPORTER_THREAD.to_owned()),
        "the exporter runs"
    );
    let client = reqwest::Client::new();
    let api = format!("{base}/api/2.0/mlflow");
    let (status, created) = call(
        client
            .post(format!("{api}/experiments/create"))
            .json(&json!({"name": "traced"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["experiment_id"].as_str().unwrap().to_owned();
    let get = format!("{api}/experiments/get?experiment_id=");
    let (status, _) = call(client.get(format!("{get}{id}"))).await;
    assert_eq!(status, 200);
    let (status, _) = call(client.get(format!("{get}999999"))).await;
    assert_eq!(status, 404);

    let create_name = "POST /api/2.0/mlflow/experiments/create";
    let get_name = "GET /api/2.0/mlflow/experiments/get";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = received.spans();
        let named = |name: &str| spans.iter().filter(|(_, s)| s.name == name).count();
        if named(create_name) == 1 && named(get_name) == 2 && named("store.create_experiment") == 1
        {
            break spans;
        }
        let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans received within 30 s: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let find = |name: &'static str| spans.iter().filter(move |(_, s)| s.name == name);
    let (service, create) = find(create_name).next().unwrap();
    assert_eq!(service, "ferroflow-server");
    assert_eq!(
        string_attribute(&create.attributes, "http.route").as_deref(),
        Some("/api/2.0/mlflow/experiments/create")
    );
    assert_eq!(
        string_attribute(&create.attributes, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        int_attribute(&create.attributes, "http.response.status_code"),
        Some(200)
    );
    let mut get_statuses: Vec<i64> = find(get_name)
        .map(|(_, s)| int_attribute(&s.attributes, "http.response.status_code").unwrap())
        .collect();
    get_statuses.sort_unstable();
    assert_eq!(get_statuses, [200, 404]);

    let (_, store_call) = find("store.create_experiment").next().unwrap();
    assert_eq!(store_call.trace_id, create.trace_id, "same trace");
    assert_eq!(
        store_call.parent_span_id, create.span_id,
        "the store call is the request's child"
    );
}

/// With no endpoint configured, no exporter runs (nothing can be exported); with an endpoint
/// that never answers, the server still starts and answers at once.
#[tokio::test]
async fn no_endpoint_no_exporter_and_a_silent_collector_delays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let (server, base) = spawn_server(dir.path(), &root, &[]).await;
    let response = reqwest::get(format!(
        "{base}/api/2.0/mlflow/experiments/search?max_results=1"
    ))
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let threads = thread_names(server.id().unwrap());
    assert!(
        !threads.iter().any(|name| name == EXPORTER_THREAD),
        "{threads:?}"
    );
    drop(server);

    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/v1/traces", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = spawn_server(
        dir.path(),
        &root,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &silent_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    assert!(thread_names(server.id().unwrap()).contains(&EXPORTER_THREAD.to_owned()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..20 {
        let response = client
            .get(format!(
                "{base}/api/2.0/mlflow/experiments/search?max_results=1"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
}
