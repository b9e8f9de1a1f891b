//! Experiments: create, read, search, rename, delete/restore and tags.

use std::collections::{BTreeSet, HashMap};

use super::filter::{self, Attribute, Clause, Comparator, Key, SearchEntity, Value};
use super::registry::{Actor, Owner};
use super::search::{self, SortKey, SortKind, SqlBuilder, SqlValue, bind_values};
use super::validation::{self, MAX_ENTITY_KEY_LENGTH, MAX_EXPERIMENT_TAG_VALUE_LENGTH};
use super::{
    Backend, BeginWrite, Entity, Error, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, Page,
    Result, Store, ViewType, now_millis, with_pool,
};

/// Id of the experiment that exists from the start and receives runs by default.
pub const DEFAULT_EXPERIMENT_ID: i64 = 0;
/// Largest page of experiments a search may ask for.
pub const MAX_EXPERIMENTS_PAGE: i64 = 50_000;

/// An experiment with its tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub experiment_id: i64,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: Vec<KeyValue>,
    /// The Kubernetes resource that declares the experiment, if any.
    pub ownership: Option<ExperimentOwnership>,
}

/// Who declares an experiment and which of its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentOwnership {
    pub owner: Owner,
    /// Tag keys the owner declares; other tags stay writable through the API.
    pub tag_keys: BTreeSet<String>,
}

#[derive(sqlx::FromRow)]
struct ExperimentRow {
    experiment_id: i64,
    name: String,
    artifact_location: String,
    lifecycle_stage: String,
    creation_time: i64,
    last_update_time: i64,
    owner_namespace: Option<String>,
    owner_kind: Option<String>,
    owner_name: Option<String>,
    owner_uid: Option<String>,
    owned_tag_keys: String,
}

impl ExperimentRow {
    fn ownership(&self) -> Option<ExperimentOwnership> {
        let uid = self.owner_uid.clone()?;
        Some(ExperimentOwnership {
            owner: Owner {
                namespace: self.owner_namespace.clone().unwrap_or_default(),
                kind: self.owner_kind.clone().unwrap_or_default(),
                name: self.owner_name.clone().unwrap_or_default(),
                uid,
            },
            tag_keys: self
                .owned_tag_keys
                .lines()
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct ExperimentTagRow {
    experiment_id: i64,
    key: String,
    value: String,
}

const EXPERIMENT_COLUMNS: &str = "e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.creation_time, e.last_update_time, \
     e.owner_namespace, e.owner_kind, e.owner_name, e.owner_uid, e.owned_tag_keys";

/// What a search for experiments asks.
#[derive(Debug, Clone, Default)]
pub struct ExperimentSearch {
    pub view_type: ViewType,
    pub filter: String,
    pub order_by: Vec<String>,
    pub max_results: i64,
    pub page_token: String,
}

impl Store {
    /// Creates an experiment; its artifact location defaults to `<artifact root>/<id>`.
    pub async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[KeyValue],
        default_artifact_root: &str,
    ) -> Result<i64> {
        validation::validate_experiment_name(name)?;
        for tag in tags {
            validate_experiment_tag(tag)?;
        }
        let now = now_millis();
        let created = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
                 VALUES ($1, $2, 'active', $3, $3) RETURNING experiment_id",
            )
            .bind(name)
            .bind(artifact_location.unwrap_or(""))
            .bind(now)
            .fetch_one(&mut *tx)
            .await;
            let id = match inserted {
                Ok(id) => id,
                Err(error) if super::error::is_unique_violation(&error) => {
                    return Err(Error::AlreadyExists(format!("Experiment '{name}' already exists.")));
                }
                Err(error) => return Err(error.into()),
            };
            if artifact_location.is_none_or(str::is_empty) {
                let location = format!("{}/{id}", default_artifact_root.trim_end_matches('/'));
                sqlx::query("UPDATE experiments SET artifact_location = $1 WHERE experiment_id = $2")
                    .bind(location)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            for tag in tags {
                sqlx::query("INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
                             ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value")
                    .bind(id)
                    .bind(&tag.key)
                    .bind(&tag.value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            id
        });
        Ok(created)
    }

    /// Reads an experiment by id, deleted ones included.
    pub async fn get_experiment(&self, experiment_id: i64) -> Result<Experiment> {
        let sql =
            format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.experiment_id = $1");
        let row = with_pool!(self, pool => sqlx::query_as::<_, ExperimentRow>(&sql)
            .bind(experiment_id)
            .fetch_optional(pool)
            .await)?;
        let row = row.ok_or_else(|| {
            Error::not_found(
                Entity::Experiment,
                format!("No Experiment with id={experiment_id} exists"),
            )
        })?;
        Ok(self.with_tags(vec![row]).await?.remove(0))
    }

    /// Reads an experiment by name, deleted ones included.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.name = $1");
        let row = with_pool!(self, pool => sqlx::query_as::<_, ExperimentRow>(&sql)
            .bind(name)
            .fetch_optional(pool)
            .await)?;
        let row = row.ok_or_else(|| {
            Error::not_found(
                Entity::Experiment,
                format!("Could not find experiment with name '{name}'"),
            )
        })?;
        Ok(self.with_tags(vec![row]).await?.remove(0))
    }

    /// An experiment that must exist and be active, for writes into it.
    pub async fn get_active_experiment(&self, experiment_id: i64) -> Result<Experiment> {
        let experiment = self.get_experiment(experiment_id).await?;
        if experiment.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(Error::Invalid(format!(
                "The experiment {experiment_id} must be in the 'active' state. Current state is {}.",
                experiment.lifecycle_stage
            )));
        }
        Ok(experiment)
    }

    async fn with_tags(&self, rows: Vec<ExperimentRow>) -> Result<Vec<Experiment>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut builder = SqlBuilder::new(
            "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN ",
        );
        builder.bind_list(rows.iter().map(|row| SqlValue::Int(row.experiment_id)));
        builder.push(" ORDER BY key");
        let tag_rows = with_pool!(self, pool => bind_values!(sqlx::query_as::<_, ExperimentTagRow>(&builder.sql), &builder.values)
            .fetch_all(pool)
            .await)?;
        let mut tags: HashMap<i64, Vec<KeyValue>> = HashMap::new();
        for tag in tag_rows {
            tags.entry(tag.experiment_id)
                .or_default()
                .push(KeyValue::new(tag.key, tag.value));
        }
        Ok(rows
            .into_iter()
            .map(|row| Experiment {
                tags: tags.remove(&row.experiment_id).unwrap_or_default(),
                ownership: row.ownership(),
                experiment_id: row.experiment_id,
                name: row.name,
                artifact_location: row.artifact_location,
                lifecycle_stage: row.lifecycle_stage,
                creation_time: row.creation_time,
                last_update_time: row.last_update_time,
            })
            .collect())
    }

    /// Searches experiments with MLflow's filter grammar; keyset-paged.
    pub async fn search_experiments(&self, request: &ExperimentSearch) -> Result<Page<Experiment>> {
        let max_results = search::check_max_results(request.max_results, MAX_EXPERIMENTS_PAGE)?;
        let clauses = filter::parse_filter(SearchEntity::Experiments, &request.filter)?;
        let mut keys = Vec::new();
        for order_by in &request.order_by {
            let parsed = filter::parse_order_by(SearchEntity::Experiments, order_by)?;
            keys.push(experiment_sort_key(&parsed.key, !parsed.ascending)?);
        }
        if !keys.iter().any(|key| key.expr == "e.creation_time") && request.order_by.is_empty() {
            keys.push(SortKey::new("e.creation_time", SortKind::Int, true, false));
        }
        keys.push(SortKey::new("e.experiment_id", SortKind::Int, false, false));
        let after = search::decode_page_token(&request.page_token, &keys)?;

        let mut builder = SqlBuilder::new(&format!("SELECT {EXPERIMENT_COLUMNS}"));
        search::push_sort_columns(&mut builder, &keys);
        builder.push(" FROM experiments e WHERE e.lifecycle_stage IN ");
        builder.bind_list(
            request
                .view_type
                .stages()
                .iter()
                .map(|s| SqlValue::Text((*s).to_owned())),
        );
        for clause in &clauses {
            builder.push(" AND ");
            push_experiment_clause(&mut builder, self.backend(), clause)?;
        }
        let (rows, next_page_token) = self
            .fetch_page::<ExperimentRow>(builder, &keys, after.as_deref(), max_results)
            .await?;
        Ok(Page {
            items: self.with_tags(rows).await?,
            next_page_token,
        })
    }

    /// Renames an experiment. A taken name is BAD_REQUEST, a deleted experiment INVALID_STATE, as in MLflow.
    pub async fn rename_experiment(
        &self,
        experiment_id: i64,
        new_name: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validation::validate_experiment_name(new_name)?;
        let experiment = self.get_experiment(experiment_id).await?;
        check_experiment_writable(&experiment, Some("name"), actor)?;
        if experiment.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(Error::InvalidState(format!(
                "Cannot rename a non-active experiment. Experiment {experiment_id} is {}.",
                experiment.lifecycle_stage
            )));
        }
        let updated = with_pool!(self, pool => sqlx::query(
            "UPDATE experiments SET name = $1, last_update_time = $2 WHERE experiment_id = $3")
            .bind(new_name)
            .bind(now_millis())
            .bind(experiment_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()));
        match updated {
            Ok(_rows) => Ok(()),
            Err(error) if super::error::is_unique_violation(&error) => Err(Error::BadRequest(
                format!("Experiment '{new_name}' already exists."),
            )),
            Err(error) => Err(error.into()),
        }
    }

    /// Marks an experiment and all its runs deleted (restorable).
    pub async fn delete_experiment(&self, experiment_id: i64, actor: Actor<'_>) -> Result<()> {
        self.set_experiment_lifecycle(experiment_id, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, actor)
            .await
    }

    /// Restores a deleted experiment and its runs.
    pub async fn restore_experiment(&self, experiment_id: i64, actor: Actor<'_>) -> Result<()> {
        self.set_experiment_lifecycle(experiment_id, LIFECYCLE_DELETED, LIFECYCLE_ACTIVE, actor)
            .await
    }

    async fn set_experiment_lifecycle(
        &self,
        experiment_id: i64,
        from: &str,
        to: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        let experiment = self.get_experiment(experiment_id).await?;
        check_experiment_writable(&experiment, None, actor)?;
        if experiment.lifecycle_stage != from {
            return Err(Error::not_found(
                Entity::Experiment,
                format!(
                    "Experiment {experiment_id} is already {} and cannot be made {to}.",
                    experiment.lifecycle_stage
                ),
            ));
        }
        let now = now_millis();
        let deleted_time = (to == LIFECYCLE_DELETED).then_some(now);
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE experiments SET lifecycle_stage = $1, last_update_time = $2 WHERE experiment_id = $3")
                .bind(to)
                .bind(now)
                .bind(experiment_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE runs SET lifecycle_stage = $1, deleted_time = $2 WHERE experiment_id = $3 AND lifecycle_stage = $4")
                .bind(to)
                .bind(deleted_time)
                .bind(experiment_id)
                .bind(from)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets (upserts) an experiment tag.
    pub async fn set_experiment_tag(
        &self,
        experiment_id: i64,
        tag: &KeyValue,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_experiment_tag(tag)?;
        let experiment = self.get_active_experiment(experiment_id).await?;
        check_experiment_tag_writable(&experiment, &tag.key, actor)?;
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value")
            .bind(experiment_id)
            .bind(&tag.key)
            .bind(&tag.value)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Deletes an experiment tag; a missing tag is RESOURCE_DOES_NOT_EXIST.
    pub async fn delete_experiment_tag(
        &self,
        experiment_id: i64,
        key: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        let experiment = self.get_active_experiment(experiment_id).await?;
        check_experiment_tag_writable(&experiment, key, actor)?;
        let deleted = with_pool!(self, pool => sqlx::query(
            "DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2")
            .bind(experiment_id)
            .bind(key)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        if deleted == 0 {
            return Err(Error::not_found(
                Entity::Tag,
                format!("No tag with name: {key} in experiment with id {experiment_id}"),
            ));
        }
        Ok(())
    }

    /// Records that `ownership.owner` declares the experiment and owns `ownership.tag_keys`
    /// (replacing what it owned before). Refused with [`Error::OwnedElsewhere`] when another
    /// resource declares it: two resources declaring one experiment is a conflict for a human.
    pub async fn set_experiment_owner(
        &self,
        experiment_id: i64,
        ownership: &ExperimentOwnership,
    ) -> Result<()> {
        let experiment = self.get_experiment(experiment_id).await?;
        check_experiment_writable(&experiment, None, Actor::Owner(&ownership.owner.uid))?;
        let keys: Vec<&str> = ownership.tag_keys.iter().map(String::as_str).collect();
        with_pool!(self, pool => sqlx::query(
            "UPDATE experiments SET owner_namespace = $1, owner_kind = $2, owner_name = $3, owner_uid = $4, \
             owned_tag_keys = $5 WHERE experiment_id = $6 AND (owner_uid IS NULL OR owner_uid = $4)")
            .bind(&ownership.owner.namespace)
            .bind(&ownership.owner.kind)
            .bind(&ownership.owner.name)
            .bind(&ownership.owner.uid)
            .bind(keys.join("\n"))
            .bind(experiment_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Releases the experiment from the resource with `uid` (a `Retain` deletion policy); an
    /// experiment that `uid` does not own is left alone.
    pub async fn clear_experiment_owner(&self, experiment_id: i64, uid: &str) -> Result<()> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE experiments SET owner_namespace = NULL, owner_kind = NULL, owner_name = NULL, \
             owner_uid = NULL, owned_tag_keys = '' WHERE experiment_id = $1 AND owner_uid = $2")
            .bind(experiment_id)
            .bind(uid)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }
}

/// Refuses `actor` renaming (`field` = `name`), deleting or restoring (`None`) an experiment a
/// resource declares.
fn check_experiment_writable(
    experiment: &Experiment,
    field: Option<&str>,
    actor: Actor<'_>,
) -> Result<()> {
    match &experiment.ownership {
        Some(ownership) if !actor.is(&ownership.owner) => Err(Error::OwnedElsewhere {
            object: format!("experiment '{}'", experiment.name),
            field: field.map(str::to_owned),
            owner: Box::new(ownership.owner.clone()),
        }),
        _ => Ok(()),
    }
}

/// Refuses `actor` changing a tag the experiment's owner declares.
fn check_experiment_tag_writable(
    experiment: &Experiment,
    key: &str,
    actor: Actor<'_>,
) -> Result<()> {
    match &experiment.ownership {
        Some(ownership) if ownership.tag_keys.contains(key) => {
            check_experiment_writable(experiment, Some(&format!("tags.{key}")), actor)
        }
        _ => Ok(()),
    }
}

fn validate_experiment_tag(tag: &KeyValue) -> Result<()> {
    if tag.key.is_empty() {
        return Err(Error::Invalid(
            "Missing value for required parameter 'key'".into(),
        ));
    }
    validation::validate_length("Tag key", &tag.key, MAX_ENTITY_KEY_LENGTH)?;
    validation::validate_length("Tag value", &tag.value, MAX_EXPERIMENT_TAG_VALUE_LENGTH)
}

fn experiment_sort_key(key: &Key, descending: bool) -> Result<SortKey> {
    let (expr, kind) = match key {
        Key::Attribute(Attribute::Name) => ("e.name", SortKind::Text),
        Key::Attribute(Attribute::ExperimentId) => ("e.experiment_id", SortKind::Int),
        Key::Attribute(Attribute::CreationTime) => ("e.creation_time", SortKind::Int),
        Key::Attribute(Attribute::LastUpdateTime) => ("e.last_update_time", SortKind::Int),
        other => {
            return Err(Error::Invalid(format!(
                "Invalid order_by key for experiments: {other:?}"
            )));
        }
    };
    Ok(SortKey::new(expr, kind, descending, false))
}

fn push_experiment_clause(
    builder: &mut SqlBuilder,
    backend: Backend,
    clause: &Clause,
) -> Result<()> {
    match &clause.key {
        Key::Attribute(attribute) => {
            let (column, numeric) = match attribute {
                Attribute::Name => ("e.name", false),
                Attribute::ExperimentId => ("e.experiment_id", true),
                Attribute::CreationTime => ("e.creation_time", true),
                Attribute::LastUpdateTime => ("e.last_update_time", true),
                other => {
                    return Err(Error::Invalid(format!(
                        "Invalid attribute for experiments: {other:?}"
                    )));
                }
            };
            push_comparison(builder, backend, column, clause, numeric)
        }
        Key::Tag(key) => push_key_value_clause(
            builder,
            backend,
            "SELECT 1 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id AND t.key = ",
            key,
            "t.value",
            clause,
        ),
        other => Err(Error::Invalid(format!(
            "Invalid filter key for experiments: {other:?}"
        ))),
    }
}

/// `EXISTS (<lookup> $key AND <column> <op> $value)` for a tag or param; `IS NULL` becomes `NOT EXISTS`.
/// A row lacking the key never matches any other comparison (MLflow's semantics, `!=` included).
pub(super) fn push_key_value_clause(
    builder: &mut SqlBuilder,
    backend: Backend,
    lookup: &str,
    key: &str,
    column: &str,
    clause: &Clause,
) -> Result<()> {
    let negate = clause.op == Comparator::IsNull;
    builder.push(if negate { "NOT EXISTS (" } else { "EXISTS (" });
    builder.push(lookup);
    builder.bind(SqlValue::Text(key.to_owned()));
    if !matches!(clause.op, Comparator::IsNull | Comparator::IsNotNull) {
        builder.push(" AND ");
        push_comparison(builder, backend, column, clause, false)?;
    }
    builder.push(")");
    Ok(())
}

/// `<column> <op> <value>` for one clause, with LIKE/ILIKE made case-correct per backend.
pub(super) fn push_comparison(
    builder: &mut SqlBuilder,
    backend: Backend,
    column: &str,
    clause: &Clause,
    numeric: bool,
) -> Result<()> {
    let bad_value = || {
        Error::Invalid(format!(
            "Invalid value for comparison on {column}: {:?}",
            clause.value
        ))
    };
    let scalar = |value: &Value| -> Result<SqlValue> {
        match (value, numeric) {
            (Value::Number(number), true) => {
                if number.fract() == 0.0 && number.abs() < 9.0e15 {
                    Ok(SqlValue::Int(*number as i64))
                } else {
                    Ok(SqlValue::Float(*number))
                }
            }
            (Value::Number(number), false) => Ok(SqlValue::Float(*number)),
            (Value::String(text), true) => text
                .trim()
                .parse::<i64>()
                .map(SqlValue::Int)
                .map_err(|_| bad_value()),
            (Value::String(text), false) => Ok(SqlValue::Text(text.clone())),
            _ => Err(bad_value()),
        }
    };
    let op = match clause.op {
        Comparator::Eq => "=",
        Comparator::Ne => "!=",
        Comparator::Lt => "<",
        Comparator::Le => "<=",
        Comparator::Gt => ">",
        Comparator::Ge => ">=",
        Comparator::Like | Comparator::ILike => {
            let Value::String(pattern) = &clause.value else {
                return Err(bad_value());
            };
            if clause.op == Comparator::Like {
                search::push_like(builder, backend, column, pattern);
            } else {
                search::push_ilike(builder, backend, column, pattern);
            }
            return Ok(());
        }
        Comparator::In | Comparator::NotIn => {
            let Value::List(items) = &clause.value else {
                return Err(bad_value());
            };
            builder.push(column);
            builder.push(if clause.op == Comparator::In {
                " IN "
            } else {
                " NOT IN "
            });
            let values = items
                .iter()
                .map(|item| scalar(&Value::String(item.clone())))
                .collect::<Result<Vec<_>>>()?;
            builder.bind_list(values);
            return Ok(());
        }
        Comparator::IsNull => {
            builder.push(&format!("{column} IS NULL"));
            return Ok(());
        }
        Comparator::IsNotNull => {
            builder.push(&format!("{column} IS NOT NULL"));
            return Ok(());
        }
    };
    builder.push(&format!("{column} {op} "));
    builder.bind(scalar(&clause.value)?);
    Ok(())
}
