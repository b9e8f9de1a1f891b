//! Runs: lifecycle, params, tags, metrics (log-batch is the hot path), dataset inputs, and
//! search with MLflow's filter grammar. This file holds the types and reads; `writes` and
//! `search` the rest.

mod group_commit;
mod search;
mod tagged;
mod writes;

pub(super) use group_commit::GroupCommit;
pub use group_commit::GroupCommitStats;

pub use super::values::{Metric, ModelOutput};
pub use tagged::TERMINAL_RUN_STATUSES;

use std::collections::HashMap;

use super::search::StoreRow;
use super::validation;
use super::{Entity, Error, KeyValue, LIFECYCLE_ACTIVE, Pool, Result, Store, ViewType, with_pool};

/// The tag MLflow keeps in sync with the run's name.
pub const RUN_NAME_TAG: &str = "mlflow.runName";
/// The tag naming who ran the run (MLflow's client sends the same value as `user_id`).
pub const USER_TAG: &str = "mlflow.user";
/// Largest page of runs a search may ask for.
pub const MAX_RUNS_PAGE: i64 = 50_000;
/// Run statuses MLflow knows.
pub const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// A run's identity and lifecycle.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunInfo {
    pub run_uuid: String,
    #[sqlx(rename = "name")]
    pub run_name: String,
    pub experiment_id: i64,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub lifecycle_stage: String,
    pub artifact_uri: String,
}

/// A dataset as logged with `mlflow.log_input`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub name: String,
    pub digest: String,
    pub source_type: String,
    pub source: String,
    pub schema: Option<String>,
    pub profile: Option<String>,
}

/// A dataset used by a run, with the input's tags (e.g. `mlflow.data.context`).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetInput {
    pub tags: Vec<KeyValue>,
    pub dataset: Dataset,
}

/// A run with its latest metrics, params, tags and inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub info: RunInfo,
    pub metrics: Vec<Metric>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
    pub inputs: Vec<DatasetInput>,
    /// Logged models the run consumed.
    pub model_inputs: Vec<String>,
    /// Logged models the run produced.
    pub model_outputs: Vec<ModelOutput>,
}

/// What `runs/create` asks.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub experiment_id: i64,
    pub user_id: String,
    pub run_name: Option<String>,
    pub start_time: Option<i64>,
    pub tags: Vec<KeyValue>,
}

/// What `runs/search` asks.
#[derive(Debug, Clone, Default)]
pub struct RunSearch {
    pub experiment_ids: Vec<i64>,
    pub filter: String,
    pub view_type: ViewType,
    pub max_results: i64,
    pub order_by: Vec<String>,
    pub page_token: String,
}

const RUN_COLUMNS: &str = "r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, r.lifecycle_stage, r.artifact_uri";

#[derive(sqlx::FromRow)]
pub(super) struct RunKeyValueRow {
    run_uuid: String,
    key: String,
    value: String,
}

/// A params (kind 0) or tags (kind 1) row of [`Store::load_runs`].
#[derive(sqlx::FromRow)]
struct KindKeyValueRow {
    kind: i64,
    run_uuid: String,
    key: String,
    value: String,
}

/// The ids of a page of runs, bound as one parameter: an array on Postgres, a JSON array on
/// SQLite (read with json_each; no limit on the number of bound variables).
struct RunIds {
    list: Vec<String>,
    json: String,
}

impl RunIds {
    fn new(list: Vec<String>) -> Result<Self> {
        let json = serde_json::to_string(&list)
            .map_err(|e| Error::Database(sqlx::Error::Encode(Box::new(e))))?;
        Ok(Self { list, json })
    }
}

/// `{ids}` of [`Store::fetch_for_runs`] on SQLite.
const SQLITE_IDS_PARAMETER: &str = "IN (SELECT value FROM json_each($1))";

#[derive(sqlx::FromRow)]
struct LatestMetricRow {
    run_uuid: String,
    key: String,
    step: i64,
    timestamp: i64,
    value: f64,
    is_nan: bool,
}

#[derive(sqlx::FromRow)]
struct InputRow {
    run_uuid: String,
    dataset_uuid: String,
    name: String,
    digest: String,
    source_type: String,
    source: String,
    schema: Option<String>,
    profile: Option<String>,
}

#[derive(sqlx::FromRow)]
struct InputTagRow {
    run_uuid: String,
    dataset_uuid: String,
    key: String,
    value: String,
}

impl Store {
    /// Reads a run with its data; deleted runs are returned too (lifecycle_stage `deleted`).
    #[tracing::instrument(name = "store.get_run", skip_all)]
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let info = self.get_run_info(run_id).await?;
        Ok(self.load_runs(vec![info]).await?.remove(0))
    }

    /// Reads a run's info only.
    #[tracing::instrument(name = "store.get_run_info", skip_all)]
    pub async fn get_run_info(&self, run_id: &str) -> Result<RunInfo> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_uuid = $1 AND r.experiment_id IN \
             (SELECT e.experiment_id FROM experiments e WHERE e.workspace = $2)"
        );
        let info = with_pool!(self, pool => sqlx::query_as::<_, RunInfo>(&sql)
            .bind(run_id)
            .bind(self.workspace())
            .fetch_optional(pool)
            .await)?;
        info.ok_or_else(|| run_not_found(run_id))
    }

    /// A run that must exist and be active, for writes.
    pub(super) async fn get_active_run(&self, run_id: &str) -> Result<RunInfo> {
        let info = self.get_run_info(run_id).await?;
        if info.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(run_not_active(run_id, &info.lifecycle_stage));
        }
        Ok(info)
    }

    /// Runs `sql`, in which every `{ids}` stands for "is one of `ids`" (one bound parameter,
    /// `$1`), and reads its rows.
    async fn fetch_for_runs<T>(&self, ids: &RunIds, sql: &str) -> Result<Vec<T>>
    where
        T: StoreRow,
    {
        Ok(match &self.pool {
            Pool::Postgres(pool) => {
                let sql = sql.replace("{ids}", "= ANY($1)");
                sqlx::query_as::<_, T>(&sql)
                    .bind(&ids.list)
                    .fetch_all(pool)
                    .await?
            }
            Pool::Sqlite(pool) => {
                let sql = sql.replace("{ids}", SQLITE_IDS_PARAMETER);
                sqlx::query_as::<_, T>(&sql)
                    .bind(&ids.json)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// The params (kind 0) and tags (kind 1) of the runs, params first, each by key. On SQLite
    /// as one JSON document: sqlx-sqlite hands each row over from its worker thread on its
    /// own, and for a page of 1000 runs (~9000 params and tags) those hand-overs cost several
    /// times what the query does.
    async fn fetch_key_values_for_runs(&self, ids: &RunIds) -> Result<Vec<KindKeyValueRow>> {
        const KEY_VALUES: &str = "SELECT CAST(0 AS BIGINT) AS kind, run_uuid, key, value FROM params WHERE run_uuid {ids} \
             UNION ALL \
             SELECT CAST(1 AS BIGINT) AS kind, run_uuid, key, value FROM tags WHERE run_uuid {ids}";
        match &self.pool {
            Pool::Postgres(_) => {
                self.fetch_for_runs(ids, &format!("{KEY_VALUES} ORDER BY kind, key"))
                    .await
            }
            Pool::Sqlite(pool) => {
                let sql = format!(
                    "SELECT json_group_array(json_array(kind, run_uuid, key, value) ORDER BY kind, key) \
                     FROM ({})",
                    KEY_VALUES.replace("{ids}", SQLITE_IDS_PARAMETER)
                );
                let json: String = sqlx::query_scalar(&sql)
                    .bind(&ids.json)
                    .fetch_one(pool)
                    .await?;
                let rows: Vec<(i64, String, String, String)> = serde_json::from_str(&json)
                    .map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
                Ok(rows
                    .into_iter()
                    .map(|(kind, run_uuid, key, value)| KindKeyValueRow {
                        kind,
                        run_uuid,
                        key,
                        value,
                    })
                    .collect())
            }
        }
    }

    /// Attaches params, tags, latest metrics and inputs to run infos, keeping their order.
    ///
    /// Five statements, each with the run ids bound as one parameter (a Postgres array, a JSON
    /// array on SQLite), run concurrently on the pool.
    pub(super) async fn load_runs(&self, infos: Vec<RunInfo>) -> Result<Vec<Run>> {
        if infos.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = infos.iter().map(|info| info.run_uuid.clone()).collect();
        let ids = RunIds::new(ids)?;
        let (key_values, metrics, inputs, input_tags, models) = futures::try_join!(
            self.fetch_key_values_for_runs(&ids),
            self.fetch_for_runs::<LatestMetricRow>(
                &ids,
                "SELECT run_uuid, key, step, timestamp, value, is_nan FROM latest_metrics \
                 WHERE run_uuid {ids} ORDER BY key",
            ),
            self.fetch_for_runs::<InputRow>(
                &ids,
                "SELECT i.run_uuid, d.dataset_uuid, d.name, d.digest, d.source_type, d.source, d.schema, d.profile \
                 FROM run_inputs i JOIN datasets d ON d.dataset_uuid = i.dataset_uuid \
                 WHERE i.run_uuid {ids} ORDER BY d.name, d.digest",
            ),
            self.fetch_for_runs::<InputTagRow>(
                &ids,
                "SELECT run_uuid, dataset_uuid, key, value FROM run_input_tags \
                 WHERE run_uuid {ids} ORDER BY key",
            ),
            // outputs (with their step) first, then inputs (step NULL)
            self.fetch_for_runs::<(i64, String, String, Option<i64>)>(
                &ids,
                "SELECT CAST(0 AS BIGINT) AS kind, run_uuid, model_id, step FROM run_model_outputs \
                 WHERE run_uuid {ids} \
                 UNION ALL \
                 SELECT CAST(1 AS BIGINT) AS kind, run_uuid, model_id, CAST(NULL AS BIGINT) AS step \
                 FROM run_model_inputs WHERE run_uuid {ids} \
                 ORDER BY kind, step, model_id",
            ),
        )?;
        let mut params = Vec::new();
        let mut tags = Vec::new();
        for row in key_values {
            let target = if row.kind == 0 {
                &mut params
            } else {
                &mut tags
            };
            target.push(RunKeyValueRow {
                run_uuid: row.run_uuid,
                key: row.key,
                value: row.value,
            });
        }
        let mut model_outputs = Vec::new();
        let mut model_inputs = Vec::new();
        for (kind, run_uuid, model_id, step) in models {
            match step {
                Some(step) if kind == 0 => model_outputs.push((run_uuid, model_id, step)),
                _ => model_inputs.push((run_uuid, model_id)),
            }
        }
        let mut outputs_by_run: HashMap<String, Vec<ModelOutput>> = HashMap::new();
        for (run_uuid, model_id, step) in model_outputs {
            outputs_by_run
                .entry(run_uuid)
                .or_default()
                .push(ModelOutput { model_id, step });
        }
        let mut model_inputs_by_run: HashMap<String, Vec<String>> = HashMap::new();
        for (run_uuid, model_id) in model_inputs {
            model_inputs_by_run
                .entry(run_uuid)
                .or_default()
                .push(model_id);
        }
        let mut params_by_run = group_key_values(params);
        let mut tags_by_run = group_key_values(tags);
        let mut metrics_by_run: HashMap<String, Vec<Metric>> = HashMap::new();
        for row in metrics {
            let value = validation::read_metric_value(row.value, row.is_nan);
            metrics_by_run
                .entry(row.run_uuid)
                .or_default()
                .push(Metric::new(row.key, value, row.timestamp, row.step));
        }
        let mut input_tags_by_input: HashMap<(String, String), Vec<KeyValue>> = HashMap::new();
        for row in input_tags {
            input_tags_by_input
                .entry((row.run_uuid, row.dataset_uuid))
                .or_default()
                .push(KeyValue::new(row.key, row.value));
        }
        let mut inputs_by_run: HashMap<String, Vec<DatasetInput>> = HashMap::new();
        for row in inputs {
            let tags = input_tags_by_input
                .remove(&(row.run_uuid.clone(), row.dataset_uuid))
                .unwrap_or_default();
            inputs_by_run
                .entry(row.run_uuid)
                .or_default()
                .push(DatasetInput {
                    tags,
                    dataset: Dataset {
                        name: row.name,
                        digest: row.digest,
                        source_type: row.source_type,
                        source: row.source,
                        schema: row.schema,
                        profile: row.profile,
                    },
                });
        }
        Ok(infos
            .into_iter()
            .map(|info| Run {
                metrics: metrics_by_run.remove(&info.run_uuid).unwrap_or_default(),
                params: params_by_run.remove(&info.run_uuid).unwrap_or_default(),
                tags: tags_by_run.remove(&info.run_uuid).unwrap_or_default(),
                inputs: inputs_by_run.remove(&info.run_uuid).unwrap_or_default(),
                model_inputs: model_inputs_by_run
                    .remove(&info.run_uuid)
                    .unwrap_or_default(),
                model_outputs: outputs_by_run.remove(&info.run_uuid).unwrap_or_default(),
                info,
            })
            .collect())
    }
}

/// A run a write found, as the database has it (locked against deletion for the write).
#[derive(sqlx::FromRow)]
pub(in crate::store) struct FoundRun {
    pub(in crate::store) run_uuid: String,
    pub(in crate::store) lifecycle_stage: String,
    pub(in crate::store) workspace: String,
}

impl FoundRun {
    /// Whether the run accepts writes from `workspace`.
    pub(in crate::store) fn writable_by(&self, workspace: &str) -> bool {
        self.workspace == workspace && self.lifecycle_stage == LIFECYCLE_ACTIVE
    }
}

/// The answer of a write to `run_id` from `workspace`, given the run it found (`None`: no such
/// run): the run must be in that workspace and active.
fn check_writable(run_id: &str, workspace: &str, found: Option<&FoundRun>) -> Result<()> {
    match found {
        Some(run) if run.workspace == workspace => {
            if run.lifecycle_stage != LIFECYCLE_ACTIVE {
                return Err(run_not_active(run_id, &run.lifecycle_stage));
            }
            Ok(())
        }
        _ => Err(run_not_found(run_id)),
    }
}

/// MLflow's answer for a run that is not there (or not in the store's workspace).
fn run_not_found(run_id: &str) -> Error {
    Error::not_found(Entity::Run, format!("Run with id={run_id} not found"))
}

/// MLflow's answer for a write to a run that is not active.
fn run_not_active(run_id: &str, lifecycle_stage: &str) -> Error {
    Error::Invalid(format!(
        "The run {run_id} must be in the 'active' state. Current state is {lifecycle_stage}."
    ))
}

fn group_key_values(rows: Vec<RunKeyValueRow>) -> HashMap<String, Vec<KeyValue>> {
    let mut grouped: HashMap<String, Vec<KeyValue>> = HashMap::new();
    for row in rows {
        grouped
            .entry(row.run_uuid)
            .or_default()
            .push(KeyValue::new(row.key, row.value));
    }
    grouped
}
