//! The proxied artifact API: round trips, listings, and path confinement against hostile
//! paths sent as raw bytes (an HTTP client library would normalise `..` and `%2e%2e` away).

use std::collections::BTreeMap;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TestServer;

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
