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
