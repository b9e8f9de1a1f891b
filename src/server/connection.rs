//! What the server grants one client connection: how long it may take to send a request's
//! headers and body, how long it may sit idle between requests, and how many connections are
//! served at once. Without these, a client sending a byte per second (or declaring a body it
//! never sends) holds a connection and its task forever.
//!
//! Three pieces, all outside the handlers: [`LimitedListener`] accepts only while fewer than
//! `max_connections` are open; [`TimedIo`] wraps the socket and, while no request is in
//! flight, ends the connection when the next request's headers do not arrive in time (408 when
//! some of them did, a silent close of an idle keep-alive connection otherwise, as HTTP/1.1
//! expects); [`TimedService`] counts requests in flight for it and bounds the body's arrival.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{Service, ServiceExt};

/// How long the server waits on clients, and how many it serves at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    /// From a connection's first byte (or its opening) to its request's last header line.
    pub header_read_timeout: Duration,
    /// Time for a request body to arrive, extended by one second per `body_min_rate` bytes.
    pub body_read_timeout: Duration,
    /// Bytes per second a long body must keep up to (0: `body_read_timeout` bounds any body).
    pub body_min_rate: u64,
    /// How long a keep-alive connection may wait for its next request.
    pub keep_alive_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The server's defaults (also those of its command line). Keep-alive outlasts the 60 s
    /// idle timeout of common load balancers, so they, not we, close idle connections.
    pub const DEFAULT: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        body_min_rate: 1024,
        keep_alive_timeout: Duration::from_secs(75),
        max_connections: 1024,
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then drains
/// in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = LimitedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        limits,
    };
    axum::serve(listener, PerConnection { router, limits })
        .with_graceful_shutdown(shutdown)
        .await
}

/// What a client that never finished its request headers, or its body, is answered.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Accepts while a permit is free; each connection holds one until it closes.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
}

impl Listener for LimitedListener {
    type Io = TimedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TimedIo, SocketAddr) {
        let permit = match Arc::clone(&self.permits).acquire_owned().await {
            Ok(permit) => permit,
            Err(_closed) => unreachable!("the semaphore is never closed"),
        };
        // axum's accept logs and retries failed accepts (e.g. out of file descriptors).
        let (stream, address) = Listener::accept(&mut self.inner).await;
        (TimedIo::new(stream, permit, self.limits), address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Requests of one connection: started, and finished (response body sent or dropped). Both
/// only grow; equal means the connection is between requests.
#[derive(Debug, Default)]
struct RequestCounts {
    started: AtomicU64,
    finished: AtomicU64,
}

impl RequestCounts {
    /// `Some(finished)` when no request is in flight.
    fn between_requests(&self) -> Option<u64> {
        // finished first: as finished <= started always, equal reads mean equal at once.
        let finished = self.finished.load(Ordering::Acquire);
        (self.started.load(Ordering::Acquire) == finished).then_some(finished)
    }
}

/// Counts one request as finished when dropped.
struct InFlight(Arc<RequestCounts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// The socket, ending the connection when it waits too long for a request.
pub struct TimedIo {
    stream: TcpStream,
    requests: Arc<RequestCounts>,
    limits: ConnectionLimits,
    /// `finished` when this wait for a request began.
    wait_of: u64,
    /// Some bytes of the awaited request arrived.
    request_begun: bool,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl TimedIo {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, limits: ConnectionLimits) -> Self {
        // A new connection owes its first request's headers like one that began sending them.
        let deadline = Instant::now() + limits.header_read_timeout;
        TimedIo {
            stream,
            requests: Arc::default(),
            limits,
            wait_of: 0,
            request_begun: false,
            deadline,
            timer: Box::pin(sleep_until(deadline)),
            _permit: permit,
        }
    }

    /// Whether the connection waits for a request; starts the keep-alive clock when a new
    /// wait began since the last look.
    fn awaiting_request(&mut self) -> bool {
        let Some(finished) = self.requests.between_requests() else {
            return false;
        };
        if finished != self.wait_of {
            self.wait_of = finished;
            self.request_begun = false;
            self.deadline = Instant::now() + self.limits.keep_alive_timeout;
        }
        true
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let awaiting = this.awaiting_request();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending if awaiting => {}
            Poll::Ready(Ok(()))
                if awaiting && !this.request_begun && buf.filled().len() > before =>
            {
                this.request_begun = true;
                this.deadline = Instant::now() + this.limits.header_read_timeout;
                return Poll::Ready(Ok(()));
            }
            other => return other,
        }
        if this.timer.deadline() != this.deadline {
            this.timer.as_mut().reset(this.deadline);
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if !this.request_begun {
            // Idle: end of stream closes the connection without a word, as keep-alive allows.
            return Poll::Ready(Ok(()));
        }
        // Best effort: the client may not be reading either, and the connection ends anyway.
        let _ = Pin::new(&mut this.stream).poll_write(cx, REQUEST_TIMEOUT);
        tracing::debug!("request headers not received in time: 408");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request headers not received in time",
        )))
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Makes the [`TimedService`] of each accepted connection.
#[derive(Clone)]
struct PerConnection {
    router: Router,
    limits: ConnectionLimits,
}

impl Service<IncomingStream<'_, LimitedListener>> for PerConnection {
    type Response = TimedService;
    type Error = Infallible;
    type Future = Ready<Result<TimedService, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'_, LimitedListener>) -> Self::Future {
        ready(Ok(TimedService {
            router: self.router.clone(),
            requests: Arc::clone(&incoming.io().requests),
            limits: self.limits,
        }))
    }
}

/// The router, with each request counted in flight until its response is sent, and its body
/// bounded in time.
#[derive(Clone)]
pub struct TimedService {
    router: Router,
    requests: Arc<RequestCounts>,
    limits: ConnectionLimits,
}

impl Service<Request> for TimedService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Counted here, synchronously: the socket must know before the body is read.
        self.requests.started.fetch_add(1, Ordering::AcqRel);
        let in_flight = InFlight(Arc::clone(&self.requests));
        let body_timed_out = Arc::new(AtomicBool::new(false));
        let request = if request.body().is_end_stream() {
            request
        } else {
            let limits = self.limits;
            let timed_out = Arc::clone(&body_timed_out);
            request.map(|body| Body::new(TimedBody::new(body, limits, timed_out)))
        };
        let response = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let response = if body_timed_out.load(Ordering::Acquire) {
                // Whatever the handler made of the cut body, the client is told it was late.
                tracing::debug!("request body not received in time: 408");
                let mut timeout = (
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time",
                )
                    .into_response();
                timeout
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                timeout
            } else {
                response
            };
            Ok(response.map(|body| {
                Body::new(ResponseBody {
                    inner: body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that counts its request finished once sent (or dropped).
struct ResponseBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once it arrives later than `body_read_timeout` plus one second
/// per `body_min_rate` bytes received: a slow upload goes on as long as it keeps the rate, a
/// trickle or a body shorter than its Content-Length ends.
struct TimedBody {
    inner: Body,
    started: Instant,
    received: u64,
    limits: ConnectionLimits,
    /// Made on the first wait: most bodies have arrived when the handler reads them.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl TimedBody {
    fn new(inner: Body, limits: ConnectionLimits, timed_out: Arc<AtomicBool>) -> Self {
        TimedBody {
            inner,
            started: Instant::now(),
            received: 0,
            limits,
            timer: None,
            timed_out,
        }
    }

    fn deadline(&self) -> Instant {
        let earned = match self.limits.body_min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(self.received as f64 / rate as f64),
        };
        self.started + self.limits.body_read_timeout + earned
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
struct BodyTimeout;

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let deadline = this.deadline();
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timed_out.store(true, Ordering::Release);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))))
            }
            done => done,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
