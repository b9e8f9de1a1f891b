//! Run writes: create, update, delete and restore, tags, log-batch and dataset inputs.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::store::error::is_unique_violation;
use crate::store::metrics::{RepeatedPoints, WriteMetrics};
use crate::store::search::{SqlBuilder, SqlValue, bind_values};
use crate::store::validation::{self, KeyKind, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH};
use crate::store::{
    BeginWrite, Entity, Error, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, Pool, Result, Store,
    now_millis, with_pool, with_write_pool,
};

use super::{
    DatasetInput, Metric, NewRun, RUN_NAME_TAG, Run, RunInfo, RunKeyValueRow, check_writable,
};

impl Store {
    /// Creates a run in an active experiment; a name is generated when none is given.
    #[tracing::instrument(name = "store.create_run", skip_all)]
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
        with_write_pool!(self, pool => {
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

    /// Updates status, end time and/or name (the name tag follows).
    #[tracing::instrument(name = "store.update_run", skip_all)]
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
        with_write_pool!(self, pool => {
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
    #[tracing::instrument(name = "store.delete_run", skip_all)]
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
    #[tracing::instrument(name = "store.restore_run", skip_all)]
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
    #[tracing::instrument(name = "store.delete_run_tag", skip_all)]
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
    #[tracing::instrument(name = "store.log_batch", skip_all)]
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
        if params.is_empty() && tags.is_empty() && !metrics.is_empty() {
            // The statement that writes the points finds the run itself.
            return self.insert_metrics(run_id, metrics).await;
        }
        self.get_active_run(run_id).await?;
        if params.is_empty() && tags.is_empty() {
            return Ok(());
        }
        let rename = tags
            .iter()
            .rev()
            .find(|t| t.key == RUN_NAME_TAG)
            .map(|t| t.value.clone());
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if !params.is_empty() {
                // Insert first, then compare: a key another request logged is skipped by the
                // insert, which waits for that request's transaction, so the read below sees
                // its value. Reading first would race (both see no row, both answer success,
                // one value is lost).
                let mut insert = SqlBuilder::new("INSERT INTO params (run_uuid, key, value) VALUES ");
                push_key_value_rows(&mut insert, params.iter().map(|p| (run_id, p.key.as_str(), p.value.as_str())));
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
                    return Err(param_changed(
                        run_id,
                        &changed.key,
                        &changed.value,
                        logged.get(changed.key.as_str()).copied().unwrap_or_default(),
                    ));
                }
            }
            if !tags.is_empty() {
                let mut upsert = SqlBuilder::new("INSERT INTO tags (run_uuid, key, value) VALUES ");
                let tags = dedup_last_wins(&tags);
                push_key_value_rows(&mut upsert, tags.iter().map(|t| (run_id, t.key.as_str(), t.value.as_str())));
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
                let found = tx.write_metrics(run_id, self.workspace(), metrics, RepeatedPoints::Skip).await?;
                check_writable(run_id, self.workspace(), found.as_ref())?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The metrics-only path of log-batch, one atomic write that also finds the run (no lookup
    /// first: one round trip fewer per request). On Postgres it first assumes no point repeats
    /// (the common case, and cheaper) and skips repeats only when one did.
    async fn insert_metrics(&self, run_id: &str, metrics: &[Metric]) -> Result<()> {
        let workspace = self.workspace();
        let found = match &self.writes {
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                match conn
                    .write_metrics(run_id, workspace, metrics, RepeatedPoints::Fail)
                    .await
                {
                    Err(error) if is_unique_violation(&error) => {
                        conn.write_metrics(run_id, workspace, metrics, RepeatedPoints::Skip)
                            .await?
                    }
                    written => written?,
                }
            }
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let found = tx
                    .write_metrics(run_id, workspace, metrics, RepeatedPoints::Skip)
                    .await?;
                tx.commit().await?;
                found
            }
        };
        check_writable(run_id, workspace, found.as_ref())
    }

    /// Records datasets used by a run (deduplicated per experiment by name and digest).
    #[tracing::instrument(name = "store.log_inputs", skip_all)]
    pub async fn log_inputs(&self, run_id: &str, inputs: &[DatasetInput]) -> Result<()> {
        for input in inputs {
            validate_dataset_input(input)?;
        }
        let run = self.get_active_run(run_id).await?;
        with_write_pool!(self, pool => {
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
}

/// Appends `($run, $key, $value), …` rows.
pub(super) fn push_key_value_rows<'a>(
    builder: &mut SqlBuilder,
    rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) {
    for (i, (run_id, key, value)) in rows.into_iter().enumerate() {
        if i > 0 {
            builder.push(", ");
        }
        builder.bind_list([
            SqlValue::Text(run_id.to_owned()),
            SqlValue::Text(key.to_owned()),
            SqlValue::Text(value.to_owned()),
        ]);
    }
}

/// MLflow's answer to logging a param again with another value.
pub(super) fn param_changed(run_id: &str, key: &str, stored: &str, attempted: &str) -> Error {
    Error::Invalid(format!(
        "Changing param values is not allowed. Param with key='{key}' was already logged with value='{stored}' \
         for run ID='{run_id}'. Attempted logging new value '{attempted}'."
    ))
}

/// Multi-row insert of metric history (both backends; Postgres' hot path uses UNNEST instead).
/// Validates a whole log-batch request before anything is written (MLflow's order of checks).
pub(super) fn validate_batch(
    metrics: &[Metric],
    params: &[KeyValue],
    tags: &[KeyValue],
) -> Result<()> {
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
    tags.into_iter().map(normalize_tag).collect()
}

/// Validates a run tag's key and truncates a long value.
pub(super) fn normalize_tag(tag: KeyValue) -> Result<KeyValue> {
    validation::validate_key(KeyKind::Tag, &tag.key)?;
    Ok(KeyValue::new(
        tag.key,
        validation::truncate(&tag.value, MAX_TAG_VALUE_LENGTH),
    ))
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
