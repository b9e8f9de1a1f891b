//! The experiment and run calls `ferroflow run` makes: experiments by name, create/get/update
//! a run, log params and tags.

use serde::Deserialize;
use serde_json::json;

use super::{ClientError, MlflowClient};

/// MLflow's limit on params (and on tags) in one log-batch request.
const BATCH_LIMIT: usize = 100;

/// A run as the server reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub status: String,
}

impl MlflowClient {
    /// The id of the experiment with this name, if there is one.
    pub async fn experiment_id_by_name(&self, name: &str) -> Result<Option<String>, ClientError> {
        match self
            .get(
                "api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", name)],
            )
            .await
        {
            Ok(answer) => Ok(answer["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_owned)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates an experiment; its id.
    pub async fn create_experiment(&self, name: &str) -> Result<String, ClientError> {
        let path = "api/2.0/mlflow/experiments/create";
        let answer = self.post(path, json!({ "name": name })).await?;
        self.decode(path, answer["experiment_id"].clone())
    }

    /// Creates a run with these tags, started now.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<RunInfo, ClientError> {
        let path = "api/2.0/mlflow/runs/create";
        let mut body = json!({
            "experiment_id": experiment_id,
            "start_time": now_millis(),
            "tags": tags.iter().map(|(key, value)| json!({"key": key, "value": value})).collect::<Vec<_>>(),
        });
        if let Some(name) = run_name {
            body["run_name"] = json!(name);
        }
        let answer = self.post(path, body).await?;
        self.decode(path, answer["run"]["info"].clone())
    }

    /// A run's info.
    pub async fn get_run(&self, run_id: &str) -> Result<RunInfo, ClientError> {
        let path = "api/2.0/mlflow/runs/get";
        let answer = self.get(path, &[("run_id", run_id)]).await?;
        self.decode(path, answer["run"]["info"].clone())
    }

    /// Logs params and tags in one request (MLflow's limits: 100 params, 100 tags).
    pub async fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), ClientError> {
        let pairs = |items: &[(String, String)]| {
            items
                .iter()
                .map(|(key, value)| json!({"key": key, "value": value}))
                .collect::<Vec<_>>()
        };
        let requests = params.len().max(tags.len()).div_ceil(BATCH_LIMIT).max(1);
        for index in 0..requests {
            let body = json!({
                "run_id": run_id,
                "params": pairs(chunk(params, index, BATCH_LIMIT)),
                "tags": pairs(chunk(tags, index, BATCH_LIMIT)),
            });
            self.post("api/2.0/mlflow/runs/log-batch", body).await?;
        }
        Ok(())
    }

    /// Sets a run's status (`RUNNING`, `FINISHED`, `FAILED`, `KILLED`); ends it unless RUNNING.
    pub async fn set_status(&self, run_id: &str, status: &str) -> Result<(), ClientError> {
        let mut body = json!({"run_id": run_id, "status": status});
        if status != "RUNNING" {
            body["end_time"] = json!(now_millis());
        }
        self.post("api/2.0/mlflow/runs/update", body).await?;
        Ok(())
    }
}

/// The `index`th slice of at most `size` items (empty past the end).
fn chunk(items: &[(String, String)], index: usize, size: usize) -> &[(String, String)] {
    let start = (index * size).min(items.len());
    &items[start..(start + size).min(items.len())]
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
