//! The model registry: registered models, their versions, stages, aliases and tags, with
//! MLflow's semantics (`mlflow/store/model_registry/sqlalchemy_store.py` and the checks of
//! `mlflow/server/handlers.py`); plus what MLflow lacks and the operator needs:
//!
//! - **Ownership.** A registered model or a model version may record the Kubernetes resource
//!   that declares it ([`Owner`]) and which of its fields that resource owns ([`OwnedField`]).
//!   Every mutation takes an [`Actor`]: the REST API ([`Actor::Api`]) is refused with
//!   [`Error::OwnedElsewhere`] when it would change an owned field (or rename/delete an owned
//!   object); the owning resource ([`Actor::Owner`] with its uid) may. Unowned fields stay
//!   writable by anyone. [`Store::set_owner`] and [`Store::clear_owner`] record and release
//!   ownership.
//! - **Change notification.** A committed new version, stage change, alias change, version
//!   deletion, rename or model deletion is announced on Postgres with
//!   `pg_notify('ferroflow_registry', payload)` inside the same transaction, so listeners see it
//!   exactly when it is visible. The payload is JSON
//!   `{"kind", "name", "version"?, "alias"?, "stage"?, "previous_name"?}`; see
//!   [`super::notify`] for the kinds and for [`super::notify::listen`]. On SQLite nothing is
//!   sent.
//!
//! Concurrency: every write transaction starts by writing the registered model's row (a no-op
//! `UPDATE`, or the version counter), so writes to one model take turns on both backends and an
//! ownership check cannot race the write it guards. (On SQLite every write transaction begins
//! `IMMEDIATE`, see [`super::BeginWrite`], so it waits for the database lock instead of failing
//! with SQLITE_BUSY.)
//! Version numbers come from the per-model counter `last_version`, incremented by
//! `UPDATE … RETURNING` in the transaction that inserts the version.
//!
//! Deliberate differences from MLflow, each a client mistake answered without a 5xx (which the
//! client would retry for minutes): `archive_existing_versions` with a stage other than
//! Staging/Production is INVALID_PARAMETER_VALUE (MLflow: INTERNAL_ERROR); model names longer
//! than 256 characters are refused (MLflow's column limit, a database error there);
//! `order_by creation_timestamp` on registered models is accepted.
//!
//! Layout: this file holds the types, row mapping, validation and loading; `models`, `aliases`,
//! `versions`, `search`, `sources` (incl. the public [`parse_models_uri`]) and `ownership` the
//! operations.

mod aliases;
mod model_files;
mod models;
mod ownership;
mod policies;
mod promotions;
mod search;
mod sources;
mod versions;

pub use model_files::{MAX_MLMODEL_BYTES, ModelFiles};
pub use ownership::{Actor, OWNER_TAG, OwnedField, OwnedRow, Owner, Ownership, RegistryRef};
pub use policies::{
    MetricRule, ModelMetadata, ModelMetadataRule, Policy, PolicySpec, PredecessorRule, Rule,
    RuleResult, TagRule, Target,
};
pub use promotions::{
    DEFAULT_PROMOTIONS_PAGE, Holder, MAX_PROMOTIONS_PAGE, Promotion, PromotionPath, TargetType,
};
pub use sources::{ModelsSelector, ModelsUri, parse_models_uri};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;

use super::ownership::OwnerColumns;
use super::search::{SqlBuilder, SqlValue, bind_values};
use super::validation::{self, KeyKind, MAX_ENTITY_KEY_LENGTH};
use super::{Entity, Error, KeyValue, Result, Store, with_pool};
use ownership::ownership_of;

/// Largest page a registered-model search may ask for (MLflow's threshold).
pub const MAX_REGISTERED_MODELS_PAGE: i64 = 1000;
/// Page size of a registered-model search that does not say.
pub const DEFAULT_REGISTERED_MODELS_PAGE: i64 = 100;
/// Largest page a model-version search may ask for; also its default (the proto's).
pub const MAX_MODEL_VERSIONS_PAGE: i64 = 200_000;
/// Longest registered model name (MLflow's column width).
pub const MAX_MODEL_NAME_LENGTH: usize = 256;
/// Longest alias (`MAX_REGISTERED_MODEL_ALIAS_LENGTH`).
pub const MAX_ALIAS_LENGTH: usize = 255;
/// Longest registry tag value (`MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH`).
pub const MAX_TAG_VALUE_LENGTH: usize = 100_000;
/// Tag that marks a registered model as a prompt; searches leave prompts out unless asked.
pub const IS_PROMPT_TAG: &str = "mlflow.prompt.is_prompt";
/// The alias every model has implicitly: its highest live version. Reserved, any case.
pub const LATEST_ALIAS: &str = "latest";
/// Logged-model tag listing the registered versions made from it (JSON `[{name, version}]`).
pub const MODEL_VERSIONS_TAG: &str = "mlflow.modelVersions";
/// Model-version status: registration is synchronous here, so every version is READY.
pub const STATUS_READY: &str = "READY";

/// A model version's lifecycle stage (MLflow's deprecated but still used stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    None,
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::None,
        Stage::Staging,
        Stage::Production,
        Stage::Archived,
    ];

    /// The canonical spelling, as stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }

    /// Parses a stage in any case, as MLflow does (`staging` → `Staging`).
    pub fn parse(text: &str) -> Result<Stage> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "Invalid Model Version stage: {text}. Value must be one of None, Staging, Production, Archived."
                ))
            })
    }

    /// The stages whose other versions `archive_existing_versions` may archive.
    fn is_active(self) -> bool {
        matches!(self, Stage::Staging | Stage::Production)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered model, with its newest version per stage, tags and aliases.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: Option<String>,
    /// The newest live version in each stage, ordered by version.
    pub latest_versions: Vec<ModelVersion>,
    pub tags: Vec<KeyValue>,
    /// (alias, version), ordered by alias.
    pub aliases: Vec<(String, i64)>,
    pub ownership: Option<Ownership>,
}

/// A live model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: Option<String>,
    pub current_stage: Stage,
    pub source: String,
    /// Where the files are: what `get-download-uri` answers.
    pub storage_location: String,
    /// Empty when the version does not come from a run.
    pub run_id: String,
    pub run_link: String,
    pub model_id: Option<String>,
    /// Who registered it (MLflow's `user_id`): the authenticated user, or the resource
    /// `namespace/Kind/name` the operator registered it for; `None` when unknown.
    pub user_id: Option<String>,
    pub status: String,
    pub status_message: Option<String>,
    pub tags: Vec<KeyValue>,
    /// Aliases pointing at this version, ordered.
    pub aliases: Vec<String>,
    pub ownership: Option<Ownership>,
}

/// What `create_model_version` needs.
#[derive(Debug, Clone, Default)]
pub struct NewModelVersion {
    pub name: String,
    pub source: String,
    /// `None` when the request did not carry the field (MLflow tells absent from empty for
    /// `models:/name/version` sources).
    pub run_id: Option<String>,
    pub tags: Vec<KeyValue>,
    pub run_link: Option<String>,
    pub description: Option<String>,
    pub model_id: Option<String>,
    /// Who registers it (also the setter of `tags`); `None` with `ownership`: the owning
    /// resource, else unknown.
    pub user_id: Option<String>,
    /// Recorded atomically with the version. A uid owns at most one version: creating again
    /// with the same owner uid returns the version it already owns (idempotent reconciles).
    pub ownership: Option<Ownership>,
}

/// A search over registered models.
#[derive(Debug, Clone, Default)]
pub struct RegisteredModelSearch {
    pub filter: String,
    pub order_by: Vec<String>,
    pub max_results: i64,
    pub page_token: String,
}

/// A search over model versions.
#[derive(Debug, Clone, Default)]
pub struct ModelVersionSearch {
    pub filter: String,
    pub order_by: Vec<String>,
    pub max_results: i64,
    pub page_token: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ModelRow {
    registered_model_id: i64,
    name: String,
    description: Option<String>,
    creation_time: i64,
    last_updated_time: i64,
    #[sqlx(flatten)]
    owner: OwnerColumns,
    /// The history keeps it, so that a model's history by name stays in its workspace.
    workspace: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct VersionRow {
    registered_model_id: i64,
    name: String,
    version: i64,
    creation_time: i64,
    last_updated_time: i64,
    description: Option<String>,
    current_stage: String,
    source: String,
    storage_location: String,
    run_id: String,
    run_link: String,
    model_id: Option<String>,
    user_id: Option<String>,
    status: String,
    status_message: Option<String>,
    #[sqlx(flatten)]
    owner: OwnerColumns,
}

#[derive(sqlx::FromRow)]
struct ModelTagRow {
    registered_model_id: i64,
    key: String,
    value: String,
}

#[derive(sqlx::FromRow)]
struct VersionTagRow {
    registered_model_id: i64,
    version: i64,
    key: String,
    value: String,
}

#[derive(sqlx::FromRow)]
struct AliasRow {
    registered_model_id: i64,
    alias: String,
    version: i64,
}

const MODEL_COLUMNS: &str = "rm.registered_model_id, rm.name, rm.description, rm.creation_time, \
     rm.last_updated_time, rm.owner_namespace, rm.owner_kind, rm.owner_name, rm.owner_uid, rm.owned_fields, \
     rm.workspace";

const VERSION_COLUMNS: &str = "mv.registered_model_id, rm.name, mv.version, mv.creation_time, \
     mv.last_updated_time, mv.description, mv.current_stage, mv.source, mv.storage_location, \
     mv.run_id, mv.run_link, mv.model_id, mv.user_id, mv.status, mv.status_message, mv.owner_namespace, \
     mv.owner_kind, mv.owner_name, mv.owner_uid, mv.owned_fields";

/// `FROM` clause that [`VERSION_COLUMNS`] reads.
const VERSIONS_FROM: &str = " FROM model_versions mv JOIN registered_models rm ON rm.registered_model_id = mv.registered_model_id";

/// How many ids one `IN (…)` list binds; well under SQLite's parameter limit.
const IN_LIST_CHUNK: usize = 500;

/// What MLflow writes over a deleted version's fields (it keeps the row as a tombstone).
const REDACTED_SOURCE: &str = "REDACTED-SOURCE-PATH";
const REDACTED_RUN_ID: &str = "REDACTED-RUN-ID";
const REDACTED_RUN_LINK: &str = "REDACTED-RUN-LINK";

impl ModelRow {
    fn ownership(&self) -> Option<Ownership> {
        ownership_of(&self.owner)
    }

    fn describe(&self) -> String {
        format!("registered model '{}'", self.name)
    }
}

impl VersionRow {
    fn ownership(&self) -> Option<Ownership> {
        ownership_of(&self.owner)
    }

    fn describe(&self) -> String {
        format!("model version '{}' version {}", self.name, self.version)
    }

    fn stage(&self) -> Stage {
        // The column has a CHECK constraint; anything else would be a corrupted row.
        Stage::parse(&self.current_stage).unwrap_or(Stage::None)
    }
}

fn model_not_found(name: &str) -> Error {
    Error::not_found(
        Entity::RegisteredModel,
        format!("Registered Model with name={name} not found"),
    )
}

fn version_not_found(name: &str, version: i64) -> Error {
    Error::not_found(
        Entity::ModelVersion,
        format!("Model Version (name={name}, version={version}) not found"),
    )
}

/// MLflow's `_validate_model_name`, plus a length limit.
pub fn validate_model_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::Invalid(
            "Missing value for required parameter 'name'. See the API docs for more information about request parameters.".into(),
        ));
    }
    if name.contains('/') || name.contains(':') {
        return Err(Error::Invalid(format!(
            "Invalid model name '{name}'. Names cannot contain '/' or ':'."
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::Invalid(format!(
            "Invalid value '{name}' for parameter 'name' supplied: Names cannot be '.' or '..'."
        )));
    }
    validation::validate_length("Registered model name", name, MAX_MODEL_NAME_LENGTH)
}

/// MLflow's `_validate_model_alias_name`: non-empty, word characters and dashes, ≤ 255.
/// `\w` in MLflow's regex is Unicode-aware, so letters and digits of any script pass.
pub fn validate_alias_name(alias: &str) -> Result<()> {
    if alias.is_empty() {
        return Err(Error::Invalid(
            "Registered model alias name cannot be empty.".into(),
        ));
    }
    if !alias
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::Invalid(format!(
            "Invalid alias name: '{alias}'. Names may only contain alphanumerics, underscores (_), and dashes (-)."
        )));
    }
    validation::validate_length("Registered model alias name", alias, MAX_ALIAS_LENGTH)
}

/// MLflow's `_validate_model_alias_name_reserved`: `latest` (any case) and `v<digits>` name
/// versions already, so they cannot be set.
pub fn validate_alias_settable(alias: &str) -> Result<()> {
    validate_alias_name(alias)?;
    if alias.eq_ignore_ascii_case(LATEST_ALIAS) {
        return Err(Error::Invalid(
            "'latest' alias name (case insensitive) is reserved.".into(),
        ));
    }
    let mut chars = alias.chars();
    if matches!(chars.next(), Some('v' | 'V')) && alias.len() > 1 && chars.all(|c| c.is_numeric()) {
        return Err(Error::Invalid(format!(
            "Version alias name '{alias}' is reserved."
        )));
    }
    Ok(())
}

fn validate_registry_tag(tag: &KeyValue) -> Result<()> {
    if tag.key.is_empty() {
        return Err(Error::Invalid(
            "Missing value for required parameter 'key'. See the API docs for more information about request parameters.".into(),
        ));
    }
    validation::validate_key(KeyKind::Tag, &tag.key)?;
    validation::validate_length("key", &tag.key, MAX_ENTITY_KEY_LENGTH)?;
    validation::validate_length("value", &tag.value, MAX_TAG_VALUE_LENGTH)
}

/// Tags with one value per key, the last one given winning (MLflow builds a dict).
fn deduplicated(tags: &[KeyValue]) -> BTreeMap<&str, &str> {
    tags.iter()
        .map(|tag| (tag.key.as_str(), tag.value.as_str()))
        .collect()
}

/// Steps shared by the registry's write transactions, implemented for both connection types by
/// one macro so each query is written once and compiled per backend (as `with_pool!` does).
trait RegistryTx {
    /// Writes the model's row (a no-op update) so that this transaction holds it until commit,
    /// and returns it. Must be the first statement of a transaction (see the module docs).
    /// A model of another workspace is not found.
    fn lock_model<'a>(
        &'a mut self,
        workspace: &'a str,
        name: &'a str,
    ) -> impl Future<Output = Result<ModelRow>> + Send + 'a;

    /// A live version of a locked model.
    fn live_version<'a>(
        &'a mut self,
        model: &'a ModelRow,
        version: i64,
    ) -> impl Future<Output = Result<VersionRow>> + Send + 'a;

    /// Sets the model's `last_updated_time`.
    fn touch_model(
        &mut self,
        registered_model_id: i64,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send + '_;

    /// Makes the [`OWNER_TAG`] of a model (`version` `None`) or version name `owner`, or
    /// removes it when the row has none.
    fn write_owner_tag<'a>(
        &'a mut self,
        registered_model_id: i64,
        version: Option<i64>,
        owner: Option<&'a Owner>,
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

macro_rules! impl_registry_tx {
    ($connection:ty) => {
        impl RegistryTx for $connection {
            async fn lock_model(&mut self, workspace: &str, name: &str) -> Result<ModelRow> {
                let locked = sqlx::query_scalar::<_, i64>(
                    "UPDATE registered_models SET name = name WHERE name = $1 AND workspace = $2 \
                     RETURNING registered_model_id",
                )
                .bind(name)
                .bind(workspace)
                .fetch_optional(&mut *self)
                .await?
                .ok_or_else(|| model_not_found(name))?;
                let sql = format!(
                    "SELECT {MODEL_COLUMNS} FROM registered_models rm WHERE rm.registered_model_id = $1"
                );
                Ok(sqlx::query_as::<_, ModelRow>(&sql)
                    .bind(locked)
                    .fetch_one(&mut *self)
                    .await?)
            }

            async fn live_version(&mut self, model: &ModelRow, version: i64) -> Result<VersionRow> {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} \
                     WHERE mv.registered_model_id = $1 AND mv.version = $2 AND mv.deleted_time IS NULL"
                );
                sqlx::query_as::<_, VersionRow>(&sql)
                    .bind(model.registered_model_id)
                    .bind(version)
                    .fetch_optional(&mut *self)
                    .await?
                    .ok_or_else(|| version_not_found(&model.name, version))
            }

            async fn touch_model(&mut self, registered_model_id: i64, now: i64) -> Result<()> {
                sqlx::query(
                    "UPDATE registered_models SET last_updated_time = $1 WHERE registered_model_id = $2",
                )
                .bind(now)
                .bind(registered_model_id)
                .execute(&mut *self)
                .await?;
                Ok(())
            }

            async fn write_owner_tag(
                &mut self,
                registered_model_id: i64,
                version: Option<i64>,
                owner: Option<&Owner>,
            ) -> Result<()> {
                let query = match (version, owner) {
                    (None, Some(_)) => {
                        "INSERT INTO registered_model_tags (registered_model_id, key, value) VALUES ($1, $2, $3) \
                         ON CONFLICT (registered_model_id, key) DO UPDATE SET value = excluded.value"
                    }
                    (None, None) => {
                        "DELETE FROM registered_model_tags WHERE registered_model_id = $1 AND key = $2"
                    }
                    // The owner set it: `set_by` names the resource, as its other tags do.
                    (Some(_), Some(_)) => {
                        "INSERT INTO model_version_tags (registered_model_id, key, value, set_by, version) \
                         VALUES ($1, $2, $3, $3, $4) ON CONFLICT (registered_model_id, version, key) \
                         DO UPDATE SET value = excluded.value, set_by = excluded.set_by"
                    }
                    (Some(_), None) => {
                        "DELETE FROM model_version_tags WHERE registered_model_id = $1 AND key = $2 AND version = $3"
                    }
                };
                let mut query = sqlx::query(query).bind(registered_model_id).bind(OWNER_TAG);
                if let Some(owner) = owner {
                    query = query.bind(owner.path());
                }
                if let Some(version) = version {
                    query = query.bind(version);
                }
                query.execute(&mut *self).await?;
                Ok(())
            }
        }
    };
}

impl_registry_tx!(sqlx::PgConnection);
impl_registry_tx!(sqlx::SqliteConnection);

impl Store {
    /// Completes model rows with tags, aliases and latest versions, keeping their order.
    async fn registered_models_from(&self, rows: Vec<ModelRow>) -> Result<Vec<RegisteredModel>> {
        let ids: Vec<i64> = rows.iter().map(|row| row.registered_model_id).collect();
        let mut tags: HashMap<i64, Vec<KeyValue>> = HashMap::new();
        let mut aliases: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
        let mut latest_rows: Vec<VersionRow> = Vec::new();
        for chunk in ids.chunks(IN_LIST_CHUNK) {
            let mut builder = SqlBuilder::new(
                "SELECT registered_model_id, key, value FROM registered_model_tags WHERE registered_model_id IN ",
            );
            builder.bind_list(chunk.iter().map(|id| SqlValue::Int(*id)));
            builder.push(" ORDER BY key");
            let tag_rows = with_pool!(self, pool => bind_values!(sqlx::query_as::<_, ModelTagRow>(&builder.sql), &builder.values)
                .fetch_all(pool)
                .await)?;
            for tag in tag_rows {
                tags.entry(tag.registered_model_id)
                    .or_default()
                    .push(KeyValue::new(tag.key, tag.value));
            }
            for alias in self.alias_rows(chunk).await? {
                aliases
                    .entry(alias.registered_model_id)
                    .or_default()
                    .push((alias.alias, alias.version));
            }
            // The newest live version per stage, computed in the database.
            let mut builder = SqlBuilder::new(&format!(
                "SELECT {VERSION_COLUMNS} FROM (SELECT v.*, ROW_NUMBER() OVER \
                 (PARTITION BY v.registered_model_id, v.current_stage ORDER BY v.version DESC) AS newest \
                 FROM model_versions v WHERE v.deleted_time IS NULL AND v.registered_model_id IN "
            ));
            builder.bind_list(chunk.iter().map(|id| SqlValue::Int(*id)));
            builder.push(
                ") mv JOIN registered_models rm ON rm.registered_model_id = mv.registered_model_id \
                 WHERE mv.newest = 1 ORDER BY mv.registered_model_id, mv.version",
            );
            let version_rows = with_pool!(self, pool => bind_values!(sqlx::query_as::<_, VersionRow>(&builder.sql), &builder.values)
                .fetch_all(pool)
                .await)?;
            latest_rows.extend(version_rows);
        }
        // One batch for the versions' tags and aliases, whatever the number of models.
        let mut latest: HashMap<i64, Vec<ModelVersion>> = HashMap::new();
        let model_ids: Vec<i64> = latest_rows
            .iter()
            .map(|row| row.registered_model_id)
            .collect();
        for (model_id, version) in model_ids
            .into_iter()
            .zip(self.model_versions_from(latest_rows).await?)
        {
            latest.entry(model_id).or_default().push(version);
        }
        let mut models = Vec::with_capacity(rows.len());
        for row in rows {
            models.push(RegisteredModel {
                latest_versions: latest.remove(&row.registered_model_id).unwrap_or_default(),
                tags: tags.remove(&row.registered_model_id).unwrap_or_default(),
                aliases: aliases.remove(&row.registered_model_id).unwrap_or_default(),
                ownership: row.ownership(),
                name: row.name,
                creation_timestamp: row.creation_time,
                last_updated_timestamp: row.last_updated_time,
                description: row.description,
            });
        }
        Ok(models)
    }

    /// Completes version rows with their tags and aliases, keeping their order.
    async fn model_versions_from(&self, rows: Vec<VersionRow>) -> Result<Vec<ModelVersion>> {
        let mut ids: Vec<i64> = rows.iter().map(|row| row.registered_model_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let wanted: BTreeSet<(i64, i64)> = rows
            .iter()
            .map(|row| (row.registered_model_id, row.version))
            .collect();
        let mut tags: HashMap<(i64, i64), Vec<KeyValue>> = HashMap::new();
        let mut aliases: HashMap<(i64, i64), Vec<String>> = HashMap::new();
        for chunk in ids.chunks(IN_LIST_CHUNK) {
            let mut builder = SqlBuilder::new(
                "SELECT registered_model_id, version, key, value FROM model_version_tags WHERE registered_model_id IN ",
            );
            builder.bind_list(chunk.iter().map(|id| SqlValue::Int(*id)));
            builder.push(" ORDER BY key");
            let tag_rows = with_pool!(self, pool => bind_values!(sqlx::query_as::<_, VersionTagRow>(&builder.sql), &builder.values)
                .fetch_all(pool)
                .await)?;
            for tag in tag_rows {
                let key = (tag.registered_model_id, tag.version);
                if wanted.contains(&key) {
                    tags.entry(key)
                        .or_default()
                        .push(KeyValue::new(tag.key, tag.value));
                }
            }
            for alias in self.alias_rows(chunk).await? {
                aliases
                    .entry((alias.registered_model_id, alias.version))
                    .or_default()
                    .push(alias.alias);
            }
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let key = (row.registered_model_id, row.version);
                ModelVersion {
                    current_stage: row.stage(),
                    ownership: row.ownership(),
                    tags: tags.remove(&key).unwrap_or_default(),
                    aliases: aliases.remove(&key).unwrap_or_default(),
                    name: row.name,
                    version: row.version,
                    creation_timestamp: row.creation_time,
                    last_updated_timestamp: row.last_updated_time,
                    description: row.description,
                    source: row.source,
                    storage_location: row.storage_location,
                    run_id: row.run_id,
                    run_link: row.run_link,
                    model_id: row.model_id,
                    user_id: row.user_id,
                    status: row.status,
                    status_message: row.status_message,
                }
            })
            .collect())
    }

    async fn alias_rows(&self, model_ids: &[i64]) -> Result<Vec<AliasRow>> {
        let mut builder = SqlBuilder::new(
            "SELECT registered_model_id, alias, version FROM registered_model_aliases WHERE registered_model_id IN ",
        );
        builder.bind_list(model_ids.iter().map(|id| SqlValue::Int(*id)));
        builder.push(" ORDER BY alias");
        Ok(
            with_pool!(self, pool => bind_values!(sqlx::query_as::<_, AliasRow>(&builder.sql), &builder.values)
            .fetch_all(pool)
            .await)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_in_any_case_and_print_canonically() {
        assert_eq!(Stage::parse("staging").unwrap(), Stage::Staging);
        assert_eq!(Stage::parse("PRODUCTION").unwrap(), Stage::Production);
        assert_eq!(Stage::parse("none").unwrap().as_str(), "None");
        assert!(Stage::parse("bogus").is_err());
        assert!(Stage::parse("Deleted_Internal").is_err());
    }

    #[test]
    fn aliases_follow_mlflow_naming_rules() {
        for good in ["champion", "challenger-2", "a_b", "V", "v1a", "ünïcode"] {
            validate_alias_settable(good).unwrap();
        }
        for reserved in ["latest", "LATEST", "Latest", "v1", "V23"] {
            assert!(validate_alias_settable(reserved).is_err(), "{reserved}");
            // Reserved names can still be read and deleted.
            validate_alias_name(reserved).unwrap();
        }
        for bad in ["", "a b", "a/b", "a.b", &"x".repeat(256)] {
            assert!(validate_alias_name(bad).is_err(), "{bad}");
        }
        validate_alias_name(&"x".repeat(255)).unwrap();
    }

    #[test]
    fn model_names_refuse_slashes_colons_and_blank() {
        validate_model_name("churn model").unwrap();
        for bad in ["", "  ", "a/b", "a:b", ".", ".."] {
            assert!(validate_model_name(bad).is_err(), "{bad}");
        }
    }
}
