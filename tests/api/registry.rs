//! The registry endpoints over real HTTP: methods, shapes, error codes, and ownership refusals
//! as a client sees them.

use ferroflow::store::registry::{OwnedField, Owner, Ownership, RegistryRef};
use reqwest::Method;
use serde_json::{Value, json};

use super::{TestServer, start};

on_both!(
    registry_wire_shapes_match_mlflow,
    registry_errors_carry_mlflow_codes,
    owned_field_is_refused_through_the_api_and_unowned_accepted,
);

const API: &str = "/api/2.0/mlflow";

impl TestServer {
    /// Any method with a JSON body (the registry sends DELETE and PATCH with bodies).
    async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{API}/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

async fn ok(server: &TestServer, method: Method, path: &str, body: Value) -> Value {
    let (status, body) = server.call(method, path, body).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn registry_wire_shapes_match_mlflow(server: TestServer) {
    let created = ok(
        &server,
        Method::POST,
        "registered-models/create",
        json!({"name": "wire", "tags": [{"key": "team", "value": "a"}]}),
    )
    .await;
    let model = &created["registered_model"];
    assert_eq!(model["name"], "wire");
    assert!(model["creation_timestamp"].is_i64());
    assert_eq!(model["tags"], json!([{"key": "team", "value": "a"}]));
    assert!(model.get("description").is_none() && model.get("latest_versions").is_none());

    let version = ok(
        &server,
        Method::POST,
        "model-versions/create",
        json!({"name": "wire", "source": "s3://bucket/model"}),
    )
    .await;
    let version = &version["model_version"];
    // MLflow sends description, run_id and run_link even when empty; version is a string.
    assert_eq!(version["version"], "1");
    assert_eq!(version["current_stage"], "None");
    assert_eq!(version["status"], "READY");
    assert_eq!(version["description"], "");
    assert_eq!(version["run_id"], "");
    assert_eq!(version["run_link"], "");
    assert!(version["last_updated_timestamp"].is_i64());

    // The version is a string field: a number is refused, as MLflow does. GET with a query
    // string.
    let (status, refused) = server
        .call(
            Method::POST,
            "registered-models/alias",
            json!({"name": "wire", "alias": "champion", "version": 1}),
        )
        .await;
    assert_eq!(
        (status, &refused["error_code"]),
        (400, &json!("INVALID_PARAMETER_VALUE"))
    );
    ok(
        &server,
        Method::POST,
        "registered-models/alias",
        json!({"name": "wire", "alias": "champion", "version": "1"}),
    )
    .await;
    let (status, by_alias) = server
        .get(&format!(
            "{API}/registered-models/alias?name=wire&alias=champion"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_alias["model_version"]["aliases"], json!(["champion"]));
    let (_, got) = server
        .get(&format!("{API}/registered-models/get?name=wire"))
        .await;
    assert_eq!(
        got["registered_model"]["aliases"],
        json!([{"alias": "champion", "version": "1"}])
    );
    assert_eq!(
        got["registered_model"]["latest_versions"][0]["version"],
        "1"
    );

    let moved = ok(
        &server,
        Method::POST,
        "model-versions/transition-stage",
        json!({"name": "wire", "version": "1", "stage": "staging", "archive_existing_versions": false}),
    )
    .await;
    assert_eq!(moved["model_version"]["current_stage"], "Staging");
    for method in [Method::POST, Method::GET] {
        let path = if method == Method::GET {
            "registered-models/get-latest-versions?name=wire&stages=Staging".to_owned()
        } else {
            "registered-models/get-latest-versions".to_owned()
        };
        let latest = ok(
            &server,
            method,
            &path,
            json!({"name": "wire", "stages": ["Staging"]}),
        )
        .await;
        assert_eq!(latest["model_versions"][0]["version"], "1");
    }
    let updated = ok(
        &server,
        Method::PATCH,
        "model-versions/update",
        json!({"name": "wire", "version": "1", "description": "first"}),
    )
    .await;
    assert_eq!(updated["model_version"]["description"], "first");
    let updated = ok(
        &server,
        Method::PATCH,
        "registered-models/update",
        json!({"name": "wire", "description": "the model"}),
    )
    .await;
    assert_eq!(updated["registered_model"]["description"], "the model");
    let (_, uri) = server
        .get(&format!(
            "{API}/model-versions/get-download-uri?name=wire&version=1"
        ))
        .await;
    assert_eq!(uri, json!({"artifact_uri": "s3://bucket/model"}));

    // Searches are GETs with repeated keys; an empty result is `{}`.
    let (_, found) = server
        .get(&format!(
            "{API}/registered-models/search?filter=name%3D%27wire%27+AND+tag.%60mlflow.prompt.is_prompt%60+%21%3D+%27true%27&max_results=5&order_by=name+ASC"
        ))
        .await;
    assert_eq!(found["registered_models"][0]["name"], "wire");
    let (_, none) = server
        .get(&format!(
            "{API}/model-versions/search?filter=name%3D%27nothing%27"
        ))
        .await;
    assert_eq!(none, json!({}));

    // DELETE calls carry their arguments in a JSON body and answer `{}`.
    for (path, body) in [
        (
            "registered-models/alias",
            json!({"name": "wire", "alias": "champion"}),
        ),
        (
            "registered-models/delete-tag",
            json!({"name": "wire", "key": "team"}),
        ),
        (
            "model-versions/delete",
            json!({"name": "wire", "version": "1"}),
        ),
        ("registered-models/delete", json!({"name": "wire"})),
    ] {
        assert_eq!(ok(&server, Method::DELETE, path, body).await, json!({}));
    }
    // The UI's prefix serves the same routes.
    let (status, _) = server
        .get("/ajax-api/2.0/mlflow/registered-models/search")
        .await;
    assert_eq!(status, 200);
}

async fn registry_errors_carry_mlflow_codes(server: TestServer) {
    let expect = |status: u16, code: &str, response: (u16, Value)| {
        assert_eq!(response.0, status, "{}", response.1);
        assert_eq!(response.1["error_code"], code, "{}", response.1);
    };
    expect(
        404,
        "RESOURCE_DOES_NOT_EXIST",
        server
            .get(&format!("{API}/registered-models/get?name=missing"))
            .await,
    );
    expect(
        400,
        "INVALID_PARAMETER_VALUE",
        server
            .call(Method::POST, "registered-models/create", json!({}))
            .await,
    );
    ok(
        &server,
        Method::POST,
        "registered-models/create",
        json!({"name": "dup"}),
    )
    .await;
    expect(
        400,
        "RESOURCE_ALREADY_EXISTS",
        server
            .call(
                Method::POST,
                "registered-models/create",
                json!({"name": "dup"}),
            )
            .await,
    );
    ok(
        &server,
        Method::POST,
        "model-versions/create",
        json!({"name": "dup", "source": "s3://b/x"}),
    )
    .await;
    expect(
        400,
        "INVALID_PARAMETER_VALUE",
        server
            .call(
                Method::POST,
                "registered-models/alias",
                json!({"name": "dup", "alias": "latest", "version": "1"}),
            )
            .await,
    );
    expect(
        400,
        "INVALID_PARAMETER_VALUE",
        server
            .call(
                Method::POST,
                "model-versions/transition-stage",
                json!({"name": "dup", "version": "1", "stage": "bogus"}),
            )
            .await,
    );
    // MLflow answers 500 here; a client mistake must not be retried, so this is a 400.
    expect(
        400,
        "INVALID_PARAMETER_VALUE",
        server
            .call(
                Method::POST,
                "model-versions/transition-stage",
                json!({"name": "dup", "version": "1", "stage": "Archived", "archive_existing_versions": true}),
            )
            .await,
    );
    expect(
        400,
        "INVALID_PARAMETER_VALUE",
        server
            .get(&format!("{API}/model-versions/get?name=dup&version=x"))
            .await,
    );
    expect(
        404,
        "RESOURCE_DOES_NOT_EXIST",
        server
            .get(&format!("{API}/model-versions/get?name=dup&version=7"))
            .await,
    );
    expect(
        400,
        "INVALID_PARAMETER_VALUE",
        server
            .get(&format!(
                "{API}/registered-models/alias?name=dup&alias=unknown"
            ))
            .await,
    );
    expect(
        400,
        "INVALID_PARAMETER_VALUE",
        server
            .get(&format!("{API}/registered-models/search?max_results=1001"))
            .await,
    );
    // Search is a GET in MLflow's protos; other methods are not routes.
    let (status, _) = server
        .call(Method::POST, "registered-models/search", json!({}))
        .await;
    assert_eq!(status, 405);
}

async fn owned_field_is_refused_through_the_api_and_unowned_accepted(server: TestServer) {
    ok(
        &server,
        Method::POST,
        "registered-models/create",
        json!({"name": "churn"}),
    )
    .await;
    ok(
        &server,
        Method::POST,
        "model-versions/create",
        json!({"name": "churn", "source": "s3://b/churn"}),
    )
    .await;
    let owner = Owner {
        namespace: "team-a".into(),
        kind: "RegisteredModel".into(),
        name: "churn".into(),
        uid: "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab".into(),
    };
    server
        .store
        .set_owner(
            RegistryRef::Model("churn"),
            &Ownership {
                owner,
                fields: [OwnedField::Aliases].into(),
            },
        )
        .await
        .unwrap();
    let (status, refused) = server
        .call(
            Method::POST,
            "registered-models/alias",
            json!({"name": "churn", "alias": "champion", "version": "1"}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error_code"], "PERMISSION_DENIED");
    assert_eq!(
        refused["message"],
        "registered model 'churn' field 'aliases' is managed by RegisteredModel team-a/churn \
         (uid 0f1e2d3c-aaaa-bbbb-cccc-1234567890ab): change it there (in git)"
    );
    // Fields the resource does not declare stay writable.
    ok(
        &server,
        Method::POST,
        "registered-models/set-tag",
        json!({"name": "churn", "key": "team", "value": "a"}),
    )
    .await;
    // The owner shows as a tag (MLflow's UI shows tags), which the API may not overwrite.
    let read = ok(
        &server,
        Method::GET,
        "registered-models/get?name=churn",
        json!({}),
    )
    .await;
    assert_eq!(
        read["registered_model"]["tags"],
        json!([{"key": "ferroflow.owner", "value": "team-a/RegisteredModel/churn"},
               {"key": "team", "value": "a"}])
    );
    let (status, refused) = server
        .call(
            Method::POST,
            "registered-models/set-tag",
            json!({"name": "churn", "key": "ferroflow.owner", "value": "team-b/RegisteredModel/mine"}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|message| message.contains("managed by RegisteredModel team-a/churn")),
        "{refused}"
    );
    let updated = ok(
        &server,
        Method::PATCH,
        "registered-models/update",
        json!({"name": "churn", "description": "managed elsewhere, described here"}),
    )
    .await;
    assert_eq!(
        updated["registered_model"]["description"],
        "managed elsewhere, described here"
    );
    let (status, _) = server
        .call(
            Method::DELETE,
            "registered-models/delete",
            json!({"name": "churn"}),
        )
        .await;
    assert_eq!(status, 403);
}
