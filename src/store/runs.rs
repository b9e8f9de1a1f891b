//! Runs: lifecycle, params, tags, metrics (log-batch is the hot path), dataset inputs,
//! and search with MLflow's filter grammar.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::error::is_unique_violation;
use super::experiments::{push_comparison, push_key_value_clause};
use super::filter::{self, Attribute, Clause, Comparator, DatasetField, Key, SearchEntity};
use super::logged_models::ModelOutput;
use super::metrics::{RepeatedPoints, WriteMetrics};
use super::search::{
    self, SortKey, SortKind, SqlBuilder, SqlValue, StoreRow, TokenValue, bind_values,
};
use super::validation::{self, KeyKind, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH};
use super::{
    BeginWrite, Entity, Error, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, Page, Pool, Result,
    Store, ViewType, now_millis, with_pool,
};

/// The tag MLflow keeps in sync with the run's name.
pub const RUN_NAME_TAG: &str = "mlflow.runName";
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

/// One metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
    /// Filled in where MLflow reports it (bulk history).
    pub run_id: Option<String>,
}

impl Metric {
    pub fn new(key: impl Into<String>, value: f64, timestamp: i64, step: i64) -> Self {
        Self {
            key: key.into(),
            value,
            timestamp,
            step,
            model_id: None,
            dataset_name: None,
            dataset_digest: None,
            run_id: None,
        }
    }
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
struct RunKeyValueRow {
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
    /// Creates a run in an active experiment; a name is generated when none is given.
    pub async fn create_run(&self, request: NewRun) -> Result<Run> {
        let experiment = self.get_active_experiment(request.experiment_id).await?;
        let mut tags = normalize_tags(request.tags)?;
        let tagged_name = tags
            .iter()
            .find(|t| t.key == RUN_NAME_TAG)
            .map(|t| t.value.clone());
        let run_name = match (request.run_name.filter(|n| !n.is_empty()), tagged_name) {
            (Some(name), Some(tagged)) if name != tagged => {
                return Err(Error::Invalid(format!(
                    "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different \
                     values (run_name='{name}', mlflow.runName='{tagged}')."
                )));
            }
            (Some(name), _) => name,
            (None, Some(tagged)) => tagged,
            (None, None) => generate_run_name(),
        };
        tags.retain(|t| t.key != RUN_NAME_TAG);
        tags.push(KeyValue::new(RUN_NAME_TAG, run_name.clone()));

        let run_uuid = uuid::Uuid::new_v4().simple().to_string();
        let artifact_uri = format!(
            "{}/{run_uuid}/artifacts",
            experiment.artifact_location.trim_end_matches('/')
        );
        let info = RunInfo {
            run_uuid: run_uuid.clone(),
            run_name,
            experiment_id: experiment.experiment_id,
            user_id: request.user_id,
            status: "RUNNING".into(),
            start_time: request.start_time.unwrap_or_else(now_millis),
            end_time: None,
            lifecycle_stage: LIFECYCLE_ACTIVE.into(),
            artifact_uri,
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri) \
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)")
                .bind(&info.run_uuid)
                .bind(&info.run_name)
                .bind(info.experiment_id)
                .bind(&info.user_id)
                .bind(&info.status)
                .bind(info.start_time)
                .bind(&info.lifecycle_stage)
                .bind(&info.artifact_uri)
                .execute(&mut *tx)
                .await?;
            for tag in &tags {
                sqlx::query("INSERT INTO tags (run_uuid, key, value) VALUES ($1, $2, $3)")
                    .bind(&run_uuid)
                    .bind(&tag.key)
                    .bind(&tag.value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        tags.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Run {
            info,
            metrics: Vec::new(),
            params: Vec::new(),
            tags,
            inputs: Vec::new(),
            model_inputs: Vec::new(),
            model_outputs: Vec::new(),
        })
    }

    /// Reads a run with its data; deleted runs are returned too (lifecycle_stage `deleted`).
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let info = self.get_run_info(run_id).await?;
        Ok(self.load_runs(vec![info]).await?.remove(0))
    }

    /// Reads a run's info only.
    pub async fn get_run_info(&self, run_id: &str) -> Result<RunInfo> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_uuid = $1");
        let info = with_pool!(self, pool => sqlx::query_as::<_, RunInfo>(&sql)
            .bind(run_id)
            .fetch_optional(pool)
            .await)?;
        info.ok_or_else(|| Error::not_found(Entity::Run, format!("Run with id={run_id} not found")))
    }

    /// A run that must exist and be active, for writes.
    async fn get_active_run(&self, run_id: &str) -> Result<RunInfo> {
        let info = self.get_run_info(run_id).await?;
        if info.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(Error::Invalid(format!(
                "The run {run_id} must be in the 'active' state. Current state is {}.",
                info.lifecycle_stage
            )));
        }
        Ok(info)
    }

    /// Updates status, end time and/or name (the name tag follows).
    pub async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunInfo> {
        let mut info = self.get_active_run(run_id).await?;
        if let Some(status) = status {
            info.status = status.to_owned();
        }
        if end_time.is_some() {
            info.end_time = end_time;
        }
        let rename = run_name.filter(|name| !name.is_empty());
        if let Some(name) = rename {
            info.run_name = name.to_owned();
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE runs SET status = $1, end_time = $2, name = $3 WHERE run_uuid = $4")
                .bind(&info.status)
                .bind(info.end_time)
                .bind(&info.run_name)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            if rename.is_some() {
                sqlx::query("INSERT INTO tags (run_uuid, key, value) VALUES ($1, $2, $3) \
                             ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value")
                    .bind(run_id)
                    .bind(RUN_NAME_TAG)
                    .bind(&info.run_name)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(info)
    }

    /// Soft-deletes a run.
    pub async fn delete_run(&self, run_id: &str) -> Result<()> {
        self.get_run_info(run_id).await?;
        with_pool!(self, pool => sqlx::query("UPDATE runs SET lifecycle_stage = $1, deleted_time = $2 WHERE run_uuid = $3")
            .bind(LIFECYCLE_DELETED)
            .bind(now_millis())
            .bind(run_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Restores a soft-deleted run.
    pub async fn restore_run(&self, run_id: &str) -> Result<()> {
        self.get_run_info(run_id).await?;
        with_pool!(self, pool => sqlx::query("UPDATE runs SET lifecycle_stage = $1, deleted_time = NULL WHERE run_uuid = $2")
            .bind(LIFECYCLE_ACTIVE)
            .bind(run_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Deletes a run tag; a missing tag is RESOURCE_DOES_NOT_EXIST.
    pub async fn delete_run_tag(&self, run_id: &str, key: &str) -> Result<()> {
        self.get_active_run(run_id).await?;
        let deleted = with_pool!(self, pool => sqlx::query("DELETE FROM tags WHERE run_uuid = $1 AND key = $2")
            .bind(run_id)
            .bind(key)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        if deleted == 0 {
            return Err(Error::not_found(
                Entity::Tag,
                format!("No tag with name: {key} in run with id {run_id}"),
            ));
        }
        Ok(())
    }

    /// Logs metrics, params and tags of one request. Everything is validated before anything
    /// is written; the writes happen in one transaction (metrics in one statement per table).
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<()> {
        validate_batch(metrics, params, tags)?;
        let mut params: Vec<KeyValue> = params
            .iter()
            .map(|p| {
                KeyValue::new(
                    p.key.clone(),
                    validation::truncate(&p.value, MAX_PARAM_VALUE_LENGTH),
                )
            })
            .collect();
        // Key order, so concurrent batches lock the same rows in the same order.
        params.sort_by(|a, b| a.key.cmp(&b.key));
        let tags = normalize_tags(tags.to_vec())?;
        self.get_active_run(run_id).await?;

        if params.is_empty() && tags.is_empty() {
            return self.insert_metrics(run_id, metrics).await;
        }
        let rename = tags
            .iter()
            .rev()
            .find(|t| t.key == RUN_NAME_TAG)
            .map(|t| t.value.clone());
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if !params.is_empty() {
                // Insert first, then compare: a key another request logged is skipped by the
                // insert, which waits for that request's transaction, so the read below sees
                // its value. Reading first would race (both see no row, both answer success,
                // one value is lost).
                let mut insert = SqlBuilder::new("INSERT INTO params (run_uuid, key, value) VALUES ");
                push_key_value_rows(&mut insert, run_id, &params);
                insert.push(" ON CONFLICT (run_uuid, key) DO NOTHING");
                bind_values!(sqlx::query(&insert.sql), &insert.values).execute(&mut *tx).await?;
                let mut builder = SqlBuilder::new("SELECT run_uuid, key, value FROM params WHERE run_uuid = ");
                builder.bind(SqlValue::Text(run_id.to_owned()));
                builder.push(" AND key IN ");
                builder.bind_list(params.iter().map(|p| SqlValue::Text(p.key.clone())));
                let stored = bind_values!(sqlx::query_as::<_, RunKeyValueRow>(&builder.sql), &builder.values)
                    .fetch_all(&mut *tx)
                    .await?;
                let logged: HashMap<&str, &str> = params.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
                if let Some(changed) = stored.iter().find(|row| logged.get(row.key.as_str()) != Some(&row.value.as_str())) {
                    return Err(Error::Invalid(format!(
                        "Changing param values is not allowed. Param with key='{}' was already logged with value='{}' \
                         for run ID='{run_id}'. Attempted logging new value '{}'.",
                        changed.key,
                        changed.value,
                        logged.get(changed.key.as_str()).copied().unwrap_or_default()
                    )));
                }
            }
            if !tags.is_empty() {
                let mut upsert = SqlBuilder::new("INSERT INTO tags (run_uuid, key, value) VALUES ");
                push_key_value_rows(&mut upsert, run_id, &dedup_last_wins(&tags));
                upsert.push(" ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value");
                bind_values!(sqlx::query(&upsert.sql), &upsert.values).execute(&mut *tx).await?;
            }
            if let Some(name) = &rename {
                sqlx::query("UPDATE runs SET name = $1 WHERE run_uuid = $2")
                    .bind(name)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            if !metrics.is_empty() {
                tx.write_metrics(run_id, metrics, RepeatedPoints::Skip).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The metrics-only path of log-batch, one atomic write. On Postgres it first assumes no
    /// point repeats (the common case, and cheaper) and skips repeats only when one did.
    async fn insert_metrics(&self, run_id: &str, metrics: &[Metric]) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        match &self.pool {
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                match conn
                    .write_metrics(run_id, metrics, RepeatedPoints::Fail)
                    .await
                {
                    Err(error) if is_unique_violation(&error) => {
                        conn.write_metrics(run_id, metrics, RepeatedPoints::Skip)
                            .await?;
                    }
                    written => written?,
                }
            }
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                tx.write_metrics(run_id, metrics, RepeatedPoints::Skip)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Records datasets used by a run (deduplicated per experiment by name and digest).
    pub async fn log_inputs(&self, run_id: &str, inputs: &[DatasetInput]) -> Result<()> {
        for input in inputs {
            validate_dataset_input(input)?;
        }
        let run = self.get_active_run(run_id).await?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for input in inputs {
                let dataset = &input.dataset;
                let candidate = uuid::Uuid::new_v4().simple().to_string();
                sqlx::query(
                    "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, source_type, source, schema, profile) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (experiment_id, name, digest) DO NOTHING")
                    .bind(&candidate)
                    .bind(run.experiment_id)
                    .bind(&dataset.name)
                    .bind(&dataset.digest)
                    .bind(&dataset.source_type)
                    .bind(&dataset.source)
                    .bind(&dataset.schema)
                    .bind(&dataset.profile)
                    .execute(&mut *tx)
                    .await?;
                let dataset_uuid: String = sqlx::query_scalar(
                    "SELECT dataset_uuid FROM datasets WHERE experiment_id = $1 AND name = $2 AND digest = $3")
                    .bind(run.experiment_id)
                    .bind(&dataset.name)
                    .bind(&dataset.digest)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO run_inputs (run_uuid, dataset_uuid) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(run_id)
                    .bind(&dataset_uuid)
                    .execute(&mut *tx)
                    .await?;
                for tag in &input.tags {
                    sqlx::query("INSERT INTO run_input_tags (run_uuid, dataset_uuid, key, value) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (run_uuid, dataset_uuid, key) DO UPDATE SET value = excluded.value")
                        .bind(run_id)
                        .bind(&dataset_uuid)
                        .bind(&tag.key)
                        .bind(&tag.value)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        });
        Ok(())
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
                let sql = sql.replace("{ids}", "IN (SELECT value FROM json_each($1))");
                sqlx::query_as::<_, T>(&sql)
                    .bind(&ids.json)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// Searches runs of the given experiments; keyset-paged. Default order: start_time DESC, then run id.
    ///
    /// When the first order_by key is a metric, param or tag, the runs that have it (and, for
    /// a metric, a value other than NaN) sort before all others. So a page that begins among
    /// them is first asked of those runs alone, ordered by the plain value: the planner can walk
    /// the (key, value) index in order and stop after one page, instead of joining and sorting
    /// every run of the experiment. Only when that yields less than a full page (the end of
    /// those runs is near) does the general query run.
    pub async fn search_runs(&self, request: &RunSearch) -> Result<Page<Run>> {
        let max_results = search::check_max_results(request.max_results, MAX_RUNS_PAGE)?;
        if request.experiment_ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: None,
            });
        }
        let clauses = filter::parse_filter(SearchEntity::Runs, &request.filter)?;
        let mut joins = SqlBuilder::default();
        let mut present_joins = SqlBuilder::default();
        let mut keys = Vec::new();
        let mut present_keys = Vec::new();
        // How many general keys the first order_by entry has, when it can take the fast path.
        let mut first_group = None;
        for (i, order_by) in request.order_by.iter().enumerate() {
            let parsed = filter::parse_order_by(SearchEntity::Runs, order_by)?;
            let descending = !parsed.ascending;
            let general = run_sort_keys(&mut joins, i, &parsed.key, descending, false)?;
            let present = run_sort_keys(&mut present_joins, i, &parsed.key, descending, i == 0)?;
            if i == 0 && matches!(parsed.key, Key::Metric(_) | Key::Param(_) | Key::Tag(_)) {
                first_group = Some(general.len());
            }
            keys.extend(general);
            present_keys.extend(present);
        }
        if !keys.iter().any(|key| key.expr == "r.start_time") {
            keys.push(SortKey::new("r.start_time", SortKind::Int, true, false));
            present_keys.push(SortKey::new("r.start_time", SortKind::Int, true, false));
        }
        keys.push(SortKey::new("r.run_uuid", SortKind::Text, false, false));
        present_keys.push(SortKey::new("r.run_uuid", SortKind::Text, false, false));
        let after = search::decode_page_token(&request.page_token, &keys)?;

        if let Some(group) = first_group {
            // The token's position in the general order, restated in the present-only order:
            // only when it lies among runs that have the first key.
            let present_after = match after.as_deref() {
                None => Some(None),
                Some(after) => present_position(after, group).map(Some),
            };
            if let Some(present_after) = present_after {
                let builder = self.run_search_query(request, &clauses, present_joins, &keys)?;
                let (infos, next_page_token) = self
                    .fetch_page_ordered::<RunInfo>(
                        builder,
                        &present_keys,
                        present_after.as_deref(),
                        &keys,
                        max_results,
                    )
                    .await?;
                // A next page means a full page, all of it before any run without the key.
                if next_page_token.is_some() {
                    return Ok(Page {
                        items: self.load_runs(infos).await?,
                        next_page_token,
                    });
                }
            }
        }

        let builder = self.run_search_query(request, &clauses, joins, &keys)?;
        let (infos, next_page_token) = self
            .fetch_page_ordered::<RunInfo>(builder, &keys, after.as_deref(), &keys, max_results)
            .await?;
        Ok(Page {
            items: self.load_runs(infos).await?,
            next_page_token,
        })
    }

    /// `SELECT <run columns>, <sort columns of keys> FROM runs r <joins> WHERE <filter>`.
    fn run_search_query(
        &self,
        request: &RunSearch,
        clauses: &[Clause],
        joins: SqlBuilder,
        keys: &[SortKey],
    ) -> Result<SqlBuilder> {
        // The joins' key binds come first, so the builder continues their numbering.
        let mut builder = SqlBuilder {
            sql: format!("SELECT {RUN_COLUMNS}"),
            values: joins.values,
        };
        search::push_sort_columns(&mut builder, keys);
        builder.push(" FROM runs r");
        builder.push(&joins.sql);
        builder.push(" WHERE r.experiment_id IN ");
        builder.bind_list(request.experiment_ids.iter().map(|id| SqlValue::Int(*id)));
        builder.push(" AND r.lifecycle_stage IN ");
        builder.bind_list(
            request
                .view_type
                .stages()
                .iter()
                .map(|s| SqlValue::Text((*s).to_owned())),
        );
        for clause in clauses {
            builder.push(" AND ");
            self.push_run_clause(&mut builder, clause)?;
        }
        Ok(builder)
    }

    fn push_run_clause(&self, builder: &mut SqlBuilder, clause: &Clause) -> Result<()> {
        let backend = self.backend();
        match &clause.key {
            Key::Metric(key) => {
                // As in MLflow, a NaN value satisfies `!=` and no other comparison.
                builder.push("EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = ");
                builder.bind(SqlValue::Text(key.clone()));
                builder.push(" AND (");
                push_comparison(builder, backend, "m.value", clause, false)?;
                builder.push(if clause.op == Comparator::Ne {
                    " OR m.is_nan))"
                } else {
                    " AND NOT m.is_nan))"
                });
                Ok(())
            }
            Key::Param(key) => push_key_value_clause(
                builder,
                backend,
                if indexable_key_value(backend, key, clause) {
                    "SELECT 1 FROM params p WHERE char_length(p.key) + char_length(p.value) <= 600 \
                     AND p.run_uuid = r.run_uuid AND p.key = "
                } else {
                    "SELECT 1 FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = "
                },
                key,
                "p.value",
                clause,
            ),
            Key::Tag(key) => push_key_value_clause(
                builder,
                backend,
                if indexable_key_value(backend, key, clause) {
                    "SELECT 1 FROM tags t WHERE char_length(t.key) + char_length(t.value) <= 600 \
                     AND t.run_uuid = r.run_uuid AND t.key = "
                } else {
                    "SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = "
                },
                key,
                "t.value",
                clause,
            ),
            Key::Attribute(attribute) => {
                let (column, numeric) = run_attribute_column(attribute)?;
                push_comparison(builder, backend, column, clause, numeric)
            }
            Key::Dataset(field) => {
                builder.push(
                    "EXISTS (SELECT 1 FROM run_inputs i JOIN datasets d ON d.dataset_uuid = i.dataset_uuid \
                     WHERE i.run_uuid = r.run_uuid AND ",
                );
                match field {
                    DatasetField::Name => {
                        push_comparison(builder, backend, "d.name", clause, false)?
                    }
                    DatasetField::Digest => {
                        push_comparison(builder, backend, "d.digest", clause, false)?
                    }
                    DatasetField::Context => {
                        builder.push(
                            "EXISTS (SELECT 1 FROM run_input_tags it WHERE it.run_uuid = i.run_uuid \
                             AND it.dataset_uuid = i.dataset_uuid AND it.key = 'mlflow.data.context' AND ",
                        );
                        push_comparison(builder, backend, "it.value", clause, false)?;
                        builder.push(")");
                    }
                }
                builder.push(")");
                Ok(())
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
            self.fetch_for_runs::<KindKeyValueRow>(
                &ids,
                "SELECT CAST(0 AS BIGINT) AS kind, run_uuid, key, value FROM params WHERE run_uuid {ids} \
                 UNION ALL \
                 SELECT CAST(1 AS BIGINT) AS kind, run_uuid, key, value FROM tags WHERE run_uuid {ids} \
                 ORDER BY kind, key",
            ),
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

/// A page token's position (general keys, the first `group` of them for the first order_by
/// entry) restated for the present-only keys of [`run_sort_keys`], or `None` when it lies
/// among runs without the first key (a metric's rank 1 or 2, a NULL param or tag).
fn present_position(after: &[TokenValue], group: usize) -> Option<Vec<TokenValue>> {
    match (group, after) {
        // a metric: rank 0 (a number), then the value
        (2, [TokenValue::Int(0), value, rest @ ..]) if *value != TokenValue::Null => Some(
            std::iter::once(value.clone())
                .chain(rest.iter().cloned())
                .collect(),
        ),
        // a param or tag: the value
        (1, [value, ..]) if *value != TokenValue::Null => Some(after.to_vec()),
        _ => None,
    }
}

/// Longest key + value (in characters) that the Postgres (key, value) indexes of params and
/// tags hold: they are partial (migration 0004) because a B-tree entry has a size limit.
const INDEXED_KEY_VALUE_CHARS: usize = 600;

/// Whether a param or tag clause may say `char_length(key) + char_length(value) <= 600`, the
/// predicate of the partial index, so that Postgres can use the index: only for `=` with a
/// value that short, where every matching row satisfies it anyway.
fn indexable_key_value(backend: super::Backend, key: &str, clause: &Clause) -> bool {
    if backend != super::Backend::Postgres {
        return false;
    }
    // Bytes, not characters: a character is one byte or more in UTF-8, so the byte count
    // bounds char_length in any server encoding (even SQL_ASCII, which counts bytes).
    let fits = |value: &str| key.len() + value.len() <= INDEXED_KEY_VALUE_CHARS;
    matches!((&clause.op, &clause.value), (Comparator::Eq, filter::Value::String(value)) if fits(value))
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

fn run_attribute_column(attribute: &Attribute) -> Result<(&'static str, bool)> {
    Ok(match attribute {
        Attribute::RunId => ("r.run_uuid", false),
        Attribute::RunName => ("r.name", false),
        Attribute::Status => ("r.status", false),
        Attribute::UserId => ("r.user_id", false),
        Attribute::ArtifactUri => ("r.artifact_uri", false),
        Attribute::LifecycleStage => ("r.lifecycle_stage", false),
        Attribute::StartTime => ("r.start_time", true),
        Attribute::EndTime => ("r.end_time", true),
        Attribute::ExperimentId => ("r.experiment_id", true),
        other => {
            return Err(Error::Invalid(format!(
                "Invalid attribute for runs: {other:?}"
            )));
        }
    })
}

/// The sort keys for one order_by entry; metrics, params and tags get a LEFT JOIN `o<i>`.
/// A metric sorts numbers first, then NaN, then runs without it, in both directions (MLflow's
/// order), so it takes two keys: that rank, then the value.
///
/// With `present`, the join is an inner join that keeps only runs having the key (for a metric:
/// with a value other than NaN), and the one key returned is the plain value. Over those runs
/// it orders exactly as the general keys do, which sort all of them before any other run.
fn run_sort_keys(
    joins: &mut SqlBuilder,
    index: usize,
    key: &Key,
    descending: bool,
    present: bool,
) -> Result<Vec<SortKey>> {
    let alias = format!("o{index}");
    let (table, lookup) = match key {
        Key::Metric(name) => ("latest_metrics", name),
        Key::Param(name) => ("params", name),
        Key::Tag(name) => ("tags", name),
        Key::Attribute(attribute) => {
            let (column, numeric) = run_attribute_column(attribute)?;
            let nullable = matches!(attribute, Attribute::EndTime);
            let kind = if numeric {
                SortKind::Int
            } else {
                SortKind::Text
            };
            return Ok(vec![SortKey::new(column, kind, descending, nullable)]);
        }
        Key::Dataset(_) => {
            return Err(Error::Invalid(
                "Cannot order runs by a dataset field".into(),
            ));
        }
    };
    let join = if present { "JOIN" } else { "LEFT JOIN" };
    joins.push(&format!(
        " {join} {table} {alias} ON {alias}.run_uuid = r.run_uuid AND {alias}.key = "
    ));
    joins.bind(SqlValue::Text(lookup.clone()));
    if present {
        let kind = if matches!(key, Key::Metric(_)) {
            joins.push(&format!(" AND NOT {alias}.is_nan"));
            SortKind::Float
        } else {
            SortKind::Text
        };
        return Ok(vec![SortKey::new(
            format!("{alias}.value"),
            kind,
            descending,
            false,
        )]);
    }
    Ok(match key {
        Key::Metric(_) => vec![
            SortKey::new(
                format!(
                    "CAST(CASE WHEN {alias}.key IS NULL THEN 2 WHEN {alias}.is_nan THEN 1 ELSE 0 END AS BIGINT)"
                ),
                SortKind::Int,
                false,
                false,
            ),
            SortKey::new(
                format!("CASE WHEN {alias}.is_nan THEN NULL ELSE {alias}.value END"),
                SortKind::Float,
                descending,
                true,
            ),
        ],
        _ => vec![SortKey::new(
            format!("{alias}.value"),
            SortKind::Text,
            descending,
            true,
        )],
    })
}

/// Appends `($run, $key, $value), …` rows.
fn push_key_value_rows(builder: &mut SqlBuilder, run_id: &str, rows: &[KeyValue]) {
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            builder.push(", ");
        }
        builder.bind_list([
            SqlValue::Text(run_id.to_owned()),
            SqlValue::Text(row.key.clone()),
            SqlValue::Text(row.value.clone()),
        ]);
    }
}

/// Multi-row insert of metric history (both backends; Postgres' hot path uses UNNEST instead).
/// Validates a whole log-batch request before anything is written (MLflow's order of checks).
fn validate_batch(metrics: &[Metric], params: &[KeyValue], tags: &[KeyValue]) -> Result<()> {
    use validation::{
        MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH,
    };
    let over = |what: &str, count: usize, limit: usize| {
        Error::Invalid(format!(
            "A batch logging request can contain at most {limit} {what}. Got {count} {what}. \
             Please split up {what} across multiple requests and try again."
        ))
    };
    if metrics.len() > MAX_METRICS_PER_BATCH {
        return Err(over("metrics", metrics.len(), MAX_METRICS_PER_BATCH));
    }
    if params.len() > MAX_PARAMS_PER_BATCH {
        return Err(over("params", params.len(), MAX_PARAMS_PER_BATCH));
    }
    if tags.len() > MAX_TAGS_PER_BATCH {
        return Err(over("tags", tags.len(), MAX_TAGS_PER_BATCH));
    }
    let total = metrics.len() + params.len() + tags.len();
    if total > MAX_ENTITIES_PER_BATCH {
        return Err(over("entities", total, MAX_ENTITIES_PER_BATCH));
    }
    for metric in metrics {
        validation::validate_key(KeyKind::Metric, &metric.key)?;
        validation::validate_timestamp(metric.timestamp)?;
    }
    let mut seen = HashSet::new();
    let mut duplicates = Vec::new();
    for param in params {
        validation::validate_key(KeyKind::Param, &param.key)?;
        if !seen.insert(param.key.as_str()) && !duplicates.contains(&param.key.as_str()) {
            duplicates.push(param.key.as_str());
        }
    }
    if !duplicates.is_empty() {
        return Err(Error::Invalid(format!(
            "Duplicate parameter keys have been submitted: {duplicates:?}. Please ensure the request contains only \
             one param value per param key."
        )));
    }
    for tag in tags {
        validation::validate_key(KeyKind::Tag, &tag.key)?;
    }
    Ok(())
}

/// Validates tag keys and truncates long values, as MLflow does for run tags.
fn normalize_tags(tags: Vec<KeyValue>) -> Result<Vec<KeyValue>> {
    tags.into_iter()
        .map(|tag| {
            validation::validate_key(KeyKind::Tag, &tag.key)?;
            Ok(KeyValue::new(
                tag.key,
                validation::truncate(&tag.value, MAX_TAG_VALUE_LENGTH),
            ))
        })
        .collect()
}

/// Keeps the last value of each key, preserving first-seen key order.
fn dedup_last_wins(tags: &[KeyValue]) -> Vec<KeyValue> {
    let mut by_key: BTreeMap<&str, &str> = BTreeMap::new();
    for tag in tags {
        by_key.insert(&tag.key, &tag.value);
    }
    by_key
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect()
}

fn validate_dataset_input(input: &DatasetInput) -> Result<()> {
    use validation::*;
    let dataset = &input.dataset;
    for (field, value) in [
        ("name", &dataset.name),
        ("digest", &dataset.digest),
        ("source_type", &dataset.source_type),
        ("source", &dataset.source),
    ] {
        if value.is_empty() {
            return Err(Error::Invalid(format!(
                "Missing value for required parameter 'dataset.{field}'"
            )));
        }
    }
    validate_length("Dataset name", &dataset.name, MAX_DATASET_NAME_LENGTH)?;
    validate_length("Dataset digest", &dataset.digest, MAX_DATASET_DIGEST_LENGTH)?;
    validate_length("Dataset source", &dataset.source, MAX_DATASET_SOURCE_LENGTH)?;
    validate_length(
        "Dataset schema",
        dataset.schema.as_deref().unwrap_or(""),
        MAX_DATASET_SCHEMA_LENGTH,
    )?;
    validate_length(
        "Dataset profile",
        dataset.profile.as_deref().unwrap_or(""),
        MAX_DATASET_PROFILE_LENGTH,
    )?;
    for tag in &input.tags {
        validate_length("Input tag key", &tag.key, MAX_INPUT_TAG_KEY_LENGTH)?;
        validate_length("Input tag value", &tag.value, MAX_INPUT_TAG_VALUE_LENGTH)?;
    }
    Ok(())
}

const NAME_ADJECTIVES: &[&str] = &[
    "abundant",
    "agreeable",
    "amazing",
    "ambitious",
    "bald",
    "beautiful",
    "bedecked",
    "big",
    "bold",
    "brave",
    "bright",
    "calm",
    "capable",
    "carefree",
    "casual",
    "clean",
    "clever",
    "colorful",
    "dapper",
    "defiant",
    "delicate",
    "enchanting",
    "fearless",
    "funny",
    "gentle",
    "gifted",
    "glamorous",
    "grandiose",
    "honorable",
    "illustrious",
    "indecisive",
    "judicious",
    "kindly",
    "learned",
    "luminous",
    "magnificent",
    "nebulous",
    "omniscient",
    "placid",
    "polite",
    "puzzled",
    "redolent",
    "resilient",
    "rogue",
    "sassy",
    "secretive",
    "shivering",
    "silent",
    "skillful",
    "smiling",
    "spiffy",
    "stately",
    "suave",
    "tasteful",
    "thoughtful",
    "traveling",
    "trusting",
    "unequaled",
    "upbeat",
    "valuable",
    "victorious",
    "vivacious",
    "welcoming",
    "wise",
];
const NAME_NOUNS: &[&str] = &[
    "ant", "ape", "asp", "bass", "bat", "bear", "bee", "bird", "boar", "bug", "calf", "carp",
    "cat", "chimp", "cod", "colt", "crab", "crane", "croc", "crow", "cub", "deer", "doe", "dog",
    "dolphin", "donkey", "dove", "duck", "eel", "elk", "fawn", "finch", "fish", "flea", "fly",
    "foal", "fowl", "fox", "frog", "gnat", "gnu", "goat", "goose", "grouse", "grub", "gull",
    "hare", "hawk", "hen", "hog", "horse", "hound", "jay", "kit", "koi", "lamb", "lark", "loon",
    "lynx", "mare", "mink", "mole", "moose", "moth", "mouse", "mule", "newt", "owl", "ox", "panda",
    "perch", "pig", "pug", "quail", "ram", "rat", "ray", "robin", "seal", "shark", "sheep",
    "shrew", "skink", "slug", "snail", "snake", "sow", "squid", "stag", "steed", "stoat", "swan",
    "toad", "trout", "wasp", "whale", "wolf", "worm", "wren", "yak", "zebra",
];

/// `adjective-animal-123`, like MLflow's generated run names.
fn generate_run_name() -> String {
    use rand::seq::IndexedRandom;
    let mut rng = rand::rng();
    let adjective = NAME_ADJECTIVES.choose(&mut rng).copied().unwrap_or("brave");
    let noun = NAME_NOUNS.choose(&mut rng).copied().unwrap_or("owl");
    format!("{adjective}-{noun}-{}", rand::random_range(0..1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_look_like_mlflow_names() {
        let name = generate_run_name();
        let parts: Vec<&str> = name.split('-').collect();
        assert_eq!(parts.len(), 3, "{name}");
        assert!(parts[2].parse::<u32>().is_ok_and(|n| n < 1000));
    }

    #[test]
    fn batch_validation_rejects_duplicates_and_limits() {
        let params = vec![KeyValue::new("a", "1"), KeyValue::new("a", "2")];
        let message = validate_batch(&[], &params, &[]).unwrap_err().to_string();
        assert!(message.contains("Duplicate parameter keys"), "{message}");
        let metrics: Vec<Metric> = (0..1001)
            .map(|i| Metric::new(format!("m{i}"), 1.0, 0, 0))
            .collect();
        assert!(validate_batch(&metrics, &[], &[]).is_err());
        assert!(validate_batch(&[Metric::new("ok", 1.0, -1, 0)], &[], &[]).is_err());
    }
}
