//! Experiments: create, read, search, rename, delete/restore and tags.

use std::collections::{BTreeSet, HashMap};

use super::filter::{self, Attribute, Key, SearchEntity};
use super::ownership::{
    Actor, Owner, OwnerColumns, check_writable, encode_owned, tag_entry, tag_of_entry,
};
use super::search::{
    self, FilterColumns, KeyValueTable, SortKey, SortKind, SqlBuilder, SqlValue, bind_values,
};
use super::validation::{self, MAX_ENTITY_KEY_LENGTH, MAX_EXPERIMENT_TAG_VALUE_LENGTH};
use super::{
    BeginWrite, Entity, Error, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, Page, Result, Store,
    ViewType, now_millis, with_pool, with_write_pool,
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
    #[sqlx(flatten)]
    owner: OwnerColumns,
}

impl ExperimentRow {
    fn ownership(&self) -> Option<ExperimentOwnership> {
        let (owner, entries) = self.owner.read()?;
        Some(ExperimentOwnership {
            owner,
            tag_keys: entries
                .filter_map(tag_of_entry)
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
     e.owner_namespace, e.owner_kind, e.owner_name, e.owner_uid, e.owned_fields";

/// Inside a write transaction `$tx` (either backend): writes the experiment's row (a no-op
/// update) so that the transaction holds it until commit, then reads it. Every experiment write
/// starts with it, so its ownership check reads the row the write changes (no check-then-write
/// race with a concurrent `set_experiment_owner`). An experiment of another workspace is not found.
macro_rules! lock_experiment {
    ($tx:ident, $workspace:expr, $experiment_id:expr) => {{
        let locked = sqlx::query(
            "UPDATE experiments SET name = name WHERE experiment_id = $1 AND workspace = $2",
        )
        .bind($experiment_id)
        .bind($workspace)
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        if locked == 0 {
            return Err(experiment_not_found($experiment_id));
        }
        let sql =
            format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.experiment_id = $1");
        sqlx::query_as::<_, ExperimentRow>(&sql)
            .bind($experiment_id)
            .fetch_one(&mut *$tx)
            .await?
    }};
}

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
    /// Creates an experiment in the store's workspace; its artifact location defaults to
    /// `<artifact root>/<id>`, or `<artifact root>/workspaces/<workspace>/<id>` outside the
    /// default workspace, as MLflow lays them out.
    #[tracing::instrument(name = "store.create_experiment", skip_all)]
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
        let created = with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time, workspace) \
                 VALUES ($1, $2, 'active', $3, $3, $4) RETURNING experiment_id",
            )
            .bind(name)
            .bind(artifact_location.unwrap_or(""))
            .bind(now)
            .bind(self.workspace())
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
                let location = format!("{}/{id}", self.workspace_artifact_root(default_artifact_root));
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

    /// Where new experiments of the store's workspace keep their artifacts, under `root`.
    pub fn workspace_artifact_root(&self, root: &str) -> String {
        let root = root.trim_end_matches('/');
        if self.workspace() == super::DEFAULT_WORKSPACE {
            root.to_owned()
        } else {
            format!("{root}/workspaces/{}", self.workspace())
        }
    }

    /// Every workspace that holds an experiment or a registered model, and `default`, sorted.
    #[tracing::instrument(name = "store.workspaces", skip_all)]
    pub async fn workspaces(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, pool => sqlx::query_scalar::<_, String>(
            "SELECT workspace FROM experiments UNION SELECT workspace FROM registered_models \
             UNION SELECT CAST($1 AS TEXT) ORDER BY 1")
            .bind(super::DEFAULT_WORKSPACE)
            .fetch_all(pool)
            .await)?)
    }

    /// Reads an experiment by id, deleted ones included.
    #[tracing::instrument(name = "store.get_experiment", skip_all)]
    pub async fn get_experiment(&self, experiment_id: i64) -> Result<Experiment> {
        let sql = format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.experiment_id = $1 AND e.workspace = $2"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, ExperimentRow>(&sql)
            .bind(experiment_id)
            .bind(self.workspace())
            .fetch_optional(pool)
            .await)?;
        let row = row.ok_or_else(|| experiment_not_found(experiment_id))?;
        Ok(self.with_tags(vec![row]).await?.remove(0))
    }

    /// Reads an experiment by name, deleted ones included.
    #[tracing::instrument(name = "store.get_experiment_by_name", skip_all)]
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        let sql = format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.name = $1 AND e.workspace = $2"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, ExperimentRow>(&sql)
            .bind(name)
            .bind(self.workspace())
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
    #[tracing::instrument(name = "store.get_active_experiment", skip_all)]
    pub async fn get_active_experiment(&self, experiment_id: i64) -> Result<Experiment> {
        let experiment = self.get_experiment(experiment_id).await?;
        require_active(experiment_id, &experiment.lifecycle_stage)?;
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
    #[tracing::instrument(name = "store.search_experiments", skip_all)]
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
        builder.push(" FROM experiments e WHERE e.workspace = ");
        builder.bind(SqlValue::Text(self.workspace().to_owned()));
        builder.push(" AND e.lifecycle_stage IN ");
        builder.bind_list(
            request
                .view_type
                .stages()
                .iter()
                .map(|s| SqlValue::Text((*s).to_owned())),
        );
        for clause in &clauses {
            builder.push(" AND ");
            EXPERIMENT_FILTER.push_clause(&mut builder, self.backend(), clause)?;
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
    #[tracing::instrument(name = "store.rename_experiment", skip_all)]
    pub async fn rename_experiment(
        &self,
        experiment_id: i64,
        new_name: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validation::validate_experiment_name(new_name)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let experiment = lock_experiment!(tx, self.workspace(), experiment_id);
            check_experiment_writable(&experiment, Some("name"), actor)?;
            if experiment.lifecycle_stage != LIFECYCLE_ACTIVE {
                return Err(Error::InvalidState(format!(
                    "Cannot rename a non-active experiment. Experiment {experiment_id} is {}.",
                    experiment.lifecycle_stage
                )));
            }
            let renamed = sqlx::query(
                "UPDATE experiments SET name = $1, last_update_time = $2 WHERE experiment_id = $3")
                .bind(new_name)
                .bind(now_millis())
                .bind(experiment_id)
                .execute(&mut *tx)
                .await;
            match renamed {
                Ok(_) => tx.commit().await?,
                Err(error) if super::error::is_unique_violation(&error) => {
                    return Err(Error::BadRequest(format!(
                        "Experiment '{new_name}' already exists."
                    )));
                }
                Err(error) => return Err(error.into()),
            }
        });
        Ok(())
    }

    /// Marks an experiment and all its runs deleted (restorable).
    #[tracing::instrument(name = "store.delete_experiment", skip_all)]
    pub async fn delete_experiment(&self, experiment_id: i64, actor: Actor<'_>) -> Result<()> {
        self.set_experiment_lifecycle(experiment_id, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, actor)
            .await
    }

    /// Restores a deleted experiment and its runs.
    #[tracing::instrument(name = "store.restore_experiment", skip_all)]
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
        let now = now_millis();
        let deleted_time = (to == LIFECYCLE_DELETED).then_some(now);
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let experiment = lock_experiment!(tx, self.workspace(), experiment_id);
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
    #[tracing::instrument(name = "store.set_experiment_tag", skip_all)]
    pub async fn set_experiment_tag(
        &self,
        experiment_id: i64,
        tag: &KeyValue,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_experiment_tag(tag)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let experiment = lock_experiment!(tx, self.workspace(), experiment_id);
            require_active(experiment_id, &experiment.lifecycle_stage)?;
            check_experiment_tag_writable(&experiment, &tag.key, actor)?;
            sqlx::query(
                "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value")
                .bind(experiment_id)
                .bind(&tag.key)
                .bind(&tag.value)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes an experiment tag; a missing tag is RESOURCE_DOES_NOT_EXIST.
    #[tracing::instrument(name = "store.delete_experiment_tag", skip_all)]
    pub async fn delete_experiment_tag(
        &self,
        experiment_id: i64,
        key: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let experiment = lock_experiment!(tx, self.workspace(), experiment_id);
            require_active(experiment_id, &experiment.lifecycle_stage)?;
            check_experiment_tag_writable(&experiment, key, actor)?;
            let deleted = sqlx::query(
                "DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2")
                .bind(experiment_id)
                .bind(key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(Error::not_found(
                    Entity::Tag,
                    format!("No tag with name: {key} in experiment with id {experiment_id}"),
                ));
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records that `ownership.owner` declares the experiment and owns `ownership.tag_keys`
    /// (replacing what it owned before). Refused with [`Error::OwnedElsewhere`] when another
    /// resource declares it: two resources declaring one experiment is a conflict for a human.
    #[tracing::instrument(name = "store.set_experiment_owner", skip_all)]
    pub async fn set_experiment_owner(
        &self,
        experiment_id: i64,
        ownership: &ExperimentOwnership,
    ) -> Result<()> {
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let experiment = lock_experiment!(tx, self.workspace(), experiment_id);
            check_experiment_writable(&experiment, None, Actor::Owner(&ownership.owner.uid))?;
            sqlx::query(
                "UPDATE experiments SET owner_namespace = $1, owner_kind = $2, owner_name = $3, \
                 owner_uid = $4, owned_fields = $5 WHERE experiment_id = $6")
                .bind(&ownership.owner.namespace)
                .bind(&ownership.owner.kind)
                .bind(&ownership.owner.name)
                .bind(&ownership.owner.uid)
                .bind(encode_owned(ownership.tag_keys.iter().map(|key| tag_entry(key))))
                .bind(experiment_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Releases the experiment from the resource with `uid` (a `Retain` deletion policy); an
    /// experiment that `uid` does not own is left alone.
    #[tracing::instrument(name = "store.clear_experiment_owner", skip_all)]
    pub async fn clear_experiment_owner(&self, experiment_id: i64, uid: &str) -> Result<()> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE experiments SET owner_namespace = NULL, owner_kind = NULL, owner_name = NULL, \
             owner_uid = NULL, owned_fields = '' WHERE experiment_id = $1 AND owner_uid = $2 AND workspace = $3")
            .bind(experiment_id)
            .bind(uid)
            .bind(self.workspace())
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }
}

/// Refuses `actor` renaming (`field` = `name`), deleting or restoring (`None`) an experiment a
/// resource declares.
fn check_experiment_writable(
    experiment: &ExperimentRow,
    field: Option<&str>,
    actor: Actor<'_>,
) -> Result<()> {
    check_writable(
        experiment
            .ownership()
            .as_ref()
            .map(|ownership| &ownership.owner),
        field,
        actor,
        || format!("experiment '{}'", experiment.name),
    )
}

/// Refuses `actor` changing a tag the experiment's owner declares.
fn check_experiment_tag_writable(
    experiment: &ExperimentRow,
    key: &str,
    actor: Actor<'_>,
) -> Result<()> {
    match experiment.ownership() {
        Some(ownership) if ownership.tag_keys.contains(key) => {
            check_experiment_writable(experiment, Some(&format!("tags.{key}")), actor)
        }
        _ => Ok(()),
    }
}

fn experiment_not_found(experiment_id: i64) -> Error {
    Error::not_found(
        Entity::Experiment,
        format!("No Experiment with id={experiment_id} exists"),
    )
}

/// Refuses writes into an experiment that is not active.
fn require_active(experiment_id: i64, lifecycle_stage: &str) -> Result<()> {
    if lifecycle_stage != LIFECYCLE_ACTIVE {
        return Err(Error::Invalid(format!(
            "The experiment {experiment_id} must be in the 'active' state. Current state is {lifecycle_stage}."
        )));
    }
    Ok(())
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

/// What experiment filters compare.
const EXPERIMENT_FILTER: FilterColumns = FilterColumns {
    entity: "experiments",
    attributes: &[
        (Attribute::Name, "e.name", false),
        (Attribute::ExperimentId, "e.experiment_id", true),
        (Attribute::CreationTime, "e.creation_time", true),
        (Attribute::LastUpdateTime, "e.last_update_time", true),
    ],
    tags: Some(KeyValueTable::new(
        "SELECT 1 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id AND t.key = ",
        "t.value",
    )),
    params: None,
};

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
