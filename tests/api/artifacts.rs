//! The proxied artifact API: round trips, listings, and path confinement against hostile
//! paths sent as raw bytes (an HTTP client library would normalise `..` and `%2e%2e` away).

use std::collections::BTreeMap;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use serde_json::{Value, json};

use super::process::spawn_server;
use super::{TestServer, create_run};

/// Every file under `root` with its contents, to prove a refused request changed nothing.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                files.insert(path.display().to_string(), std::fs::read(&path).unwrap());
            } else {
                files.insert(path.display().to_string(), b"<link>".to_vec());
            }
        }
    }
    files
}

/// Sends one request with `raw_path` exactly as given and returns the status code.
async fn raw_request(server: &TestServer, method: &str, raw_path: &str, body: &[u8]) -> u16 {
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {raw_path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

pub async fn hostile_paths_are_refused_and_change_nothing(server: TestServer) {
    let root = server.artifact_root.clone();
    let outside = root.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::fs::create_dir_all(root.join("1")).unwrap();
    std::fs::write(root.join("1/keep.txt"), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("1/link")).unwrap();
    let before_root = snapshot(&root);
    let before_outside = snapshot(&outside);

    let hostile = [
        "../outside/escape.txt",
        "1/../../outside/escape.txt",
        "%2e%2e/outside/escape.txt",
        "%2E%2E%2Foutside%2Fescape.txt",
        "1/%2e%2e/%2e%2e/outside/escape.txt",
        "%252e%252e/outside/escape.txt",
        "/tmp/escape.txt",
        "%2Ftmp%2Fescape.txt",
        "1/a%00b.txt",
        "..%5Coutside%5Cescape.txt",
        "C:%5Cwindows%5Cescape.txt",
        "1/link/escape.txt",
        "~/escape.txt",
        "1/..",
        "1/%0d%0aX-Injected:%20yes",
        "1/./../../outside/escape.txt",
        "1/%C0%AE%C0%AE/escape.txt",
    ];
    for path in hostile {
        let url = format!("/api/2.0/mlflow-artifacts/artifacts/{path}");
        let put = raw_request(&server, "PUT", &url, b"pwned").await;
        assert_eq!(put, 400, "PUT {path} must be refused");
        let get = raw_request(&server, "GET", &url, b"").await;
        assert!(get == 400 || get == 404, "GET {path} answered {get}");
        let delete = raw_request(&server, "DELETE", &url, b"").await;
        assert!(
            delete == 400 || delete == 404,
            "DELETE {path} answered {delete}"
        );
    }
    assert!(hostile.len() >= 15);
    assert_eq!(
        snapshot(&root),
        before_root,
        "the artifact root is unchanged"
    );
    assert_eq!(
        snapshot(&outside),
        before_outside,
        "nothing outside the root changed"
    );
    let listing = raw_request(
        &server,
        "GET",
        "/api/2.0/mlflow-artifacts/artifacts?path=..%2Foutside",
        b"",
    )
    .await;
    assert_eq!(listing, 400);
}

pub async fn artifacts_round_trip_and_list_like_mlflow(server: TestServer) {
    let base = format!("{}/api/2.0/mlflow-artifacts/artifacts", server.base);
    let binary: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
    for (path, body) in [
        ("5/run/artifacts/dir/a b.txt", b"hello".to_vec()),
        ("5/run/artifacts/dir/sub/bin.dat", binary.clone()),
    ] {
        let response = server
            .client
            .put(format!("{base}/{}", path.replace(' ', "%20")))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    let downloaded = server
        .client
        .get(format!("{base}/5/run/artifacts/dir/sub/bin.dat"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        downloaded.headers()["content-length"],
        binary.len().to_string().as_str()
    );
    assert_eq!(downloaded.bytes().await.unwrap().to_vec(), binary);
    let listing: serde_json::Value = server
        .client
        .get(format!("{base}?path=5/run/artifacts/dir"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listing,
        serde_json::json!({"files": [
            {"path": "a b.txt", "is_dir": false, "file_size": 5},
            {"path": "sub", "is_dir": true},
        ]}),
        "basenames only, directories without size"
    );
    let missing: serde_json::Value = server
        .client
        .get(format!("{base}?path=5/nothing"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing, serde_json::json!({}));
    let file_listing: serde_json::Value = server
        .client
        .get(format!("{base}?path=5/run/artifacts/dir/a%20b.txt"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        file_listing["files"][0]["path"], "a b.txt",
        "a file lists as itself"
    );
    let gone = server
        .client
        .delete(format!("{base}/5/run/artifacts/dir/sub"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 200);
    let after = server
        .client
        .get(format!("{base}/5/run/artifacts/dir/sub/bin.dat"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status().as_u16(), 404);
}

/// Sends `method` to `path_and_query` (already percent-encoded) and returns status and JSON body.
async fn send(
    server: &TestServer,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = server
        .client
        .request(method, format!("{}{path_and_query}", server.base))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

/// The run's artifact folder under the artifact root, and its path in the proxied API.
async fn run_artifacts(server: &TestServer) -> (String, String) {
    let (_, run_id) = create_run(server).await;
    let (status, run) = server
        .get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"))
        .await;
    assert_eq!(status, 200, "{run}");
    let uri = run["run"]["info"]["artifact_uri"].as_str().unwrap();
    let under_root = uri.strip_prefix("mlflow-artifacts:/").unwrap().to_owned();
    (run_id, under_root)
}

/// A logged model's id and the path of its artifacts under the artifact root.
async fn logged_model(server: &TestServer) -> (String, String) {
    let (experiment_id, _) = create_run(server).await;
    let (status, created) = server
        .post(
            "/api/2.0/mlflow/logged-models",
            json!({"experiment_id": experiment_id, "name": "m"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let info = &created["model"]["info"];
    let uri = info["artifact_uri"].as_str().unwrap();
    (
        info["model_id"].as_str().unwrap().to_owned(),
        uri.strip_prefix("mlflow-artifacts:/").unwrap().to_owned(),
    )
}

const PROXY: &str = "/api/2.0/mlflow-artifacts/artifacts";

pub async fn recursive_delete_and_listings_never_follow_links(server: TestServer) {
    let root = server.artifact_root.clone();
    let outside = root.parent().unwrap().join("outside-of-root");
    std::fs::create_dir_all(outside.join("nested")).unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::fs::write(outside.join("nested/deep.txt"), b"deep").unwrap();
    let (run_id, run_dir) = run_artifacts(&server).await;
    let (model_id, model_dir) = logged_model(&server).await;
    for dir in [&run_dir, &model_dir] {
        let (status, _) = send(&server, "PUT", &format!("{PROXY}/{dir}/dir/kept.txt"), b"k").await;
        assert_eq!(status, 200);
        std::os::unix::fs::symlink(&outside, root.join(dir).join("dir/link")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("secret.txt"),
            root.join(dir).join("dir/file-link"),
        )
        .unwrap();
    }
    let before_outside = snapshot(&outside);

    // Listings show what the API can serve: no links, and nothing read through one.
    let only_kept = json!({"files": [{"path": "kept.txt", "is_dir": false, "file_size": 1}]});
    let (_, listed) = send(&server, "GET", &format!("{PROXY}?path={run_dir}/dir"), b"").await;
    assert_eq!(listed, only_kept);
    for under_root in [
        format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=dir"),
        format!(
            "/api/2.0/mlflow/logged-models/{model_id}/artifacts/directories?artifact_directory_path=dir"
        ),
    ] {
        let (_, listed) = server.get(&under_root).await;
        assert_eq!(
            listed["files"],
            json!([{"path": "dir/kept.txt", "is_dir": false, "file_size": 1}])
        );
    }
    let (status, _) = send(
        &server,
        "GET",
        &format!("{PROXY}?path={run_dir}/dir/link"),
        b"",
    )
    .await;
    assert_eq!(status, 400, "a listing through a link is refused");

    for dir in [&run_dir, &model_dir] {
        let (status, body) = send(&server, "DELETE", &format!("{PROXY}/{dir}/dir"), b"").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            snapshot(&outside),
            before_outside,
            "nothing outside the root was deleted"
        );
        assert!(
            std::fs::symlink_metadata(root.join(dir).join("dir")).is_err(),
            "the folder, its links included, is gone"
        );
    }
}

pub async fn long_names_are_stored_up_to_the_limit_and_refused_beyond(server: TestServer) {
    let (run_id, run_dir) = run_artifacts(&server).await;
    let (model_id, model_dir) = logged_model(&server).await;
    // MLflow stores names up to the filesystem's 255 bytes; multi-byte characters count as bytes.
    for (dir, name) in [
        (&run_dir, "a".repeat(254)),
        (&run_dir, "b".repeat(255)),
        (&model_dir, format!("{}{}", "é".repeat(126), "xyz")),
    ] {
        assert!(name.len() == 254 || name.len() == 255);
        let url = format!("{PROXY}/{dir}/{name}");
        let (status, body) = send(&server, "PUT", &url, name.as_bytes()).await;
        assert_eq!(status, 200, "PUT of a {}-byte name: {body}", name.len());
        let downloaded = server
            .client
            .get(format!("{}{url}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(downloaded.status().as_u16(), 200);
        assert_eq!(downloaded.bytes().await.unwrap().as_ref(), name.as_bytes());
        assert_eq!(
            std::fs::read(server.artifact_root.join(dir).join(&name)).unwrap(),
            name.as_bytes(),
            "stored under its own name"
        );
    }
    let (_, listed) = server
        .get(&format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}"))
        .await;
    assert_eq!(listed["files"].as_array().unwrap().len(), 2, "{listed}");

    let too_long_segment = "c".repeat(256);
    let too_long_path = vec!["d".repeat(200); 25].join("/");
    for relative in [too_long_segment.as_str(), too_long_path.as_str()] {
        for (method, url) in [
            ("PUT", format!("{PROXY}/{run_dir}/{relative}")),
            ("GET", format!("{PROXY}/{run_dir}/{relative}")),
            ("DELETE", format!("{PROXY}/{run_dir}/{relative}")),
            ("GET", format!("{PROXY}?path={run_dir}/{relative}")),
            (
                "GET",
                format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={relative}"),
            ),
            (
                "GET",
                format!("/get-artifact?run_id={run_id}&path={relative}"),
            ),
            (
                "GET",
                format!(
                    "/api/2.0/mlflow/logged-models/{model_id}/artifacts/directories?artifact_directory_path={relative}"
                ),
            ),
            (
                "GET",
                format!(
                    "/api/2.0/mlflow/logged-models/{model_id}/artifacts/files?artifact_file_path={relative}"
                ),
            ),
        ] {
            let (status, body) = send(&server, method, &url, b"x").await;
            assert_eq!(status, 400, "{method} {}: {body}", &url[..80]);
            assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE", "{body}");
        }
    }
}

pub async fn missing_artifacts_are_named_as_the_client_sent_them(server: TestServer) {
    let root = server.artifact_root.display().to_string();
    let (run_id, run_dir) = run_artifacts(&server).await;
    let (model_id, _) = logged_model(&server).await;
    for (url, named) in [
        (
            format!("{PROXY}/{run_dir}/missing.txt"),
            format!("{run_dir}/missing.txt"),
        ),
        (
            format!("/get-artifact?run_id={run_id}&path=sub/missing.txt"),
            "sub/missing.txt".to_owned(),
        ),
        (
            format!(
                "/api/2.0/mlflow/logged-models/{model_id}/artifacts/files?artifact_file_path=missing.txt"
            ),
            "missing.txt".to_owned(),
        ),
    ] {
        let (status, body) = send(&server, "GET", &url, b"").await;
        assert_eq!(status, 404, "{url}: {body}");
        assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains(&root), "{message} discloses the root");
        assert!(
            message.contains(&format!("'{named}'")),
            "{message} names '{named}'"
        );
    }
}

/// SIGKILL of the server in the middle of an upload: once restarted on the same folder, the
/// artifact is absent (never truncated) and no temporary file remains.
#[tokio::test]
async fn an_upload_killed_with_the_server_leaves_no_partial_or_temporary_file() {
    const PART: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let (mut server, base) = spawn_server(dir.path(), &root, &[]).await;
    let address = base.trim_start_matches("http://").to_owned();
    let path = "1/run/artifacts/big.bin";

    // Announce 512 MiB, send 24 MiB (several parts on disk), and keep the request open.
    let mut upload = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "PUT {PROXY}/{path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n",
        512 * PART
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; PART];
    for _ in 0..24 {
        upload.write_all(&chunk).await.unwrap();
    }
    let bytes_on_disk = |root: &Path| -> usize { snapshot(root).values().map(Vec::len).sum() };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while bytes_on_disk(&root) < 8 * PART {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never reached the disk"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill().await.unwrap(); // SIGKILL
    drop(upload);

    let (_server, base) = spawn_server(dir.path(), &root, &[]).await;
    let response = reqwest::get(format!("{base}{PROXY}/{path}")).await.unwrap();
    assert_eq!(response.status().as_u16(), 404, "no truncated artifact");
    let left: Vec<String> = snapshot(&root)
        .into_iter()
        .filter(|(_, content)| !content.is_empty())
        .map(|(name, content)| format!("{name} ({} bytes)", content.len()))
        .collect();
    assert!(left.is_empty(), "left after the restart: {left:?}");
}
