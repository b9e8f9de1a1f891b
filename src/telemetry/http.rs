//! The tracking server's metrics: requests by route template, method and status, their
//! latency, requests in flight, artifact bytes in and out (middleware around every route), and
//! the store's connection pool (read when `/metrics` is scraped).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tower_http::trace::{DefaultOnResponse, OnResponse as _};
use tracing::Span;

use super::prometheus::{Histogram, escape, family, single};
use crate::store::Store;

/// The route label of requests no route matched: one series, whatever paths clients try.
const UNMATCHED: &str = "unmatched";

/// Routes whose bodies are artifact content (uploads and downloads), by template prefix.
const ARTIFACT_ROUTES: [&str; 2] = ["/api/2.0/mlflow-artifacts/artifacts/", "/get-artifact"];

/// Requests seen since the process started.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// (method, route template, status) → requests answered.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (method, route template) → time to the response's headers.
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
    in_flight: AtomicI64,
    artifact_bytes_received: Arc<AtomicU64>,
    artifact_bytes_sent: Arc<AtomicU64>,
}

/// Counts one request in flight until dropped, so a cancelled request is uncounted too.
struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, started: Instant) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests
                .entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        if let Ok(mut durations) = self.durations.lock() {
            durations
                .entry((method.to_owned(), route.to_owned()))
                .or_default()
                .observe(started.elapsed());
        }
    }

    /// The text exposition format: these counters, then the store's pool.
    pub async fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "ferroflow_http_requests_total",
            "counter",
            "Requests answered, by method, route template and status.",
        );
        if let Ok(requests) = self.requests.lock() {
            for ((method, route, status), count) in requests.iter() {
                let route = escape(route);
                out.push_str(&format!(
                    "ferroflow_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}\n"
                ));
            }
        }
        family(
            &mut out,
            "ferroflow_http_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its response's headers, by method and route template.",
        );
        if let Ok(durations) = self.durations.lock() {
            for ((method, route), histogram) in durations.iter() {
                let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
                histogram.write(&mut out, "ferroflow_http_request_duration_seconds", &labels);
            }
        }
        single(
            &mut out,
            "ferroflow_http_requests_in_flight",
            "gauge",
            "Requests being handled now.",
            self.in_flight.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "ferroflow_artifact_bytes_received_total",
            "counter",
            "Artifact bytes uploaded through the server.",
            self.artifact_bytes_received.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "ferroflow_artifact_bytes_sent_total",
            "counter",
            "Artifact bytes downloaded through the server.",
            self.artifact_bytes_sent.load(Ordering::Relaxed),
        );
        render_pool(&mut out, store).await;
        render_group_commit(&mut out, store);
        out
    }
}

/// Single-point writes (log-metric, log-parameter, set-tag) and the groups they were written in:
/// requests per group is how much concurrent training loops share their commits.
fn render_group_commit(out: &mut String, store: &Store) {
    let stats = store.group_commit_stats();
    single(
        out,
        "ferroflow_store_group_commits_total",
        "counter",
        "Groups of single-point run writes committed together.",
        stats.groups,
    );
    single(
        out,
        "ferroflow_store_group_commit_requests_total",
        "counter",
        "Single-point run writes (log-metric, log-parameter, set-tag) written in those groups.",
        stats.requests,
    );
}

/// The pool's connections, and how long a connection took to get right now: a request
/// waits about as long, so a rising value means the pool is too small or the database slow.
async fn render_pool(out: &mut String, store: &Store) {
    let pool = store.pool_status();
    family(
        out,
        "ferroflow_store_connections",
        "gauge",
        "Store pool connections, by state (idle, in_use) and the pool's maximum (max).",
    );
    for (state, count) in [
        ("idle", pool.idle),
        ("in_use", pool.size.saturating_sub(pool.idle)),
        ("max", pool.max),
    ] {
        out.push_str(&format!(
            "ferroflow_store_connections{{state=\"{state}\"}} {count}\n"
        ));
    }
    let wait = store.acquire_wait().await;
    single(
        out,
        "ferroflow_store_acquire_wait_seconds",
        "gauge",
        "Time this scrape waited for a store connection (NaN when none came before the timeout).",
        wait.as_ref().map_or(f64::NAN, |wait| wait.as_secs_f64()),
    );
    single(
        out,
        "ferroflow_store_up",
        "gauge",
        "1 when this scrape got a store connection, 0 otherwise.",
        u8::from(wait.is_ok()),
    );
}

/// The span of one request (what traces show): named `<method> <route template>` as
/// OpenTelemetry's HTTP conventions ask, its status recorded by [`record_status`]. Store calls
/// made while handling it are its children.
pub fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str);
    let method = request.method().as_str();
    tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Adds the response's status to the request's span (a 5xx marks the span as failed), and
/// logs it as the default does.
pub fn record_status(response: &Response, latency: Duration, span: &Span) {
    let status = response.status();
    // i64: OpenTelemetry has no unsigned integers (a u64 would arrive as a string)
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    DefaultOnResponse::default().on_response(response, latency, span);
}

/// Middleware: counts and times every request by its route template; counts artifact bytes.
pub async fn track(
    State(metrics): State<Arc<HttpMetrics>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = matched.map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let download = request.method() == Method::GET;
    let method = request.method().as_str().to_owned();
    metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight(&metrics.in_flight);
    let artifact = ARTIFACT_ROUTES
        .iter()
        .any(|prefix| route.starts_with(prefix));
    let request = if artifact {
        request.map(|body| Counted::wrap(body, &metrics.artifact_bytes_received))
    } else {
        request
    };
    let response = next.run(request).await;
    metrics.record(&method, &route, response.status().as_u16(), started);
    // Only a download's body is content; an upload is answered `{}`.
    if artifact && download {
        response.map(|body| Counted::wrap(body, &metrics.artifact_bytes_sent))
    } else {
        response
    }
}

/// A body that adds the length of each data frame to a counter as it passes.
struct Counted {
    inner: Body,
    bytes: Arc<AtomicU64>,
}

impl Counted {
    fn wrap(inner: Body, bytes: &Arc<AtomicU64>) -> Body {
        Body::new(Counted {
            inner,
            bytes: Arc::clone(bytes),
        })
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
