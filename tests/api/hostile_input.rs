//! Input a client should not send (issue #10): NUL characters and ids of the wrong JSON type
//! are a 400 INVALID_PARAMETER_VALUE naming the field, alike on both backends, and store
//! nothing.

use serde_json::{Value, json};

use super::{TestServer, create_run, start};

on_both!(
    nul_characters_are_refused_naming_the_field,
    numbers_for_string_fields_are_refused_as_mlflow_does,
    a_chunked_body_over_the_limit_is_too_large_and_writes_nothing,
);

const API: &str = "/api/2.0/mlflow";
const NUL: &str = "a\u{0}b";

async fn assert_invalid(answer: (u16, Value), field: &str) {
    let (status, body) = answer;
    assert_eq!(status, 400, "{field}: {body}");
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("'{field}'")),
        "the message names {field}: {message}"
    );
}

async fn nul_characters_are_refused_naming_the_field(server: TestServer) {
    let (experiment_id, run_id) = create_run(&server).await;
    let posts = [
        ("experiments/create", json!({"name": NUL}), "name"),
        (
            "experiments/update",
            json!({"experiment_id": experiment_id, "new_name": NUL}),
            "new_name",
        ),
        (
            "experiments/set-experiment-tag",
            json!({"experiment_id": experiment_id, "key": "note", "value": NUL}),
            "value",
        ),
        (
            "runs/create",
            json!({"experiment_id": experiment_id, "run_name": NUL}),
            "run_name",
        ),
        (
            "runs/log-parameter",
            json!({"run_id": run_id, "key": "p", "value": NUL}),
            "value",
        ),
        (
            "runs/set-tag",
            json!({"run_id": run_id, "key": "t", "value": NUL}),
            "value",
        ),
        (
            "runs/log-batch",
            json!({"run_id": run_id, "params": [{"key": "ok", "value": "1"}, {"key": "p", "value": NUL}]}),
            "params[1].value",
        ),
        (
            "runs/search",
            json!({"experiment_ids": [experiment_id], "filter": format!("params.p = '{NUL}'")}),
            "filter",
        ),
        ("registered-models/create", json!({"name": NUL}), "name"),
        (
            "registered-models/create",
            json!({"name": "m", "description": NUL}),
            "description",
        ),
    ];
    for (path, body, field) in posts {
        assert_invalid(server.post(&format!("{API}/{path}"), body).await, field).await;
    }
    let gets = [
        ("registered-models/get?name=%00", "name"),
        (
            "experiments/get-by-name?experiment_name=a%00",
            "experiment_name",
        ),
        ("registered-models/search?filter=name%3D%27%00%27", "filter"),
    ];
    for (path_and_query, field) in gets {
        assert_invalid(server.get(&format!("{API}/{path_and_query}")).await, field).await;
    }
    // A NUL in the path (logged models take their id from it) is refused too.
    let (status, body) = server.get(&format!("{API}/logged-models/m-%00")).await;
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!("INVALID_PARAMETER_VALUE")),
        "{body}"
    );

    // Nothing of it was stored: the batch's other param neither.
    let (_, run) = server.get(&format!("{API}/runs/get?run_id={run_id}")).await;
    assert!(run["run"]["data"].get("params").is_none(), "{run}");
    let (_, models) = server.get(&format!("{API}/registered-models/search")).await;
    assert_eq!(models, json!({}));
}

async fn numbers_for_string_fields_are_refused_as_mlflow_does(server: TestServer) {
    let (_, run_id) = create_run(&server).await;
    let (status, body) = server
        .post(&format!("{API}/runs/create"), json!({"experiment_id": 0}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        json!({
            "error_code": "INVALID_PARAMETER_VALUE",
            "message": "Invalid value 0 for parameter 'experiment_id' supplied:  Hint: Value was of type 'int'. \
                        See the API docs for more information about request parameters."
        })
    );
    let (status, created) = server
        .post(
            &format!("{API}/registered-models/create"),
            json!({"name": "typed"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    server
        .post(
            &format!("{API}/model-versions/create"),
            json!({"name": "typed", "source": "s3://bucket/m"}),
        )
        .await;
    let refused = [
        (
            "experiments/update",
            json!({"experiment_id": 0, "new_name": "x"}),
            "experiment_id",
        ),
        (
            "experiments/set-experiment-tag",
            json!({"experiment_id": 0, "key": "a", "value": "b"}),
            "experiment_id",
        ),
        (
            "runs/log-parameter",
            json!({"run_id": run_id, "key": "k", "value": 5}),
            "value",
        ),
        (
            "runs/set-tag",
            json!({"run_id": run_id, "key": "k", "value": 5}),
            "value",
        ),
        ("runs/delete", json!({"run_id": 5}), "run_id"),
        (
            "registered-models/alias",
            json!({"name": "typed", "alias": "a", "version": 1}),
            "version",
        ),
        (
            "model-versions/set-tag",
            json!({"name": "typed", "version": 1, "key": "a", "value": "b"}),
            "version",
        ),
        (
            "model-versions/transition-stage",
            json!({"name": "typed", "version": 1, "stage": "Staging", "archive_existing_versions": false}),
            "version",
        ),
        (
            "logged-models",
            json!({"experiment_id": 0}),
            "experiment_id",
        ),
    ];
    for (path, body, field) in refused {
        let (status, answer) = server.post(&format!("{API}/{path}"), body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.starts_with("Invalid value ")
                && message.contains(&format!("for parameter '{field}' supplied:")),
            "{path}: {message}"
        );
    }
    // Enums still take their number, as protobuf JSON allows.
    let (status, body) = server
        .post(
            &format!("{API}/runs/update"),
            json!({"run_id": run_id, "status": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_info"]["status"], "FINISHED");
}

/// A body sent in chunks (no Content-Length) over the 16 MiB limit: 413, as for one that
/// declares its length, and nothing of it is stored.
async fn a_chunked_body_over_the_limit_is_too_large_and_writes_nothing(server: TestServer) {
    let (_, run_id) = create_run(&server).await;
    // A valid log-batch whose tag value pads it to 17 MiB, sent as 1 MiB chunks.
    let padding = "x".repeat(17 * 1024 * 1024);
    let body = json!({"run_id": run_id, "tags": [{"key": "big", "value": padding}]}).to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(1024 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let response = server
        .client
        .post(format!("{}{API}/runs/log-batch", server.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error_code"], "INVALID_PARAMETER_VALUE", "{answer}");
    let (_, run) = server.get(&format!("{API}/runs/get?run_id={run_id}")).await;
    let tags = run["run"]["data"]["tags"].as_array().into_iter().flatten();
    assert!(!tags.into_iter().any(|tag| tag["key"] == "big"), "{run}");
}
