//! `ferroflow server` as a child process, for what only a whole process shows (a kill, the
//! global tracing subscriber).

use std::path::Path;

/// OpenTelemetry's variables that turn trace export on: a child gets only the ones a test sets.
const OTEL_VARS: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// `ferroflow server` on a SQLite file in `dir` and artifacts in `root`, with `env` added to
/// this process's environment; returns the child (killed when dropped) and its base URL once
/// it answers `/health`. Its log is `dir/server.log`.
pub async fn spawn_server(
    dir: &Path,
    root: &Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let address_file = dir.join("address");
    let _ = std::fs::remove_file(&address_file);
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferroflow"));
    for name in OTEL_VARS {
        command.env_remove(name);
    }
    let mut child = command
        .envs(env.iter().copied())
        .arg("server")
        .args(["--host", "127.0.0.1", "--port", "0"])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(root)
        .arg("--address-file")
        .arg(&address_file)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the server exited with {exited:?}: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        if let Ok(address) = std::fs::read_to_string(&address_file)
            && !address.is_empty()
        {
            let base = format!("http://{address}");
            if let Ok(response) = client.get(format!("{base}/health")).send().await
                && response.status().is_success()
            {
                return (child, base);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no healthy server within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
