//! The workspace header over HTTP (`--auth none`): it selects the workspace, objects of another
//! workspace answer RESOURCE_DOES_NOT_EXIST, and the workspace endpoints list and refuse.

use serde_json::{Value, json};

use super::TestServer;

impl TestServer {
    async fn call_in(
        &self,
        workspace: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(workspace) = workspace {
            request = request.header("X-MLFLOW-WORKSPACE", workspace);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

pub async fn the_workspace_header_scopes_every_object(server: TestServer) {
    use reqwest::Method;
    let create = |workspace| {
        server.call_in(
            workspace,
            Method::POST,
            "/api/2.0/mlflow/experiments/create",
            Some(json!({"name": "churn"})),
        )
    };
    let (status, a) = create(Some("team-a")).await;
    assert_eq!(status, 200, "{a}");
    let (status, b) = create(Some("team-b")).await;
    assert_eq!(status, 200, "{b}");
    let (status, again) = create(Some("team-a")).await;
    assert_eq!(
        (status, again["error_code"].as_str()),
        (400, Some("RESOURCE_ALREADY_EXISTS"))
    );
    let a = a["experiment_id"].as_str().unwrap().to_owned();
    let (_, experiment) = server
        .call_in(
            Some("team-a"),
            Method::GET,
            &format!("/api/2.0/mlflow/experiments/get?experiment_id={a}"),
            None,
        )
        .await;
    assert_eq!(
        experiment["experiment"]["artifact_location"],
        format!("mlflow-artifacts:/workspaces/team-a/{a}")
    );
    // Another workspace's id, and no header (default), find nothing.
    for workspace in [Some("team-b"), None] {
        let (status, missing) = server
            .call_in(
                workspace,
                Method::GET,
                &format!("/api/2.0/mlflow/experiments/get?experiment_id={a}"),
                None,
            )
            .await;
        assert_eq!(
            (status, missing["error_code"].as_str()),
            (404, Some("RESOURCE_DOES_NOT_EXIST")),
            "{missing}"
        );
    }
    let (status, run) = server
        .call_in(
            Some("team-b"),
            Method::POST,
            "/api/2.0/mlflow/runs/create",
            Some(json!({"experiment_id": a})),
        )
        .await;
    assert_eq!(status, 404, "{run}");

    for workspace in ["team-a", "team-b"] {
        let (status, model) = server
            .call_in(
                Some(workspace),
                Method::POST,
                "/api/2.0/mlflow/registered-models/create",
                Some(json!({"name": "churn", "description": workspace})),
            )
            .await;
        assert_eq!(status, 200, "{model}");
    }
    let (_, model) = server
        .call_in(
            Some("team-b"),
            Method::GET,
            "/api/2.0/mlflow/registered-models/get?name=churn",
            None,
        )
        .await;
    assert_eq!(model["registered_model"]["description"], "team-b");
    let (status, _) = server
        .call_in(
            None,
            Method::GET,
            "/api/2.0/mlflow/registered-models/get?name=churn",
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A workspace name that is no namespace name is refused, not used.
    let (status, invalid) = server
        .call_in(
            Some("Team_A"),
            Method::POST,
            "/api/2.0/mlflow/experiments/search",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, invalid["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );

    let (status, info) = server.get("/api/3.0/mlflow/server-info").await;
    assert_eq!((status, &info["workspaces_enabled"]), (200, &json!(true)));
    // The web UI is told they are off: its workspace mode is not served yet.
    let (status, info) = server.get("/ajax-api/3.0/mlflow/server-info").await;
    assert_eq!((status, &info["workspaces_enabled"]), (200, &json!(false)));
    let (status, listed) = server.get("/api/3.0/mlflow/workspaces").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed,
        json!({"workspaces": [{"name": "default"}, {"name": "team-a"}, {"name": "team-b"}]})
    );
    let (status, one) = server.get("/ajax-api/3.0/mlflow/workspaces/team-a").await;
    assert_eq!(
        (status, one),
        (200, json!({"workspace": {"name": "team-a"}}))
    );
    let (status, _) = server.get("/api/3.0/mlflow/workspaces/team-z").await;
    assert_eq!(status, 404);
    for (method, path) in [
        (Method::POST, "/api/3.0/mlflow/workspaces"),
        (Method::PATCH, "/api/3.0/mlflow/workspaces/team-a"),
        (Method::DELETE, "/api/3.0/mlflow/workspaces/team-a"),
    ] {
        let (status, refused) = server
            .call_in(None, method, path, Some(json!({"name": "team-c"})))
            .await;
        assert_eq!(
            (status, refused["error_code"].as_str()),
            (501, Some("NOT_IMPLEMENTED")),
            "{refused}"
        );
    }
}

/// `method path` in `workspace` with a raw body; the status and the raw answer.
async fn raw_in(
    server: &TestServer,
    workspace: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.base))
        .body(body.to_vec());
    if let Some(workspace) = workspace {
        request = request.header("X-MLFLOW-WORKSPACE", workspace);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// An experiment (`artifact_location` when given) and a run in it, created in `workspace`:
/// their ids and the run's artifact path under the proxy (`mlflow-artifacts:` stripped).
async fn experiment_and_run(
    server: &TestServer,
    workspace: Option<&str>,
    artifact_location: Option<&str>,
) -> (String, String, String) {
    use reqwest::Method;
    let mut body = json!({"name": format!("exp-{}", uuid::Uuid::new_v4().simple())});
    if let Some(location) = artifact_location {
        body["artifact_location"] = json!(location);
    }
    let (status, created) = server
        .call_in(
            workspace,
            Method::POST,
            "/api/2.0/mlflow/experiments/create",
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let experiment_id = created["experiment_id"].as_str().unwrap().to_owned();
    let (status, run) = server
        .call_in(
            workspace,
            Method::POST,
            "/api/2.0/mlflow/runs/create",
            Some(json!({"experiment_id": experiment_id})),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let info = &run["run"]["info"];
    let root = info["artifact_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("mlflow-artifacts:/")
        .unwrap()
        .to_owned();
    (
        experiment_id,
        info["run_id"].as_str().unwrap().to_owned(),
        root,
    )
}

const PROXY: &str = "/api/2.0/mlflow-artifacts/artifacts";

/// Issue #17: the proxied artifact routes, and the routes that read artifacts through a run,
/// a logged model or a model version, reach only the request's workspace. Another workspace's
/// folder (`workspaces/<other>/…`) answers as a missing file does and is never read, written or
/// deleted; `default`'s paths named from another workspace are that workspace's own (MLflow's
/// layout), so they find nothing of `default`'s.
pub async fn artifacts_stay_in_their_workspace(server: TestServer) {
    use reqwest::Method;
    let on_disk = |path: &str| std::fs::read(server.artifact_root.join(path)).ok();
    let (a_experiment, _, a_root) = experiment_and_run(&server, Some("team-a"), None).await;
    assert!(a_root.starts_with("workspaces/team-a/"), "{a_root}");
    let (d_experiment, d_run, d_root) = experiment_and_run(&server, None, None).await;
    let a_secret = format!("{a_root}/secret.txt");
    let d_secret = format!("{d_root}/secret.txt");
    for (workspace, path, body) in [
        (Some("team-a"), &a_secret, "team-a secret"),
        (None, &d_secret, "default secret"),
    ] {
        let (status, _) = raw_in(
            &server,
            workspace,
            Method::PUT,
            &format!("{PROXY}/{path}"),
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200);
        // Each workspace reads its own.
        let (status, read) = raw_in(
            &server,
            workspace,
            Method::GET,
            &format!("{PROXY}/{path}"),
            b"",
        )
        .await;
        assert_eq!((status, read.as_slice()), (200, body.as_bytes()));
    }
    let missing_answer = |sent: &str| json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": format!("No artifact found at '{sent}'")});
    let as_json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);

    // team-b and default against team-a's folder: read, list, write, delete.
    for workspace in [Some("team-b"), None] {
        let missing = format!("{a_root}/never-written.txt");
        for path in [&a_secret, &missing] {
            let (status, answer) = raw_in(
                &server,
                workspace,
                Method::GET,
                &format!("{PROXY}/{path}"),
                b"",
            )
            .await;
            assert_eq!(
                (status, as_json(&answer)),
                (404, missing_answer(path)),
                "GET {path} from {workspace:?}: the same answer, existing or not"
            );
        }
        for listed in [a_root.as_str(), "workspaces", "workspaces/team-a"] {
            let (status, answer) = raw_in(
                &server,
                workspace,
                Method::GET,
                &format!("{PROXY}?path={listed}"),
                b"",
            )
            .await;
            assert_eq!(
                (status, as_json(&answer)),
                (404, missing_answer(listed)),
                "list {listed} from {workspace:?}"
            );
        }
        let planted = format!("{a_root}/planted.txt");
        let (status, answer) = raw_in(
            &server,
            workspace,
            Method::PUT,
            &format!("{PROXY}/{planted}"),
            b"planted",
        )
        .await;
        assert_eq!((status, as_json(&answer)), (404, missing_answer(&planted)));
        assert_eq!(
            on_disk(&planted),
            None,
            "nothing written into team-a's folder"
        );
        let (status, answer) = raw_in(
            &server,
            workspace,
            Method::DELETE,
            &format!("{PROXY}/{a_secret}"),
            b"",
        )
        .await;
        assert_eq!((status, as_json(&answer)), (404, missing_answer(&a_secret)));
        assert_eq!(on_disk(&a_secret).as_deref(), Some(&b"team-a secret"[..]));
    }

    // default's root listing leaves out the other workspaces' folder.
    let (status, listing) = raw_in(&server, None, Method::GET, PROXY, b"").await;
    assert_eq!(status, 200);
    let names: Vec<String> = as_json(&listing)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&d_experiment), "{names:?}");
    assert!(!names.iter().any(|name| name == "workspaces"), "{names:?}");

    // default's paths named from team-b are team-b's own: nothing of default's is read,
    // overwritten or deleted.
    let (status, answer) = raw_in(
        &server,
        Some("team-b"),
        Method::GET,
        &format!("{PROXY}/{d_secret}"),
        b"",
    )
    .await;
    assert_eq!((status, as_json(&answer)), (404, missing_answer(&d_secret)));
    let (status, listing) = raw_in(
        &server,
        Some("team-b"),
        Method::GET,
        &format!("{PROXY}?path={d_root}"),
        b"",
    )
    .await;
    assert_eq!((status, as_json(&listing)), (200, json!({})));
    for (method, body) in [(Method::PUT, &b"team-b"[..]), (Method::DELETE, &b""[..])] {
        let (status, _) = raw_in(
            &server,
            Some("team-b"),
            method,
            &format!("{PROXY}/{d_secret}"),
            body,
        )
        .await;
        assert_eq!(status, 200);
    }
    assert_eq!(on_disk(&d_secret).as_deref(), Some(&b"default secret"[..]));

    // A run, a logged model and a version of team-b whose locations name team-a's folder
    // reach nothing there, though team-a wrote files at those paths.
    let a_location = format!("mlflow-artifacts:/workspaces/team-a/{a_experiment}");
    let (b_experiment, b_run, b_root) =
        experiment_and_run(&server, Some("team-b"), Some(&a_location)).await;
    assert!(b_root.starts_with("workspaces/team-a/"), "{b_root}");
    let (status, logged) = server
        .call_in(
            Some("team-b"),
            Method::POST,
            "/api/2.0/mlflow/logged-models",
            Some(json!({"experiment_id": b_experiment})),
        )
        .await;
    assert_eq!(status, 200, "{logged}");
    let model_id = logged["model"]["info"]["model_id"].as_str().unwrap();
    let model_root = logged["model"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("mlflow-artifacts:/")
        .unwrap()
        .to_owned();
    for root in [&b_root, &model_root] {
        let (status, _) = raw_in(
            &server,
            Some("team-a"),
            Method::PUT,
            &format!("{PROXY}/{root}/secret.txt"),
            b"team-a secret",
        )
        .await;
        assert_eq!(status, 200);
    }
    for workspace in ["team-a", "team-b"] {
        let (status, answer) = server
            .call_in(
                Some(workspace),
                Method::POST,
                "/api/2.0/mlflow/registered-models/create",
                Some(json!({"name": "stolen"})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, version) = server
        .call_in(
            Some("team-b"),
            Method::POST,
            "/api/2.0/mlflow/model-versions/create",
            Some(json!({"name": "stolen", "source": format!("runs:/{b_run}"), "run_id": b_run})),
        )
        .await;
    assert_eq!(status, 200, "{version}");
    let refused_reads = [
        format!("/get-artifact?run_id={b_run}&path=secret.txt"),
        format!(
            "/api/2.0/mlflow/logged-models/{model_id}/artifacts/files?artifact_file_path=secret.txt"
        ),
        "/model-versions/get-artifact?name=stolen&version=1&path=secret.txt".to_owned(),
    ];
    for path in &refused_reads {
        let (status, answer) = raw_in(&server, Some("team-b"), Method::GET, path, b"").await;
        assert_eq!(
            (status, as_json(&answer)),
            (404, missing_answer("secret.txt")),
            "{path}"
        );
    }
    for path in [
        format!("/api/2.0/mlflow/artifacts/list?run_id={b_run}"),
        format!("/api/2.0/mlflow/logged-models/{model_id}/artifacts/directories"),
    ] {
        let (status, answer) = raw_in(&server, Some("team-b"), Method::GET, &path, b"").await;
        assert_eq!(status, 404, "{path}: {}", String::from_utf8_lossy(&answer));
        assert!(
            !String::from_utf8_lossy(&answer).contains("secret"),
            "{path}"
        );
    }

    // The version page's artifact and the dataset search answer from the request's workspace:
    // default's model and datasets are not found from team-b.
    let (status, _) = server
        .call_in(
            None,
            Method::POST,
            "/api/2.0/mlflow/registered-models/create",
            Some(json!({"name": "default-only"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, version) = server
        .call_in(
            None,
            Method::POST,
            "/api/2.0/mlflow/model-versions/create",
            Some(json!({"name": "default-only", "source": format!("runs:/{d_run}"), "run_id": d_run})),
        )
        .await;
    assert_eq!(status, 200, "{version}");
    let version_file = "/model-versions/get-artifact?name=default-only&version=1&path=secret.txt";
    let (status, read) = raw_in(&server, None, Method::GET, version_file, b"").await;
    assert_eq!((status, read.as_slice()), (200, &b"default secret"[..]));
    let (status, answer) = raw_in(&server, Some("team-b"), Method::GET, version_file, b"").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&answer));
    assert!(!String::from_utf8_lossy(&answer).contains("secret"));
    let dataset = json!({"name": "train", "digest": "d1", "source_type": "local", "source": "{}"});
    let (status, body) = server
        .call_in(
            None,
            Method::POST,
            "/api/2.0/mlflow/runs/log-inputs",
            Some(json!({"run_id": d_run, "datasets": [{"dataset": dataset, "tags": []}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (workspace, expected) in [(None, 1), (Some("team-b"), 0)] {
        let (status, found) = server
            .call_in(
                workspace,
                Method::POST,
                "/ajax-api/2.0/mlflow/experiments/search-datasets",
                Some(json!({"experiment_ids": [d_experiment]})),
            )
            .await;
        assert_eq!(status, 200, "{found}");
        let count = found["dataset_summaries"].as_array().map_or(0, Vec::len);
        assert_eq!(count, expected, "datasets seen from {workspace:?}: {found}");
    }
}
