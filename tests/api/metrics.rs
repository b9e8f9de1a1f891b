//! `/metrics`, `/health` and `/ready`: the counters move with the requests served (and the
//! single-point writes' groups), and
//! readiness (not liveness) follows the store.

use super::{TestServer, create_run};

/// The value of the series `series` (name and labels exactly as exposed), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

async fn scrape(server: &TestServer) -> String {
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

const CREATED: &str = "ferroflow_http_requests_total{method=\"POST\",route=\"/api/2.0/mlflow/experiments/create\",status=\"200\"}";
const REFUSED: &str = "ferroflow_http_requests_total{method=\"POST\",route=\"/api/2.0/mlflow/experiments/create\",status=\"400\"}";
const UNMATCHED: &str =
    "ferroflow_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}";
const CREATE_TIMED: &str = "ferroflow_http_request_duration_seconds_count{method=\"POST\",route=\"/api/2.0/mlflow/experiments/create\"}";
const CREATE_INF: &str = "ferroflow_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/2.0/mlflow/experiments/create\",le=\"+Inf\"}";
const UPLOADS: &str = "ferroflow_http_requests_total{method=\"PUT\",route=\"/api/2.0/mlflow-artifacts/artifacts/{*path}\",status=\"200\"}";
const RECEIVED: &str = "ferroflow_artifact_bytes_received_total";
const SENT: &str = "ferroflow_artifact_bytes_sent_total";
const GROUPS: &str = "ferroflow_store_group_commits_total";
const GROUPED: &str = "ferroflow_store_group_commit_requests_total";

pub async fn metrics_move_with_requests_latency_and_artifact_bytes(server: TestServer) {
    let before = scrape(&server).await;
    // Two experiments created (200), one refused (400), one unknown path (404).
    let (_, run_id) = create_run(&server).await;
    create_run(&server).await;
    let (status, _) = server
        .post(
            "/api/2.0/mlflow/experiments/create",
            serde_json::json!({"name": ""}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = server.get("/no/such/path/a1b2c3").await;
    assert_eq!(status, 404);
    // An artifact up and down through the proxy.
    let content = vec![b'x'; 70_000];
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/0/{run_id}/artifacts/blob.bin",
        server.base
    );
    let put = server
        .client
        .put(&url)
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let got = server.client.get(&url).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().len(), content.len());
    // Three single-point writes one after the other: each is a group of its own.
    for (path, body) in [
        (
            "runs/log-metric",
            serde_json::json!({"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0}),
        ),
        (
            "runs/log-parameter",
            serde_json::json!({"run_id": run_id, "key": "lr", "value": "0.1"}),
        ),
        (
            "runs/set-tag",
            serde_json::json!({"run_id": run_id, "key": "team", "value": "a"}),
        ),
    ] {
        let (status, answer) = server.post(&format!("/api/2.0/mlflow/{path}"), body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }

    let after = scrape(&server).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved(CREATED), 2.0, "{after}");
    assert_eq!(moved(REFUSED), 1.0);
    assert_eq!(moved(UNMATCHED), 1.0, "unknown paths share one series");
    assert!(
        !after.contains("a1b2c3"),
        "a client's path never becomes a label"
    );
    assert_eq!(moved(CREATE_TIMED), 3.0, "the refused request is timed too");
    assert_eq!(value(&after, CREATE_INF), value(&after, CREATE_TIMED));
    assert_eq!(moved(UPLOADS), 1.0);
    assert_eq!(moved(RECEIVED), content.len() as f64);
    assert_eq!(moved(SENT), content.len() as f64);
    assert_eq!((moved(GROUPS), moved(GROUPED)), (3.0, 3.0), "{after}");
    assert_eq!(
        value(&after, "ferroflow_http_requests_in_flight"),
        1.0,
        "the scrape itself is in flight"
    );
    assert_eq!(value(&after, "ferroflow_store_up"), 1.0);
    assert!(value(&after, "ferroflow_store_connections{state=\"max\"}") >= 1.0);
    assert!(value(&after, "ferroflow_store_acquire_wait_seconds") >= 0.0);
}

/// With the store gone (its pool closed, as an unreachable database looks to a request),
/// readiness fails and liveness still answers; tests/api/outage.rs does it with Postgres down.
pub async fn metrics_and_readiness_follow_the_store_liveness_does_not(server: TestServer) {
    let status = |path: &'static str| {
        let request = server.client.get(format!("{}{path}", server.base)).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/ready").await, 200);
    server.store.close().await;
    assert_eq!(status("/ready").await, 503);
    assert_eq!(status("/health").await, 200);
    assert_eq!(
        value(&scrape(&server).await, "ferroflow_store_up"),
        0.0,
        "the scrape reports the store down"
    );
}
