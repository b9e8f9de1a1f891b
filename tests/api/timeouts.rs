//! Clients that hold connections without finishing requests, spoken to with raw sockets: each
//! is answered or closed within the server's limits, and clients that keep up are not.
//! The server runs with half-second limits; every wait has a deadline.

use std::time::{Duration, Instant};

use ferroflow::server::ConnectionLimits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{TestServer, common, start_with};

const SHORT: Duration = Duration::from_millis(500);
/// How long past its limit a connection may take to be answered or closed.
const GRACE: Duration = Duration::from_secs(5);

fn short_limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: SHORT,
        body_read_timeout: SHORT,
        body_min_rate: 1000,
        keep_alive_timeout: SHORT,
        max_connections: 1000,
    }
}

async fn server_with(limits: ConnectionLimits) -> TestServer {
    start_with(common::sqlite_store().await, limits).await
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection, and when it closed; fails
/// when it is still open after `within`.
async fn until_closed(
    stream: &mut (impl AsyncRead + Unpin),
    within: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        let read = tokio::time::timeout(left, stream.read(&mut chunk)).await;
        assert!(
            read.is_ok(),
            "connection still open after {within:?}; received {:?}",
            String::from_utf8_lossy(&received)
        );
        match read {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// One response on a keep-alive connection: head and Content-Length body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(GRACE, stream.read(&mut byte))
            .await
            .expect("a response in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&received).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// Writes `bytes` one every `pause` until done or the server closed the connection.
async fn trickle(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8], pause: Duration) {
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_answered_408_and_closed() {
    let server = server_with(short_limits()).await;
    let mut stream = connect(&server).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.split();
    let header = b"X-Slow: ".repeat(100);
    let (_, (answer, after)) = tokio::join!(
        trickle(&mut writer, &header, Duration::from_millis(100)),
        until_closed(&mut reader, SHORT + GRACE),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        after >= SHORT - Duration::from_millis(50),
        "cut before its limit: {after:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_without_an_answer() {
    let server = server_with(short_limits()).await;
    let mut stream = connect(&server).await;
    let (answer, _) = until_closed(&mut stream, SHORT + GRACE).await;
    assert_eq!(answer, "");
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_answered_408() {
    let server = server_with(short_limits()).await;
    let mut stream = connect(&server).await;
    let body = br#"{"name": "slow-body-experiment-name-padded-to-a-hundred-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let head = format!(
        "POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let (_, (answer, _)) = tokio::join!(
        trickle(&mut writer, body, Duration::from_millis(50)),
        until_closed(&mut reader, SHORT + GRACE),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // Nothing was created from the cut body.
    let (status, found) = server
        .get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=slow-body-experiment-name-padded-to-a-hundred-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        .await;
    assert_eq!(status, 404, "{found}");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_answered_408_or_413_over_the_limit() {
    let server = server_with(short_limits()).await;
    let experiments = "/api/2.0/mlflow/experiments/create";
    let upload = "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/cut.bin";
    for (method, path, declared, status) in [
        ("POST", experiments, "1000", "408"),
        ("POST", experiments, "1000000000000", "413"),
        ("PUT", upload, "1000", "408"),
    ] {
        let mut stream = connect(&server).await;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n0123456789"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (answer, _) = until_closed(&mut stream, SHORT + GRACE).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{method} {path} declaring {declared} bytes: {answer:?}"
        );
    }
}

#[tokio::test]
async fn many_idle_connections_are_closed_silently() {
    let server = server_with(short_limits()).await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut stream = connect(&server).await;
        // Half of them are keep-alive connections after one request, half never sent one.
        if i % 2 == 0 {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let response = read_response(&mut stream).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
        }
        idle.push(stream);
    }
    let started = Instant::now();
    for stream in &mut idle {
        let left = (SHORT + GRACE).saturating_sub(started.elapsed());
        let (more, _) = until_closed(stream, left).await;
        assert_eq!(more, "", "an idle connection was sent something");
    }
}

#[tokio::test]
async fn clients_that_keep_up_are_not_cut() {
    let server = server_with(short_limits()).await;
    // Requests 100 ms apart on one connection for three keep-alive timeouts.
    let mut stream = connect(&server).await;
    let until = Instant::now() + 3 * SHORT;
    let mut answered = 0;
    while Instant::now() < until {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut stream).await;
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with("OK"),
            "{response:?}"
        );
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered >= 10);

    // An upload lasting three body timeouts, at twice the minimum rate.
    let content: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut upload = connect(&server).await;
    let head = format!(
        "PUT /api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/steady.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        content.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    for chunk in content.chunks(200) {
        upload.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = read_response(&mut upload).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let stored = std::fs::read(server.artifact_root.join("1/run/artifacts/steady.bin")).unwrap();
    assert_eq!(stored, content);
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    let server = server_with(ConnectionLimits {
        max_connections: 2,
        ..ConnectionLimits::DEFAULT
    })
    .await;
    let first = connect(&server).await;
    let _second = connect(&server).await;
    let mut third = connect(&server).await;
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte))
            .await
            .is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    // The timed-out read took nothing (reads are cancel-safe): the whole response is still due.
    let response = read_response(&mut third).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
}
