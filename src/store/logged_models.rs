//! MLflow 3 logged models: create, read, finalize, delete, tags, params, search, and the
//! run outputs/inputs that link runs to them. A model's files live under
//! `<experiment artifact location>/models/<model_id>/artifacts`, not under the run.

use std::collections::HashMap;

use super::filter::{self, Attribute, Clause, Key, SearchEntity};
pub use super::values::ModelOutput;

use super::search::{
    self, FilterColumns, KeyValueTable, SortKey, SortKind, SqlBuilder, SqlValue, bind_values,
    push_comparison,
};
use super::validation::{self, KeyKind};
use super::values::Metric;
use super::{
    BeginWrite, Entity, Error, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, Page, Result, Store,
    now_millis, with_pool, with_write_pool,
};

/// Status names of `LoggedModelStatus`, indexed by their enum numbers.
pub const LOGGED_MODEL_STATUSES: [&str; 4] = [
    "LOGGED_MODEL_STATUS_UNSPECIFIED",
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
];
/// Most params one create or log-params call may carry.
pub const MAX_PARAMS_PER_CALL: usize = 100;
/// Largest page of a logged-model search.
pub const MAX_LOGGED_MODELS_PAGE: i64 = 1000;

/// A logged model with its tags, params and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModel {
    pub model_id: String,
    pub experiment_id: i64,
    pub name: String,
    pub artifact_uri: String,
    pub creation_timestamp_ms: i64,
    pub last_updated_timestamp_ms: i64,
    pub status: String,
    pub lifecycle_stage: String,
    pub model_type: Option<String>,
    pub source_run_id: Option<String>,
    pub status_message: Option<String>,
    pub tags: Vec<KeyValue>,
    pub params: Vec<KeyValue>,
    pub metrics: Vec<Metric>,
}

#[derive(sqlx::FromRow)]
struct LoggedModelRow {
    model_id: String,
    experiment_id: i64,
    name: String,
    artifact_location: String,
    creation_timestamp_ms: i64,
    last_updated_timestamp_ms: i64,
    status: String,
    lifecycle_stage: String,
    model_type: Option<String>,
    source_run_id: Option<String>,
    status_message: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ModelKeyValueRow {
    model_id: String,
    key: String,
    value: String,
}

#[derive(sqlx::FromRow)]
struct ModelMetricRow {
    model_id: Option<String>,
    run_uuid: String,
    key: String,
    step: i64,
    timestamp: i64,
    value: f64,
    is_nan: bool,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

/// What `POST /logged-models` asks.
#[derive(Debug, Clone, Default)]
pub struct NewLoggedModel {
    pub experiment_id: i64,
    pub name: Option<String>,
    pub model_type: Option<String>,
    pub source_run_id: Option<String>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

/// One `order_by` entry of a logged-model search.
#[derive(Debug, Clone)]
pub struct LoggedModelOrder {
    pub field_name: String,
    pub ascending: bool,
}

/// What `POST /logged-models/search` asks.
#[derive(Debug, Clone, Default)]
pub struct LoggedModelSearch {
    pub experiment_ids: Vec<i64>,
    pub filter: String,
    pub order_by: Vec<LoggedModelOrder>,
    pub max_results: i64,
    pub page_token: String,
}

const MODEL_COLUMNS: &str = "lm.model_id, lm.experiment_id, lm.name, lm.artifact_location, lm.creation_timestamp_ms, \
     lm.last_updated_timestamp_ms, lm.status, lm.lifecycle_stage, lm.model_type, lm.source_run_id, lm.status_message";

impl Store {
    /// Creates a logged model (status PENDING) with its artifact location under the experiment.
    #[tracing::instrument(name = "store.create_logged_model", skip_all)]
    pub async fn create_logged_model(&self, request: NewLoggedModel) -> Result<LoggedModel> {
        if request.params.len() > MAX_PARAMS_PER_CALL {
            return Err(Error::Invalid(format!(
                "A logged model can be created with at most {MAX_PARAMS_PER_CALL} params; log the rest with /params."
            )));
        }
        for param in &request.params {
            validation::validate_key(KeyKind::Param, &param.key)?;
        }
        for tag in &request.tags {
            validation::validate_key(KeyKind::Tag, &tag.key)?;
        }
        let experiment = self.get_active_experiment(request.experiment_id).await?;
        if let Some(run_id) = &request.source_run_id {
            self.get_run_info(run_id).await?;
        }
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let name = request
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| model_id.clone());
        let location = format!(
            "{}/models/{model_id}/artifacts",
            experiment.artifact_location.trim_end_matches('/')
        );
        let now = now_millis();
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, creation_timestamp_ms, \
                 last_updated_timestamp_ms, status, lifecycle_stage, model_type, source_run_id) \
                 VALUES ($1, $2, $3, $4, $5, $5, 'LOGGED_MODEL_PENDING', 'active', $6, $7)")
                .bind(&model_id)
                .bind(experiment.experiment_id)
                .bind(&name)
                .bind(&location)
                .bind(now)
                .bind(&request.model_type)
                .bind(&request.source_run_id)
                .execute(&mut *tx)
                .await?;
            for (table, rows) in [("logged_model_params", &request.params), ("logged_model_tags", &request.tags)] {
                for row in rows {
                    let sql = format!(
                        "INSERT INTO {table} (model_id, key, value) VALUES ($1, $2, $3) \
                         ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value");
                    sqlx::query(&sql).bind(&model_id).bind(&row.key).bind(&row.value).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        });
        self.get_logged_model(&model_id, false).await
    }

    /// Reads a logged model; deleted ones only with `allow_deleted`.
    #[tracing::instrument(name = "store.get_logged_model", skip_all)]
    pub async fn get_logged_model(
        &self,
        model_id: &str,
        allow_deleted: bool,
    ) -> Result<LoggedModel> {
        let sql = format!(
            "SELECT {MODEL_COLUMNS} FROM logged_models lm WHERE lm.model_id = $1 AND lm.experiment_id IN \
             (SELECT e.experiment_id FROM experiments e WHERE e.workspace = $2)"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, LoggedModelRow>(&sql)
            .bind(model_id)
            .bind(self.workspace())
            .fetch_optional(pool)
            .await)?;
        let row = row
            .filter(|row| allow_deleted || row.lifecycle_stage == LIFECYCLE_ACTIVE)
            .ok_or_else(|| {
                Error::not_found(
                    Entity::LoggedModel,
                    format!("Logged model with ID '{model_id}' not found."),
                )
            })?;
        Ok(self.load_logged_models(vec![row]).await?.remove(0))
    }

    /// Sets the status (finalize: READY or UPLOAD_FAILED).
    #[tracing::instrument(name = "store.finalize_logged_model", skip_all)]
    pub async fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<LoggedModel> {
        self.get_logged_model(model_id, false).await?;
        with_pool!(self, pool => sqlx::query(
            "UPDATE logged_models SET status = $1, last_updated_timestamp_ms = $2 WHERE model_id = $3")
            .bind(status)
            .bind(now_millis())
            .bind(model_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        self.get_logged_model(model_id, false).await
    }

    /// Soft-deletes a logged model.
    #[tracing::instrument(name = "store.delete_logged_model", skip_all)]
    pub async fn delete_logged_model(&self, model_id: &str) -> Result<()> {
        self.get_logged_model(model_id, false).await?;
        with_pool!(self, pool => sqlx::query(
            "UPDATE logged_models SET lifecycle_stage = $1, last_updated_timestamp_ms = $2 WHERE model_id = $3")
            .bind(LIFECYCLE_DELETED)
            .bind(now_millis())
            .bind(model_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Upserts tags on a logged model.
    #[tracing::instrument(name = "store.set_logged_model_tags", skip_all)]
    pub async fn set_logged_model_tags(
        &self,
        model_id: &str,
        tags: &[KeyValue],
    ) -> Result<LoggedModel> {
        for tag in tags {
            validation::validate_key(KeyKind::Tag, &tag.key)?;
        }
        self.upsert_model_rows(model_id, "logged_model_tags", tags)
            .await?;
        self.get_logged_model(model_id, false).await
    }

    /// Logs params on a logged model.
    #[tracing::instrument(name = "store.log_logged_model_params", skip_all)]
    pub async fn log_logged_model_params(&self, model_id: &str, params: &[KeyValue]) -> Result<()> {
        for param in params {
            validation::validate_key(KeyKind::Param, &param.key)?;
        }
        self.upsert_model_rows(model_id, "logged_model_params", params)
            .await
    }

    async fn upsert_model_rows(
        &self,
        model_id: &str,
        table: &'static str,
        rows: &[KeyValue],
    ) -> Result<()> {
        self.get_logged_model(model_id, false).await?;
        let sql = format!(
            "INSERT INTO {table} (model_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value"
        );
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for row in rows {
                sqlx::query(&sql).bind(model_id).bind(&row.key).bind(&row.value).execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE logged_models SET last_updated_timestamp_ms = $1 WHERE model_id = $2")
                .bind(now_millis())
                .bind(model_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a tag of a logged model; a missing tag is RESOURCE_DOES_NOT_EXIST.
    #[tracing::instrument(name = "store.delete_logged_model_tag", skip_all)]
    pub async fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> Result<()> {
        self.get_logged_model(model_id, false).await?;
        let deleted = with_pool!(self, pool => sqlx::query("DELETE FROM logged_model_tags WHERE model_id = $1 AND key = $2")
            .bind(model_id)
            .bind(key)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        if deleted == 0 {
            return Err(Error::not_found(
                Entity::Tag,
                format!("No tag with key '{key}' found for logged model '{model_id}'."),
            ));
        }
        Ok(())
    }

    /// Records models a run produced (`/runs/outputs`).
    #[tracing::instrument(name = "store.log_run_outputs", skip_all)]
    pub async fn log_run_outputs(&self, run_id: &str, outputs: &[ModelOutput]) -> Result<()> {
        self.get_run_info(run_id).await?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for output in outputs {
                sqlx::query("INSERT INTO run_model_outputs (run_uuid, model_id, step) VALUES ($1, $2, $3) \
                             ON CONFLICT (run_uuid, model_id) DO UPDATE SET step = excluded.step")
                    .bind(run_id)
                    .bind(&output.model_id)
                    .bind(output.step)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records models a run consumed (`/runs/log-inputs` with `models`).
    #[tracing::instrument(name = "store.log_run_model_inputs", skip_all)]
    pub async fn log_run_model_inputs(&self, run_id: &str, model_ids: &[String]) -> Result<()> {
        self.get_run_info(run_id).await?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for model_id in model_ids {
                sqlx::query("INSERT INTO run_model_inputs (run_uuid, model_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(run_id)
                    .bind(model_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Searches logged models of the given experiments (active only), keyset-paged.
    #[tracing::instrument(name = "store.search_logged_models", skip_all)]
    pub async fn search_logged_models(
        &self,
        request: &LoggedModelSearch,
    ) -> Result<Page<LoggedModel>> {
        let max_results = search::check_max_results(request.max_results, MAX_LOGGED_MODELS_PAGE)?;
        let clauses = filter::parse_filter(SearchEntity::LoggedModels, &request.filter)?;
        let mut joins = SqlBuilder::default();
        let mut keys = Vec::new();
        for (i, order) in request.order_by.iter().enumerate() {
            let parsed = filter::parse_order_by(SearchEntity::LoggedModels, &order.field_name)?;
            keys.push(logged_model_sort_key(
                &mut joins,
                i,
                &parsed.key,
                !order.ascending,
            )?);
        }
        if request.order_by.is_empty() {
            keys.push(SortKey::new(
                "lm.creation_timestamp_ms",
                SortKind::Int,
                true,
                false,
            ));
        }
        keys.push(SortKey::new("lm.model_id", SortKind::Text, false, false));
        let after = search::decode_page_token(&request.page_token, &keys)?;

        let mut builder = SqlBuilder {
            sql: format!("SELECT {MODEL_COLUMNS}"),
            values: joins.values,
        };
        search::push_sort_columns(&mut builder, &keys);
        builder.push(" FROM logged_models lm");
        builder.push(&joins.sql);
        builder.push(" WHERE lm.lifecycle_stage = 'active' AND ");
        builder.push_experiment_in_workspace("lm.experiment_id", self.workspace());
        if !request.experiment_ids.is_empty() {
            builder.push(" AND lm.experiment_id IN ");
            builder.bind_list(request.experiment_ids.iter().map(|id| SqlValue::Int(*id)));
        }
        for clause in &clauses {
            builder.push(" AND ");
            self.push_logged_model_clause(&mut builder, clause)?;
        }
        let (rows, next_page_token) = self
            .fetch_page::<LoggedModelRow>(builder, &keys, after.as_deref(), max_results)
            .await?;
        Ok(Page {
            items: self.load_logged_models(rows).await?,
            next_page_token,
        })
    }

    fn push_logged_model_clause(&self, builder: &mut SqlBuilder, clause: &Clause) -> Result<()> {
        let backend = self.backend();
        match &clause.key {
            Key::Metric(key) => {
                builder.push(
                    "EXISTS (SELECT 1 FROM metrics m WHERE m.model_id = lm.model_id AND m.key = ",
                );
                builder.bind(SqlValue::Text(key.clone()));
                builder.push(" AND ");
                push_comparison(builder, backend, "m.value", clause, false)?;
                builder.push(")");
                Ok(())
            }
            Key::Dataset(_) => Err(Error::Invalid(
                "Logged models cannot be filtered by dataset fields".into(),
            )),
            Key::Attribute(_) | Key::Tag(_) | Key::Param(_) => {
                LOGGED_MODEL_FILTER.push_clause(builder, backend, clause)
            }
        }
    }

    async fn load_logged_models(&self, rows: Vec<LoggedModelRow>) -> Result<Vec<LoggedModel>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<SqlValue> = rows
            .iter()
            .map(|row| SqlValue::Text(row.model_id.clone()))
            .collect();
        let in_list = |sql: &str, order: &str| {
            let mut builder = SqlBuilder::new(sql);
            builder.bind_list(ids.clone());
            builder.push(order);
            builder
        };
        let tags_sql = in_list(
            "SELECT model_id, key, value FROM logged_model_tags WHERE model_id IN ",
            " ORDER BY key",
        );
        let params_sql = in_list(
            "SELECT model_id, key, value FROM logged_model_params WHERE model_id IN ",
            " ORDER BY key",
        );
        let metrics_sql = in_list(
            "SELECT model_id, run_uuid, key, step, timestamp, value, is_nan, dataset_name, dataset_digest FROM metrics WHERE model_id IN ",
            " ORDER BY key, step, timestamp",
        );
        let (tags, params, metrics) = with_pool!(self, pool => {
            let tags = bind_values!(sqlx::query_as::<_, ModelKeyValueRow>(&tags_sql.sql), &tags_sql.values).fetch_all(pool).await?;
            let params = bind_values!(sqlx::query_as::<_, ModelKeyValueRow>(&params_sql.sql), &params_sql.values).fetch_all(pool).await?;
            let metrics = bind_values!(sqlx::query_as::<_, ModelMetricRow>(&metrics_sql.sql), &metrics_sql.values).fetch_all(pool).await?;
            (tags, params, metrics)
        });
        let group = |rows: Vec<ModelKeyValueRow>| {
            let mut grouped: HashMap<String, Vec<KeyValue>> = HashMap::new();
            for row in rows {
                grouped
                    .entry(row.model_id)
                    .or_default()
                    .push(KeyValue::new(row.key, row.value));
            }
            grouped
        };
        let (mut tags, mut params) = (group(tags), group(params));
        let mut metrics_by_model: HashMap<String, Vec<Metric>> = HashMap::new();
        for row in metrics {
            let Some(model_id) = row.model_id else {
                continue;
            };
            let mut metric = Metric::new(
                row.key,
                validation::read_metric_value(row.value, row.is_nan),
                row.timestamp,
                row.step,
            );
            metric.model_id = Some(model_id.clone());
            metric.dataset_name = row.dataset_name;
            metric.dataset_digest = row.dataset_digest;
            metric.run_id = Some(row.run_uuid);
            metrics_by_model.entry(model_id).or_default().push(metric);
        }
        Ok(rows
            .into_iter()
            .map(|row| LoggedModel {
                tags: tags.remove(&row.model_id).unwrap_or_default(),
                params: params.remove(&row.model_id).unwrap_or_default(),
                metrics: metrics_by_model.remove(&row.model_id).unwrap_or_default(),
                model_id: row.model_id,
                experiment_id: row.experiment_id,
                name: row.name,
                artifact_uri: row.artifact_location,
                creation_timestamp_ms: row.creation_timestamp_ms,
                last_updated_timestamp_ms: row.last_updated_timestamp_ms,
                status: row.status,
                lifecycle_stage: row.lifecycle_stage,
                model_type: row.model_type,
                source_run_id: row.source_run_id,
                status_message: row.status_message,
            })
            .collect())
    }
}

/// What logged-model filters compare (metrics are written by `push_logged_model_clause`).
const LOGGED_MODEL_FILTER: FilterColumns = FilterColumns {
    entity: "logged models",
    attributes: &[
        (Attribute::Name, "lm.name", false),
        (Attribute::ModelId, "lm.model_id", false),
        (Attribute::ModelType, "lm.model_type", false),
        (Attribute::Status, "lm.status", false),
        (Attribute::SourceRunId, "lm.source_run_id", false),
        (
            Attribute::CreationTimestamp,
            "lm.creation_timestamp_ms",
            true,
        ),
        (Attribute::CreationTime, "lm.creation_timestamp_ms", true),
        (
            Attribute::LastUpdatedTimestamp,
            "lm.last_updated_timestamp_ms",
            true,
        ),
        (
            Attribute::LastUpdateTime,
            "lm.last_updated_timestamp_ms",
            true,
        ),
        (Attribute::ExperimentId, "lm.experiment_id", true),
    ],
    tags: Some(KeyValueTable::new(
        "SELECT 1 FROM logged_model_tags t WHERE t.model_id = lm.model_id AND t.key = ",
        "t.value",
    )),
    params: Some(KeyValueTable::new(
        "SELECT 1 FROM logged_model_params p WHERE p.model_id = lm.model_id AND p.key = ",
        "p.value",
    )),
};

fn logged_model_sort_key(
    joins: &mut SqlBuilder,
    index: usize,
    key: &Key,
    descending: bool,
) -> Result<SortKey> {
    let alias = format!("o{index}");
    let (table, column, kind, name) = match key {
        Key::Attribute(attribute) => {
            let (column, numeric) = LOGGED_MODEL_FILTER.attribute(attribute)?;
            let kind = if numeric {
                SortKind::Int
            } else {
                SortKind::Text
            };
            let nullable = matches!(attribute, Attribute::ModelType | Attribute::SourceRunId);
            return Ok(SortKey::new(column, kind, descending, nullable));
        }
        Key::Param(name) => (
            "logged_model_params",
            format!("{alias}.value"),
            SortKind::Text,
            name,
        ),
        Key::Tag(name) => (
            "logged_model_tags",
            format!("{alias}.value"),
            SortKind::Text,
            name,
        ),
        Key::Metric(name) => {
            // A model sorts by the largest value logged for the metric with its id.
            joins
                .push(" LEFT JOIN (SELECT model_id, MAX(value) AS value FROM metrics WHERE key = ");
            joins.bind(SqlValue::Text(name.clone()));
            joins.push(&format!(" AND model_id IS NOT NULL GROUP BY model_id) {alias} ON {alias}.model_id = lm.model_id"));
            return Ok(SortKey::new(
                format!("{alias}.value"),
                SortKind::Float,
                descending,
                true,
            ));
        }
        Key::Dataset(_) => {
            return Err(Error::Invalid(
                "Cannot order logged models by a dataset field".into(),
            ));
        }
    };
    joins.push(&format!(
        " LEFT JOIN {table} {alias} ON {alias}.model_id = lm.model_id AND {alias}.key = "
    ));
    joins.bind(SqlValue::Text(name.clone()));
    Ok(SortKey::new(column, kind, descending, true))
}
