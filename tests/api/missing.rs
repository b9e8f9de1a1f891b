//! What a client reads when the object it names does not exist: for each kind of object the
//! whole error body (status, code, message), byte for byte as MLflow answers it.

use serde_json::json;

use super::{TestServer, create_run, start};

on_both!(missing_objects_answer_mlflow_error_bodies);

const API: &str = "/api/2.0/mlflow";
const MISSING_RUN: &str = "0123456789abcdef0123456789abcdef";

async fn missing_objects_answer_mlflow_error_bodies(server: TestServer) {
    let (experiment_id, run_id) = create_run(&server).await;
    let model = format!("model-{}", uuid::Uuid::new_v4().simple());
    let (status, body) = server
        .post(
            &format!("{API}/registered-models/create"),
            json!({"name": model}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let not_found = |message: String| {
        (
            404,
            json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": message}),
        )
    };
    let cases = [
        (
            server
                .get(&format!("{API}/experiments/get?experiment_id=999999"))
                .await,
            not_found("No Experiment with id=999999 exists".into()),
        ),
        (
            server
                .get(&format!(
                    "{API}/experiments/get-by-name?experiment_name=no-such-experiment"
                ))
                .await,
            not_found("Could not find experiment with name 'no-such-experiment'".into()),
        ),
        (
            server
                .get(&format!("{API}/runs/get?run_id={MISSING_RUN}"))
                .await,
            not_found(format!("Run with id={MISSING_RUN} not found")),
        ),
        (
            server
                .post(
                    &format!("{API}/runs/delete-tag"),
                    json!({"run_id": run_id, "key": "absent"}),
                )
                .await,
            not_found(format!("No tag with name: absent in run with id {run_id}")),
        ),
        (
            server
                .post(
                    &format!("{API}/experiments/delete-experiment-tag"),
                    json!({"experiment_id": experiment_id, "key": "absent"}),
                )
                .await,
            not_found(format!(
                "No tag with name: absent in experiment with id {experiment_id}"
            )),
        ),
        (
            server
                .get(&format!("{API}/registered-models/get?name=no-such-model"))
                .await,
            not_found("Registered Model with name=no-such-model not found".into()),
        ),
        (
            server
                .get(&format!("{API}/model-versions/get?name={model}&version=9"))
                .await,
            not_found(format!("Model Version (name={model}, version=9) not found")),
        ),
        (
            server
                .get(&format!(
                    "{API}/registered-models/alias?name={model}&alias=absent"
                ))
                .await,
            (
                400,
                json!({
                    "error_code": "INVALID_PARAMETER_VALUE",
                    "message": "Registered model alias absent not found.",
                }),
            ),
        ),
        (
            server
                .get(&format!(
                    "{API}/registered-models/alias?name={model}&alias=latest"
                ))
                .await,
            not_found(format!("Latest version not found for model {model}.")),
        ),
        (
            server
                .get(&format!("{API}/logged-models/m-{MISSING_RUN}"))
                .await,
            not_found(format!("Logged model with ID 'm-{MISSING_RUN}' not found.")),
        ),
    ];
    for (index, (answered, expected)) in cases.into_iter().enumerate() {
        assert_eq!(answered, expected, "case {index}");
    }
}
