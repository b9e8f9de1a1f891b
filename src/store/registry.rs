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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;

use super::experiments::{push_comparison, push_key_value_clause};
use super::filter::{self, Attribute, Clause, Comparator, Key, SearchEntity, Value};
use super::notify::{ChangeKind, Publish, RegistryChange};
use super::search::{self, SortKey, SortKind, SqlBuilder, SqlValue, bind_values};
use super::validation::{self, KeyKind, MAX_ENTITY_KEY_LENGTH};
use super::{BeginWrite, Entity, Error, KeyValue, Page, Result, Store, now_millis, with_pool};

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

/// The Kubernetes resource that declares a registry row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} (uid {})",
            self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// A field of a registry row that a resource can own. Registered models can own
/// `Description`, `Tags` and `Aliases`; model versions `Description`, `Tags` and `Stage`.
/// Owning `Tags` or `Aliases` owns all of them (the resource declares the whole map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedField {
    Aliases,
    Description,
    Stage,
    Tags,
}

impl OwnedField {
    /// The name used in the database and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnedField::Aliases => "aliases",
            OwnedField::Description => "description",
            OwnedField::Stage => "stage",
            OwnedField::Tags => "tags",
        }
    }

    fn parse(text: &str) -> Option<OwnedField> {
        [
            OwnedField::Aliases,
            OwnedField::Description,
            OwnedField::Stage,
            OwnedField::Tags,
        ]
        .into_iter()
        .find(|field| field.as_str() == text)
    }
}

/// Who owns a row and which of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub owner: Owner,
    pub fields: BTreeSet<OwnedField>,
}

impl Ownership {
    fn fields_text(&self) -> String {
        self.fields
            .iter()
            .map(|field| field.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Who makes a change: the REST API (ownership enforced) or the owning resource, by uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    Api,
    Owner(&'a str),
}

impl Actor<'_> {
    /// Whether this actor is `owner` itself.
    pub fn is(self, owner: &Owner) -> bool {
        matches!(self, Actor::Owner(uid) if uid == owner.uid)
    }
}

/// A registry row: a registered model by name, or one of its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryRef<'a> {
    Model(&'a str),
    Version(&'a str, i64),
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

/// A row some resource owns, as [`Store::list_owned`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRow {
    pub name: String,
    /// `None` for the registered model itself.
    pub version: Option<i64>,
    pub ownership: Ownership,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ModelRow {
    registered_model_id: i64,
    name: String,
    description: Option<String>,
    creation_time: i64,
    last_updated_time: i64,
    owner_namespace: Option<String>,
    owner_kind: Option<String>,
    owner_name: Option<String>,
    owner_uid: Option<String>,
    owned_fields: String,
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
    status: String,
    status_message: Option<String>,
    owner_namespace: Option<String>,
    owner_kind: Option<String>,
    owner_name: Option<String>,
    owner_uid: Option<String>,
    owned_fields: String,
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
     rm.last_updated_time, rm.owner_namespace, rm.owner_kind, rm.owner_name, rm.owner_uid, rm.owned_fields";

const VERSION_COLUMNS: &str = "mv.registered_model_id, rm.name, mv.version, mv.creation_time, \
     mv.last_updated_time, mv.description, mv.current_stage, mv.source, mv.storage_location, \
     mv.run_id, mv.run_link, mv.model_id, mv.status, mv.status_message, mv.owner_namespace, \
     mv.owner_kind, mv.owner_name, mv.owner_uid, mv.owned_fields";

/// `FROM` clause that [`VERSION_COLUMNS`] reads.
const VERSIONS_FROM: &str = " FROM model_versions mv JOIN registered_models rm ON rm.registered_model_id = mv.registered_model_id";

/// How many ids one `IN (…)` list binds; well under SQLite's parameter limit.
const IN_LIST_CHUNK: usize = 500;

/// What MLflow writes over a deleted version's fields (it keeps the row as a tombstone).
const REDACTED_SOURCE: &str = "REDACTED-SOURCE-PATH";
const REDACTED_RUN_ID: &str = "REDACTED-RUN-ID";
const REDACTED_RUN_LINK: &str = "REDACTED-RUN-LINK";

fn ownership_from(
    namespace: &Option<String>,
    kind: &Option<String>,
    name: &Option<String>,
    uid: &Option<String>,
    fields: &str,
) -> Option<Ownership> {
    let (Some(namespace), Some(kind), Some(name), Some(uid)) = (namespace, kind, name, uid) else {
        return None;
    };
    Some(Ownership {
        owner: Owner {
            namespace: namespace.clone(),
            kind: kind.clone(),
            name: name.clone(),
            uid: uid.clone(),
        },
        // An unknown name (written by a newer version) is ignored rather than failing reads.
        fields: fields
            .split(',')
            .filter_map(|field| OwnedField::parse(field.trim()))
            .collect(),
    })
}

impl ModelRow {
    fn ownership(&self) -> Option<Ownership> {
        ownership_from(
            &self.owner_namespace,
            &self.owner_kind,
            &self.owner_name,
            &self.owner_uid,
            &self.owned_fields,
        )
    }

    fn describe(&self) -> String {
        format!("registered model '{}'", self.name)
    }
}

impl VersionRow {
    fn ownership(&self) -> Option<Ownership> {
        ownership_from(
            &self.owner_namespace,
            &self.owner_kind,
            &self.owner_name,
            &self.owner_uid,
            &self.owned_fields,
        )
    }

    fn describe(&self) -> String {
        format!("model version '{}' version {}", self.name, self.version)
    }

    fn stage(&self) -> Stage {
        // The column has a CHECK constraint; anything else would be a corrupted row.
        Stage::parse(&self.current_stage).unwrap_or(Stage::None)
    }
}

/// Refuses `actor` changing `field` of an object owned by someone else.
fn check_field_writable(
    ownership: Option<Ownership>,
    field: OwnedField,
    actor: Actor<'_>,
    object: impl FnOnce() -> String,
) -> Result<()> {
    match ownership {
        Some(ownership) if ownership.fields.contains(&field) && !actor.is(&ownership.owner) => {
            Err(Error::OwnedElsewhere {
                object: object(),
                field: Some(field.as_str().to_owned()),
                owner: Box::new(ownership.owner),
            })
        }
        _ => Ok(()),
    }
}

/// Refuses `actor` renaming (`field` = `name`) or deleting (`None`) an object someone else owns.
fn check_object_writable(
    ownership: Option<Ownership>,
    field: Option<&str>,
    actor: Actor<'_>,
    object: impl FnOnce() -> String,
) -> Result<()> {
    match ownership {
        Some(ownership) if !actor.is(&ownership.owner) => Err(Error::OwnedElsewhere {
            object: object(),
            field: field.map(str::to_owned),
            owner: Box::new(ownership.owner),
        }),
        _ => Ok(()),
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

fn check_ownership_fields(target: RegistryRef<'_>, ownership: &Ownership) -> Result<()> {
    let allowed: &[OwnedField] = match target {
        RegistryRef::Model(_) => &[
            OwnedField::Aliases,
            OwnedField::Description,
            OwnedField::Tags,
        ],
        RegistryRef::Version(..) => &[OwnedField::Description, OwnedField::Stage, OwnedField::Tags],
    };
    if let Some(field) = ownership
        .fields
        .iter()
        .find(|field| !allowed.contains(field))
    {
        return Err(Error::Invalid(format!(
            "field '{}' cannot be owned on {}",
            field.as_str(),
            match target {
                RegistryRef::Model(_) => "a registered model",
                RegistryRef::Version(..) => "a model version",
            }
        )));
    }
    let owner = &ownership.owner;
    if [&owner.namespace, &owner.kind, &owner.name, &owner.uid]
        .iter()
        .any(|part| part.is_empty())
    {
        return Err(Error::Invalid(
            "an owner needs a namespace, kind, name and uid".into(),
        ));
    }
    Ok(())
}

/// Steps shared by the registry's write transactions, implemented for both connection types by
/// one macro so each query is written once and compiled per backend (as `with_pool!` does).
trait RegistryTx {
    /// Writes the model's row (a no-op update) so that this transaction holds it until commit,
    /// and returns it. Must be the first statement of a transaction (see the module docs).
    fn lock_model<'a>(
        &'a mut self,
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
}

macro_rules! impl_registry_tx {
    ($connection:ty) => {
        impl RegistryTx for $connection {
            async fn lock_model(&mut self, name: &str) -> Result<ModelRow> {
                let locked = sqlx::query_scalar::<_, i64>(
                    "UPDATE registered_models SET name = name WHERE name = $1 RETURNING registered_model_id",
                )
                .bind(name)
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
        }
    };
}

impl_registry_tx!(sqlx::PgConnection);
impl_registry_tx!(sqlx::SqliteConnection);

/// Where a new version's files are, and the lineage that goes with its source.
struct ResolvedSource {
    source: String,
    storage_location: String,
    run_id: String,
    model_id: Option<String>,
}

impl Store {
    // ---- registered models -------------------------------------------------------------

    /// Creates a registered model, optionally owned from the start.
    pub async fn create_registered_model(
        &self,
        name: &str,
        tags: &[KeyValue],
        description: Option<&str>,
        ownership: Option<&Ownership>,
    ) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        for tag in tags {
            validate_registry_tag(tag)?;
        }
        if let Some(ownership) = ownership {
            check_ownership_fields(RegistryRef::Model(name), ownership)?;
            if let Some(owned) = self.owned_model_name(&ownership.owner.uid).await? {
                return Err(Error::AlreadyExists(format!(
                    "{} already owns registered model '{owned}'",
                    ownership.owner
                )));
            }
        }
        let now = now_millis();
        let inserted = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO registered_models (name, description, creation_time, last_updated_time, \
                 owner_namespace, owner_kind, owner_name, owner_uid, owned_fields) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8) RETURNING registered_model_id",
            )
            .bind(name)
            .bind(description)
            .bind(now)
            .bind(ownership.map(|o| o.owner.namespace.as_str()))
            .bind(ownership.map(|o| o.owner.kind.as_str()))
            .bind(ownership.map(|o| o.owner.name.as_str()))
            .bind(ownership.map(|o| o.owner.uid.as_str()))
            .bind(ownership.map(Ownership::fields_text).unwrap_or_default())
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(id) => {
                    for (key, value) in deduplicated(tags) {
                        sqlx::query("INSERT INTO registered_model_tags (registered_model_id, key, value) VALUES ($1, $2, $3)")
                            .bind(id)
                            .bind(key)
                            .bind(value)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
                Err(error) if super::error::is_unique_violation(&error) => Err(error),
                Err(error) => return Err(error.into()),
            }
        });
        match inserted {
            Ok(()) => self.get_registered_model(name).await,
            // Either the name or (raced) the owner's uid is taken; the name is the usual case.
            Err(_) => Err(Error::AlreadyExists(format!(
                "Registered Model (name={name}) already exists."
            ))),
        }
    }

    /// Reads a registered model with its latest versions, tags and aliases.
    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        let sql = format!("SELECT {MODEL_COLUMNS} FROM registered_models rm WHERE rm.name = $1");
        let row = with_pool!(self, pool => sqlx::query_as::<_, ModelRow>(&sql)
            .bind(name)
            .fetch_optional(pool)
            .await)?
        .ok_or_else(|| model_not_found(name))?;
        Ok(self.registered_models_from(vec![row]).await?.remove(0))
    }

    /// Sets (or, with `None`, clears) a registered model's description.
    pub async fn update_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            check_field_writable(model.ownership(), OwnedField::Description, actor, || model.describe())?;
            sqlx::query("UPDATE registered_models SET description = $1, last_updated_time = $2 WHERE registered_model_id = $3")
                .bind(description)
                .bind(now_millis())
                .bind(model.registered_model_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.get_registered_model(name).await
    }

    /// Renames a registered model; versions, tags and aliases follow (they key on its id).
    /// A taken name is RESOURCE_ALREADY_EXISTS, as in MLflow. An owned model, or one with an
    /// owned version, is renamed only by its owner: the resources refer to it by name.
    pub async fn rename_registered_model(
        &self,
        name: &str,
        new_name: &str,
        actor: Actor<'_>,
    ) -> Result<RegisteredModel> {
        if new_name.trim().is_empty() {
            return Err(Error::Invalid(
                "Missing value for required parameter 'new_name'. See the API docs for more information about request parameters.".into(),
            ));
        }
        validate_model_name(new_name)?;
        validate_model_name(name)?;
        let now = now_millis();
        let renamed = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            check_object_writable(model.ownership(), Some("name"), actor, || model.describe())?;
            let sql = format!(
                "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.registered_model_id = $1 \
                 AND mv.deleted_time IS NULL AND mv.owner_uid IS NOT NULL ORDER BY mv.version"
            );
            let owned_versions = sqlx::query_as::<_, VersionRow>(&sql)
                .bind(model.registered_model_id)
                .fetch_all(&mut *tx)
                .await?;
            for version in owned_versions {
                check_object_writable(version.ownership(), Some("name"), actor, || version.describe())?;
            }
            let updated = sqlx::query("UPDATE registered_models SET name = $1, last_updated_time = $2 WHERE registered_model_id = $3")
                .bind(new_name)
                .bind(now)
                .bind(model.registered_model_id)
                .execute(&mut *tx)
                .await;
            match updated {
                Ok(_) => {
                    sqlx::query("UPDATE model_versions SET last_updated_time = $1 WHERE registered_model_id = $2")
                        .bind(now)
                        .bind(model.registered_model_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.publish(&[RegistryChange {
                        previous_name: Some(name.to_owned()),
                        ..RegistryChange::new(ChangeKind::ModelRenamed, new_name)
                    }])
                    .await?;
                    tx.commit().await?;
                    true
                }
                Err(error) if super::error::is_unique_violation(&error) => false,
                Err(error) => return Err(error.into()),
            }
        });
        if !renamed {
            return Err(Error::AlreadyExists(format!(
                "Registered Model (name={new_name}) already exists."
            )));
        }
        self.get_registered_model(new_name).await
    }

    /// Deletes a registered model with its versions, tags and aliases (a hard delete, as MLflow
    /// does). Refused through the API when the model or one of its versions is owned.
    pub async fn delete_registered_model(&self, name: &str, actor: Actor<'_>) -> Result<()> {
        validate_model_name(name)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            check_object_writable(model.ownership(), None, actor, || model.describe())?;
            let sql = format!(
                "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.registered_model_id = $1 \
                 AND mv.deleted_time IS NULL AND mv.owner_uid IS NOT NULL ORDER BY mv.version"
            );
            let owned_versions = sqlx::query_as::<_, VersionRow>(&sql)
                .bind(model.registered_model_id)
                .fetch_all(&mut *tx)
                .await?;
            for version in owned_versions {
                check_object_writable(version.ownership(), None, actor, || version.describe())?;
            }
            // Children first: SQLite enforces the foreign keys, but the cascade needs no order
            // on Postgres either; explicit deletes keep both identical.
            for table in ["registered_model_aliases", "model_version_tags", "model_versions", "registered_model_tags"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE registered_model_id = $1"))
                    .bind(model.registered_model_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM registered_models WHERE registered_model_id = $1")
                .bind(model.registered_model_id)
                .execute(&mut *tx)
                .await?;
            tx.publish(&[RegistryChange::new(ChangeKind::ModelDeleted, name)]).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets (upserts) a registered model tag.
    pub async fn set_registered_model_tag(
        &self,
        name: &str,
        tag: &KeyValue,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(tag)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            check_field_writable(model.ownership(), OwnedField::Tags, actor, || model.describe())?;
            sqlx::query(
                "INSERT INTO registered_model_tags (registered_model_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (registered_model_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(model.registered_model_id)
            .bind(&tag.key)
            .bind(&tag.value)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a registered model tag; a missing tag is fine (MLflow answers `{}`).
    pub async fn delete_registered_model_tag(
        &self,
        name: &str,
        key: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(&KeyValue::new(key, ""))?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            check_field_writable(model.ownership(), OwnedField::Tags, actor, || model.describe())?;
            sqlx::query("DELETE FROM registered_model_tags WHERE registered_model_id = $1 AND key = $2")
                .bind(model.registered_model_id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The newest live version in each of `stages` (all stages when empty), by version.
    pub async fn get_latest_versions(
        &self,
        name: &str,
        stages: &[Stage],
    ) -> Result<Vec<ModelVersion>> {
        let model = self.get_registered_model(name).await?;
        let mut versions: Vec<ModelVersion> = model
            .latest_versions
            .into_iter()
            .filter(|version| stages.is_empty() || stages.contains(&version.current_stage))
            .collect();
        versions.sort_by_key(|version| version.version);
        Ok(versions)
    }

    /// Searches registered models with MLflow's filter grammar; keyset-paged. Prompts (models
    /// tagged `mlflow.prompt.is_prompt=true`) are left out unless the filter asks for them.
    pub async fn search_registered_models(
        &self,
        request: &RegisteredModelSearch,
    ) -> Result<Page<RegisteredModel>> {
        let max_results =
            search::check_max_results(request.max_results, MAX_REGISTERED_MODELS_PAGE)?;
        let clauses = filter::parse_filter(SearchEntity::RegisteredModels, &request.filter)?;
        let mut keys: Vec<SortKey> = Vec::new();
        for order_by in &request.order_by {
            let parsed = filter::parse_order_by(SearchEntity::RegisteredModels, order_by)?;
            let (expr, kind) = match parsed.key {
                Key::Attribute(Attribute::Name) => ("rm.name", SortKind::Text),
                Key::Attribute(Attribute::LastUpdatedTimestamp) => {
                    ("rm.last_updated_time", SortKind::Int)
                }
                Key::Attribute(Attribute::CreationTimestamp) => ("rm.creation_time", SortKind::Int),
                other => {
                    return Err(Error::Invalid(format!(
                        "Invalid order by key '{other:?}' specified. Valid keys are 'name', 'timestamp'"
                    )));
                }
            };
            push_unique_sort_key(&mut keys, expr, kind, !parsed.ascending, &request.order_by)?;
        }
        // Names are unique, so ending on the name makes the order total (keyset paging needs it).
        if !keys.iter().any(|key| key.expr == "rm.name") {
            keys.push(SortKey::new("rm.name", SortKind::Text, false, false));
        }
        let after = search::decode_page_token(&request.page_token, &keys)?;

        let mut builder = SqlBuilder::new(&format!("SELECT {MODEL_COLUMNS}"));
        search::push_sort_columns(&mut builder, &keys);
        builder.push(" FROM registered_models rm WHERE 1 = 1");
        let (clauses, querying_prompts) = without_prompt_clauses(clauses);
        for clause in &clauses {
            builder.push(" AND ");
            match &clause.key {
                Key::Attribute(Attribute::Name) => {
                    push_comparison(&mut builder, self.backend(), "rm.name", clause, false)?
                }
                Key::Tag(key) => push_key_value_clause(
                    &mut builder,
                    self.backend(),
                    "SELECT 1 FROM registered_model_tags t WHERE t.registered_model_id = rm.registered_model_id AND t.key = ",
                    key,
                    "t.value",
                    clause,
                )?,
                other => {
                    return Err(Error::Invalid(format!(
                        "Invalid filter key for registered models: {other:?}"
                    )));
                }
            }
        }
        if !querying_prompts {
            builder.push(
                " AND NOT EXISTS (SELECT 1 FROM registered_model_tags p \
                 WHERE p.registered_model_id = rm.registered_model_id AND p.key = ",
            );
            builder.bind(SqlValue::Text(IS_PROMPT_TAG.into()));
            builder.push(" AND p.value = ");
            builder.bind(SqlValue::Text("true".into()));
            builder.push(")");
        }
        let (rows, next_page_token) = self
            .fetch_page::<ModelRow>(builder, &keys, after.as_deref(), max_results)
            .await?;
        Ok(Page {
            items: self.registered_models_from(rows).await?,
            next_page_token,
        })
    }

    // ---- aliases -----------------------------------------------------------------------

    /// Points `alias` at `version`, moving it if it exists. `latest` and `v<N>` are reserved.
    pub async fn set_registered_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: i64,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_alias_settable(alias)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            tx.live_version(&model, version).await?;
            check_field_writable(model.ownership(), OwnedField::Aliases, actor, || model.describe())?;
            let previous = sqlx::query_scalar::<_, i64>(
                "SELECT version FROM registered_model_aliases WHERE registered_model_id = $1 AND alias = $2",
            )
            .bind(model.registered_model_id)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await?;
            if previous != Some(version) {
                sqlx::query(
                    "INSERT INTO registered_model_aliases (registered_model_id, alias, version) VALUES ($1, $2, $3) \
                     ON CONFLICT (registered_model_id, alias) DO UPDATE SET version = excluded.version",
                )
                .bind(model.registered_model_id)
                .bind(alias)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                tx.publish(&[RegistryChange {
                    version: Some(version),
                    alias: Some(alias.to_owned()),
                    ..RegistryChange::new(ChangeKind::AliasSet, name)
                }])
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes an alias; removing one that does not exist is fine (MLflow answers `{}`).
    pub async fn delete_registered_model_alias(
        &self,
        name: &str,
        alias: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_alias_name(alias)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            check_field_writable(model.ownership(), OwnedField::Aliases, actor, || model.describe())?;
            let deleted = sqlx::query("DELETE FROM registered_model_aliases WHERE registered_model_id = $1 AND alias = $2")
                .bind(model.registered_model_id)
                .bind(alias)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted > 0 {
                tx.publish(&[RegistryChange {
                    alias: Some(alias.to_owned()),
                    ..RegistryChange::new(ChangeKind::AliasDeleted, name)
                }])
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The version an alias points at; `latest` (any case) is the highest live version. An
    /// unknown alias is INVALID_PARAMETER_VALUE, as in MLflow 3.17.
    pub async fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion> {
        validate_model_name(name)?;
        validate_alias_name(alias)?;
        let model = self.get_registered_model(name).await?;
        let version = if alias.eq_ignore_ascii_case(LATEST_ALIAS) {
            model
                .latest_versions
                .iter()
                .map(|version| version.version)
                .max()
                .ok_or_else(|| {
                    Error::not_found(
                        Entity::ModelVersion,
                        format!("Latest version not found for model {name}."),
                    )
                })?
        } else {
            model
                .aliases
                .iter()
                .find(|(known, _)| known == alias)
                .map(|(_, version)| *version)
                .ok_or_else(|| Error::AliasNotFound {
                    model: name.to_owned(),
                    alias: alias.to_owned(),
                })?
        };
        self.get_model_version(name, version).await
    }

    // ---- model versions ----------------------------------------------------------------

    /// Registers a new version of an existing model. Its number is one more than the highest
    /// ever handed out for the model, assigned atomically. The source is validated against
    /// `run_id`/`model_id` as MLflow's server does, and its download location resolved.
    pub async fn create_model_version(&self, new: NewModelVersion) -> Result<ModelVersion> {
        validate_model_name(&new.name)?;
        for tag in &new.tags {
            validate_registry_tag(tag)?;
        }
        if let Some(ownership) = &new.ownership {
            check_ownership_fields(RegistryRef::Version(&new.name, 0), ownership)?;
            if let Some(existing) = self.owned_version(&ownership.owner.uid).await? {
                return Ok(existing);
            }
        }
        let resolved = self.resolve_source(&new).await?;
        let ownership = new.ownership.as_ref();
        let now = now_millis();
        let version = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // The counter update is the first write: it locks the model row until commit, so
            // concurrent creates on one model take turns and each sees the previous number.
            let (registered_model_id, version) = sqlx::query_as::<_, (i64, i64)>(
                "UPDATE registered_models SET last_version = last_version + 1, last_updated_time = $1 \
                 WHERE name = $2 RETURNING registered_model_id, last_version",
            )
            .bind(now)
            .bind(&new.name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| model_not_found(&new.name))?;
            sqlx::query(
                "INSERT INTO model_versions (registered_model_id, version, creation_time, last_updated_time, \
                 description, current_stage, source, storage_location, run_id, run_link, model_id, status, \
                 owner_namespace, owner_kind, owner_name, owner_uid, owned_fields) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(registered_model_id)
            .bind(version)
            .bind(now)
            .bind(new.description.as_deref().unwrap_or_default())
            .bind(Stage::None.as_str())
            .bind(&resolved.source)
            .bind(&resolved.storage_location)
            .bind(&resolved.run_id)
            .bind(new.run_link.as_deref().unwrap_or_default())
            .bind(resolved.model_id.as_deref())
            .bind(STATUS_READY)
            .bind(ownership.map(|o| o.owner.namespace.as_str()))
            .bind(ownership.map(|o| o.owner.kind.as_str()))
            .bind(ownership.map(|o| o.owner.name.as_str()))
            .bind(ownership.map(|o| o.owner.uid.as_str()))
            .bind(ownership.map(Ownership::fields_text).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
            for (key, value) in deduplicated(&new.tags) {
                sqlx::query("INSERT INTO model_version_tags (registered_model_id, version, key, value) VALUES ($1, $2, $3, $4)")
                    .bind(registered_model_id)
                    .bind(version)
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.publish(&[RegistryChange {
                version: Some(version),
                stage: Some(Stage::None.as_str().to_owned()),
                ..RegistryChange::new(ChangeKind::VersionCreated, &new.name)
            }])
            .await?;
            tx.commit().await?;
            version
        });
        if let Some(model_id) = &resolved.model_id
            && let Err(error) = self.record_registration(model_id, &new.name, version).await
        {
            // The version is committed: failing the request now would make the client register
            // it again. The tag only feeds the UI.
            tracing::warn!(%model_id, name = %new.name, version, error = %error,
                "could not record the registration on the logged model");
        }
        self.get_model_version(&new.name, version).await
    }

    /// Reads a live model version with its tags and aliases.
    pub async fn get_model_version(&self, name: &str, version: i64) -> Result<ModelVersion> {
        validate_model_name(name)?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE rm.name = $1 AND mv.version = $2 AND mv.deleted_time IS NULL"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, VersionRow>(&sql)
            .bind(name)
            .bind(version)
            .fetch_optional(pool)
            .await)?
        .ok_or_else(|| version_not_found(name, version))?;
        Ok(self.model_versions_from(vec![row]).await?.remove(0))
    }

    /// Where a version's files are: the run's or logged model's artifact location for
    /// `runs:/`/`models:/` sources, the source itself otherwise.
    pub async fn get_model_version_download_uri(&self, name: &str, version: i64) -> Result<String> {
        Ok(self
            .get_model_version(name, version)
            .await?
            .storage_location)
    }

    /// Sets (or, with `None`, clears) a version's description.
    pub async fn update_model_version(
        &self,
        name: &str,
        version: i64,
        description: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<ModelVersion> {
        validate_model_name(name)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            let row = tx.live_version(&model, version).await?;
            check_field_writable(row.ownership(), OwnedField::Description, actor, || row.describe())?;
            sqlx::query("UPDATE model_versions SET description = $1, last_updated_time = $2 WHERE registered_model_id = $3 AND version = $4")
                .bind(description)
                .bind(now_millis())
                .bind(model.registered_model_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.get_model_version(name, version).await
    }

    /// Moves a version to `stage`. With `archive_existing_versions` (only for Staging and
    /// Production) every other live version in that stage becomes Archived in the same
    /// transaction; an owned stage among them refuses the whole transition.
    pub async fn transition_model_version_stage(
        &self,
        name: &str,
        version: i64,
        stage: Stage,
        archive_existing_versions: bool,
        actor: Actor<'_>,
    ) -> Result<ModelVersion> {
        validate_model_name(name)?;
        if archive_existing_versions && !stage.is_active() {
            return Err(Error::Invalid(format!(
                "Model version transition cannot archive existing model versions because '{stage}' \
                 is not an Active stage. Valid stages are ['Staging', 'Production']"
            )));
        }
        let now = now_millis();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            let row = tx.live_version(&model, version).await?;
            check_field_writable(row.ownership(), OwnedField::Stage, actor, || row.describe())?;
            let mut changes = Vec::new();
            if archive_existing_versions {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.registered_model_id = $1 \
                     AND mv.version != $2 AND mv.current_stage = $3 AND mv.deleted_time IS NULL ORDER BY mv.version"
                );
                let others = sqlx::query_as::<_, VersionRow>(&sql)
                    .bind(model.registered_model_id)
                    .bind(version)
                    .bind(stage.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                for other in &others {
                    check_field_writable(other.ownership(), OwnedField::Stage, actor, || other.describe())?;
                    changes.push(RegistryChange {
                        version: Some(other.version),
                        stage: Some(Stage::Archived.as_str().to_owned()),
                        ..RegistryChange::new(ChangeKind::StageChanged, name)
                    });
                }
                sqlx::query(
                    "UPDATE model_versions SET current_stage = $1, last_updated_time = $2 WHERE registered_model_id = $3 \
                     AND version != $4 AND current_stage = $5 AND deleted_time IS NULL",
                )
                .bind(Stage::Archived.as_str())
                .bind(now)
                .bind(model.registered_model_id)
                .bind(version)
                .bind(stage.as_str())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE model_versions SET current_stage = $1, last_updated_time = $2 WHERE registered_model_id = $3 AND version = $4")
                .bind(stage.as_str())
                .bind(now)
                .bind(model.registered_model_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.touch_model(model.registered_model_id, now).await?;
            changes.push(RegistryChange {
                version: Some(version),
                stage: Some(stage.as_str().to_owned()),
                ..RegistryChange::new(ChangeKind::StageChanged, name)
            });
            tx.publish(&changes).await?;
            tx.commit().await?;
        });
        self.get_model_version(name, version).await
    }

    /// Deletes a version (a tombstone keeps its number, which is never handed out again) and
    /// the aliases pointing at it. Refused through the API when the version is owned, or when
    /// an alias pointing at it is owned by the model's resource.
    pub async fn delete_model_version(
        &self,
        name: &str,
        version: i64,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        let now = now_millis();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            let row = tx.live_version(&model, version).await?;
            check_object_writable(row.ownership(), None, actor, || row.describe())?;
            let aliases = sqlx::query_scalar::<_, String>(
                "SELECT alias FROM registered_model_aliases WHERE registered_model_id = $1 AND version = $2 ORDER BY alias",
            )
            .bind(model.registered_model_id)
            .bind(version)
            .fetch_all(&mut *tx)
            .await?;
            if !aliases.is_empty() {
                check_field_writable(model.ownership(), OwnedField::Aliases, actor, || model.describe())?;
            }
            sqlx::query("DELETE FROM registered_model_aliases WHERE registered_model_id = $1 AND version = $2")
                .bind(model.registered_model_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE model_versions SET deleted_time = $1, last_updated_time = $1, description = NULL, \
                 source = $2, storage_location = $2, run_id = $3, run_link = $4, status_message = NULL, \
                 owner_namespace = NULL, owner_kind = NULL, owner_name = NULL, owner_uid = NULL, owned_fields = '' \
                 WHERE registered_model_id = $5 AND version = $6",
            )
            .bind(now)
            .bind(REDACTED_SOURCE)
            .bind(REDACTED_RUN_ID)
            .bind(REDACTED_RUN_LINK)
            .bind(model.registered_model_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
            tx.touch_model(model.registered_model_id, now).await?;
            let mut changes: Vec<RegistryChange> = aliases
                .into_iter()
                .map(|alias| RegistryChange {
                    alias: Some(alias),
                    ..RegistryChange::new(ChangeKind::AliasDeleted, name)
                })
                .collect();
            changes.push(RegistryChange {
                version: Some(version),
                ..RegistryChange::new(ChangeKind::VersionDeleted, name)
            });
            tx.publish(&changes).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets (upserts) a model version tag.
    pub async fn set_model_version_tag(
        &self,
        name: &str,
        version: i64,
        tag: &KeyValue,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(tag)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            let row = tx.live_version(&model, version).await?;
            check_field_writable(row.ownership(), OwnedField::Tags, actor, || row.describe())?;
            sqlx::query(
                "INSERT INTO model_version_tags (registered_model_id, version, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (registered_model_id, version, key) DO UPDATE SET value = excluded.value",
            )
            .bind(model.registered_model_id)
            .bind(version)
            .bind(&tag.key)
            .bind(&tag.value)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a model version tag; a missing tag is fine (MLflow answers `{}`).
    pub async fn delete_model_version_tag(
        &self,
        name: &str,
        version: i64,
        key: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(&KeyValue::new(key, ""))?;
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            let row = tx.live_version(&model, version).await?;
            check_field_writable(row.ownership(), OwnedField::Tags, actor, || row.describe())?;
            sqlx::query("DELETE FROM model_version_tags WHERE registered_model_id = $1 AND version = $2 AND key = $3")
                .bind(model.registered_model_id)
                .bind(version)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Searches live model versions with MLflow's filter grammar; keyset-paged. Default order
    /// as MLflow's SQL store: `last_updated_timestamp DESC, name ASC, version_number DESC`.
    pub async fn search_model_versions(
        &self,
        request: &ModelVersionSearch,
    ) -> Result<Page<ModelVersion>> {
        let max_results = search::check_max_results(request.max_results, MAX_MODEL_VERSIONS_PAGE)?;
        let clauses = filter::parse_filter(SearchEntity::ModelVersions, &request.filter)?;
        let default_order = [
            "last_updated_timestamp DESC".to_owned(),
            "name ASC".to_owned(),
            "version_number DESC".to_owned(),
        ];
        let order_by: &[String] = if request.order_by.is_empty() {
            &default_order
        } else {
            &request.order_by
        };
        let mut keys: Vec<SortKey> = Vec::new();
        for entry in order_by {
            let parsed = filter::parse_order_by(SearchEntity::ModelVersions, entry)?;
            let (expr, kind) = match parsed.key {
                Key::Attribute(Attribute::Name) => ("rm.name", SortKind::Text),
                Key::Attribute(Attribute::VersionNumber) => ("mv.version", SortKind::Int),
                Key::Attribute(Attribute::CreationTimestamp) => ("mv.creation_time", SortKind::Int),
                Key::Attribute(Attribute::LastUpdatedTimestamp) => {
                    ("mv.last_updated_time", SortKind::Int)
                }
                other => {
                    return Err(Error::Invalid(format!(
                        "Invalid order by key '{other:?}' specified. Valid keys are name, version_number, \
                         creation_timestamp, last_updated_timestamp"
                    )));
                }
            };
            push_unique_sort_key(&mut keys, expr, kind, !parsed.ascending, order_by)?;
        }
        // (name, version) is unique: with both present the order is total.
        if !keys.iter().any(|key| key.expr == "rm.name") {
            keys.push(SortKey::new("rm.name", SortKind::Text, false, false));
        }
        if !keys.iter().any(|key| key.expr == "mv.version") {
            keys.push(SortKey::new("mv.version", SortKind::Int, true, false));
        }
        let after = search::decode_page_token(&request.page_token, &keys)?;

        let mut builder = SqlBuilder::new(&format!("SELECT {VERSION_COLUMNS}"));
        search::push_sort_columns(&mut builder, &keys);
        builder.push(VERSIONS_FROM);
        builder.push(" WHERE mv.deleted_time IS NULL");
        let (clauses, querying_prompts) = without_prompt_clauses(clauses);
        for clause in &clauses {
            builder.push(" AND ");
            let backend = self.backend();
            match &clause.key {
                Key::Attribute(Attribute::Name) => {
                    push_comparison(&mut builder, backend, "rm.name", clause, false)?
                }
                Key::Attribute(Attribute::RunId) => {
                    push_comparison(&mut builder, backend, "mv.run_id", clause, false)?
                }
                Key::Attribute(Attribute::SourcePath) => {
                    push_comparison(&mut builder, backend, "mv.source", clause, false)?
                }
                Key::Attribute(Attribute::VersionNumber) => {
                    push_comparison(&mut builder, backend, "mv.version", clause, true)?
                }
                Key::Tag(key) => push_key_value_clause(
                    &mut builder,
                    backend,
                    "SELECT 1 FROM model_version_tags t WHERE t.registered_model_id = mv.registered_model_id \
                     AND t.version = mv.version AND t.key = ",
                    key,
                    "t.value",
                    clause,
                )?,
                other => {
                    return Err(Error::Invalid(format!(
                        "Invalid filter key for model versions: {other:?}"
                    )));
                }
            }
        }
        if !querying_prompts {
            // As MLflow: a model any of whose versions is tagged as a prompt is a prompt.
            builder.push(
                " AND NOT EXISTS (SELECT 1 FROM model_version_tags p \
                 WHERE p.registered_model_id = mv.registered_model_id AND p.key = ",
            );
            builder.bind(SqlValue::Text(IS_PROMPT_TAG.into()));
            builder.push(" AND p.value = ");
            builder.bind(SqlValue::Text("true".into()));
            builder.push(")");
        }
        let (rows, next_page_token) = self
            .fetch_page::<VersionRow>(builder, &keys, after.as_deref(), max_results)
            .await?;
        Ok(Page {
            items: self.model_versions_from(rows).await?,
            next_page_token,
        })
    }

    // ---- ownership ---------------------------------------------------------------------

    /// Records that `ownership.owner` declares the row and owns `ownership.fields` (replacing
    /// the fields it owned before). Refused with [`Error::OwnedElsewhere`] when another
    /// resource owns the row: two resources declaring one model is a conflict for a human.
    pub async fn set_owner(&self, target: RegistryRef<'_>, ownership: &Ownership) -> Result<()> {
        check_ownership_fields(target, ownership)?;
        self.write_owner(target, Some(ownership), &ownership.owner.uid)
            .await
    }

    /// Releases the row from the resource with `uid` (a `Retain` deletion policy): all its
    /// fields become writable through the API. A row that `uid` does not own is left alone;
    /// one owned by another resource is refused.
    pub async fn clear_owner(&self, target: RegistryRef<'_>, uid: &str) -> Result<()> {
        self.write_owner(target, None, uid).await
    }

    /// Every live row that the resource with `uid` owns (at most one model and one version,
    /// since a uid owns at most one row of each).
    pub async fn list_owned(&self, uid: &str) -> Result<Vec<OwnedRow>> {
        let mut owned = Vec::new();
        let model_sql =
            format!("SELECT {MODEL_COLUMNS} FROM registered_models rm WHERE rm.owner_uid = $1");
        let models = with_pool!(self, pool => sqlx::query_as::<_, ModelRow>(&model_sql)
            .bind(uid)
            .fetch_all(pool)
            .await)?;
        for model in models {
            if let Some(ownership) = model.ownership() {
                owned.push(OwnedRow {
                    name: model.name,
                    version: None,
                    ownership,
                });
            }
        }
        let version_sql = format!(
            "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.owner_uid = $1 AND mv.deleted_time IS NULL"
        );
        let versions = with_pool!(self, pool => sqlx::query_as::<_, VersionRow>(&version_sql)
            .bind(uid)
            .fetch_all(pool)
            .await)?;
        for version in versions {
            if let Some(ownership) = version.ownership() {
                owned.push(OwnedRow {
                    name: version.name,
                    version: Some(version.version),
                    ownership,
                });
            }
        }
        Ok(owned)
    }

    async fn write_owner(
        &self,
        target: RegistryRef<'_>,
        ownership: Option<&Ownership>,
        uid: &str,
    ) -> Result<()> {
        let name = match target {
            RegistryRef::Model(name) | RegistryRef::Version(name, _) => name,
        };
        validate_model_name(name)?;
        let actor = Actor::Owner(uid);
        let written = with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(name).await?;
            let (current, table, key_clause, version) = match target {
                RegistryRef::Model(_) => (model.ownership(), "registered_models", "registered_model_id = $6", None),
                RegistryRef::Version(_, version) => {
                    let row = tx.live_version(&model, version).await?;
                    (row.ownership(), "model_versions", "registered_model_id = $6 AND version = $7", Some(version))
                }
            };
            let describe = || match version {
                None => model.describe(),
                Some(version) => format!("model version '{name}' version {version}"),
            };
            match (&current, ownership) {
                // Releasing a row someone else owns, or that nobody owns: leave it.
                (None, None) => return Ok(()),
                (Some(current), None) if current.owner.uid != uid => return Ok(()),
                _ => check_object_writable(current, Some("owner"), actor, describe)?,
            }
            let sql = format!(
                "UPDATE {table} SET owner_namespace = $1, owner_kind = $2, owner_name = $3, owner_uid = $4, \
                 owned_fields = $5 WHERE {key_clause}"
            );
            let mut query = sqlx::query(&sql)
                .bind(ownership.map(|o| o.owner.namespace.as_str()))
                .bind(ownership.map(|o| o.owner.kind.as_str()))
                .bind(ownership.map(|o| o.owner.name.as_str()))
                .bind(ownership.map(|o| o.owner.uid.as_str()))
                .bind(ownership.map(Ownership::fields_text).unwrap_or_default())
                .bind(model.registered_model_id);
            if let Some(version) = version {
                query = query.bind(version);
            }
            let written = query.execute(&mut *tx).await;
            match written {
                Ok(_) => {
                    tx.commit().await?;
                    Ok(())
                }
                Err(error) if super::error::is_unique_violation(&error) => Err(error),
                Err(error) => return Err(error.into()),
            }
        });
        written.map_err(|_| {
            Error::AlreadyExists(format!(
                "the resource with uid {uid} already owns another {}",
                match target {
                    RegistryRef::Model(_) => "registered model",
                    RegistryRef::Version(..) => "model version",
                }
            ))
        })
    }

    async fn owned_model_name(&self, uid: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, pool => sqlx::query_scalar::<_, String>(
            "SELECT name FROM registered_models WHERE owner_uid = $1")
            .bind(uid)
            .fetch_optional(pool)
            .await)?)
    }

    async fn owned_version(&self, uid: &str) -> Result<Option<ModelVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.owner_uid = $1 AND mv.deleted_time IS NULL"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, VersionRow>(&sql)
            .bind(uid)
            .fetch_optional(pool)
            .await)?;
        match row {
            Some(row) => Ok(self.model_versions_from(vec![row]).await?.pop()),
            None => Ok(None),
        }
    }

    // ---- loading -----------------------------------------------------------------------

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

    // ---- sources -----------------------------------------------------------------------

    /// MLflow's source checks (`_validate_source_run`, `_validate_source_model`,
    /// `_resolve_registered_model_source_lineage`) and the download location of the version.
    async fn resolve_source(&self, new: &NewModelVersion) -> Result<ResolvedSource> {
        let source = new.source.as_str();
        if source.is_empty() {
            return Err(Error::Invalid(
                "Missing value for required parameter 'source'. See the API docs for more information about request parameters.".into(),
            ));
        }
        let run_id = new.run_id.clone().unwrap_or_default();
        let model_id = new.model_id.clone().filter(|id| !id.is_empty());
        let uri = UriParts::split(source);

        if uri.scheme == "models" {
            if uri.authority.is_some() {
                return Err(Error::Invalid(format!(
                    "Invalid model version source: '{source}'. Registered model sources must use the active model registry."
                )));
            }
            let reference = parse_models_uri(source, uri.path)?;
            return match reference {
                ModelsUri::LoggedModel(source_model_id) => {
                    if model_id.as_deref() != Some(source_model_id) {
                        return Err(invalid_source(source, "model_id"));
                    }
                    check_relative_paths(source)?;
                    let logged = self.logged_model_location(source_model_id).await?;
                    Ok(ResolvedSource {
                        source: source.to_owned(),
                        storage_location: logged.artifact_uri,
                        run_id: if run_id.is_empty() {
                            logged.source_run_id.unwrap_or_default()
                        } else {
                            run_id
                        },
                        model_id,
                    })
                }
                ModelsUri::Registered(name, selector) => {
                    let referenced = self.resolve_registered_reference(name, selector).await?;
                    let run_matches = new
                        .run_id
                        .as_ref()
                        .is_none_or(|given| *given == referenced.run_id);
                    let model_matches = new.model_id.as_ref().is_none_or(|given| {
                        given.as_str() == referenced.model_id.as_deref().unwrap_or_default()
                    });
                    if !run_matches || !model_matches {
                        return Err(Error::Invalid(format!(
                            "Invalid model version source: '{source}'. The run_id and model_id request \
                             parameters must match the referenced model version."
                        )));
                    }
                    check_relative_paths(source)?;
                    Ok(ResolvedSource {
                        source: format!("models:/{}/{}", referenced.name, referenced.version),
                        storage_location: referenced.storage_location,
                        run_id: new.run_id.clone().unwrap_or(referenced.run_id),
                        model_id: model_id.or(referenced.model_id),
                    })
                }
            };
        }

        if let Some(model_id) = &model_id {
            // A logged model's files: the source must lie inside its artifact location.
            if is_local(&uri) {
                return Err(Error::Invalid(format!(
                    "Invalid model version source: '{source}'. To use a local path as a model version source, \
                     the model_id request parameter has to be specified and the local path has to be contained \
                     within the artifact directory of the run specified by the model_id."
                )));
            }
            check_relative_paths(source)?;
            if uri.scheme == "runs" {
                return Err(invalid_source(source, "model_id"));
            }
            if is_mlflow_artifacts(&uri) {
                let logged = self.logged_model_location(model_id).await?;
                if !is_within_root(source, &logged.artifact_uri) {
                    return Err(invalid_source(source, "model_id"));
                }
                return Ok(ResolvedSource {
                    source: source.to_owned(),
                    storage_location: source.to_owned(),
                    run_id: if run_id.is_empty() {
                        logged.source_run_id.unwrap_or_default()
                    } else {
                        run_id
                    },
                    model_id: Some(model_id.clone()),
                });
            }
            return Ok(ResolvedSource {
                source: source.to_owned(),
                storage_location: source.to_owned(),
                run_id,
                model_id: Some(model_id.clone()),
            });
        }

        if is_local(&uri) {
            if !run_id.is_empty()
                && let Some(run) = self.source_run(&run_id).await?
            {
                let artifact_uri = UriParts::split(&run.artifact_uri);
                if is_local(&artifact_uri)
                    && path_is_within(&local_path(&uri), &local_path(&artifact_uri))
                {
                    return Ok(ResolvedSource {
                        source: source.to_owned(),
                        storage_location: source.to_owned(),
                        run_id,
                        model_id: None,
                    });
                }
            }
            return Err(Error::Invalid(format!(
                "Invalid model version source: '{source}'. To use a local path as a model version source, \
                 the run_id request parameter has to be specified and the local path has to be contained \
                 within the artifact directory of the run specified by the run_id."
            )));
        }
        check_relative_paths(source)?;
        if uri.scheme == "runs" {
            if uri.authority.is_some() {
                return Err(invalid_source(source, "run_id"));
            }
            let path = uri.path.strip_prefix('/').unwrap_or_default();
            let (source_run_id, artifact_path) = path.split_once('/').unwrap_or((path, ""));
            if source_run_id.is_empty() || run_id.is_empty() || source_run_id != run_id {
                return Err(invalid_source(source, "run_id"));
            }
            let run = self
                .source_run(&run_id)
                .await?
                .ok_or_else(|| invalid_source(source, "run_id"))?;
            let root = run.artifact_uri.trim_end_matches('/');
            let artifact_path = artifact_path.trim_matches('/');
            let storage_location = if artifact_path.is_empty() {
                root.to_owned()
            } else {
                format!("{root}/{artifact_path}")
            };
            return Ok(ResolvedSource {
                source: source.to_owned(),
                storage_location,
                run_id,
                model_id: None,
            });
        }
        if is_mlflow_artifacts(&uri) {
            let inside_run = match run_id.is_empty() {
                true => false,
                false => match self.source_run(&run_id).await? {
                    Some(run) => is_within_root(source, &run.artifact_uri),
                    None => false,
                },
            };
            if !inside_run {
                return Err(invalid_source(source, "run_id"));
            }
        }
        Ok(ResolvedSource {
            source: source.to_owned(),
            storage_location: source.to_owned(),
            run_id,
            model_id: None,
        })
    }

    async fn source_run(&self, run_id: &str) -> Result<Option<super::runs::RunInfo>> {
        match self.get_run(run_id).await {
            Ok(run) => Ok(Some(run.info)),
            Err(Error::NotFound { .. }) | Err(Error::Invalid(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The concrete version a `models:/name/…` source names.
    async fn resolve_registered_reference(
        &self,
        name: &str,
        selector: ModelsSelector<'_>,
    ) -> Result<ModelVersion> {
        let model = self.get_registered_model(name).await?;
        if model
            .tags
            .iter()
            .any(|tag| tag.key == IS_PROMPT_TAG && tag.value.eq_ignore_ascii_case("true"))
        {
            return Err(Error::Invalid(format!(
                "Invalid model version source: 'models:/{name}'. Prompt versions cannot be used as model version sources."
            )));
        }
        match selector {
            ModelsSelector::Version(version) => self.get_model_version(name, version).await,
            ModelsSelector::Alias(alias) => self.get_model_version_by_alias(name, alias).await,
            ModelsSelector::Latest => self.get_model_version_by_alias(name, LATEST_ALIAS).await,
            ModelsSelector::Stage(stage) => {
                let stage = Stage::parse(stage)?;
                model
                    .latest_versions
                    .into_iter()
                    .find(|version| version.current_stage == stage)
                    .ok_or_else(|| {
                        Error::not_found(
                            Entity::ModelVersion,
                            format!(
                                "No versions of model with name '{name}' and stage '{stage}' found"
                            ),
                        )
                    })
            }
        }
    }

    /// Artifact location and source run of an MLflow 3 logged model (`models:/m-…` sources,
    /// or any source registered with a `model_id`). A missing or deleted model is an invalid
    /// source, as in MLflow's `_get_source_model`.
    async fn logged_model_location(&self, model_id: &str) -> Result<LoggedModelLocation> {
        match self.get_logged_model(model_id, false).await {
            Ok(model) => Ok(LoggedModelLocation {
                artifact_uri: model.artifact_uri,
                source_run_id: model.source_run_id,
            }),
            Err(Error::NotFound { .. }) => {
                Err(invalid_source(&format!("models:/{model_id}"), "model_id"))
            }
            Err(other) => Err(other),
        }
    }

    /// Adds `{"name", "version"}` to the logged model's `mlflow.modelVersions` tag (a JSON list
    /// the UI reads to show where a logged model is registered), as MLflow's server does after
    /// registering a version from a logged model.
    async fn record_registration(&self, model_id: &str, name: &str, version: i64) -> Result<()> {
        let model = self.get_logged_model(model_id, false).await?;
        let entry = serde_json::json!({"name": name, "version": version});
        let mut registrations: Vec<serde_json::Value> = model
            .tags
            .iter()
            .find(|tag| tag.key == MODEL_VERSIONS_TAG)
            .and_then(|tag| serde_json::from_str(&tag.value).ok())
            .unwrap_or_default();
        if !registrations.contains(&entry) {
            registrations.push(entry);
        }
        let value = serde_json::Value::Array(registrations).to_string();
        self.set_logged_model_tags(model_id, &[KeyValue::new(MODEL_VERSIONS_TAG, value)])
            .await?;
        Ok(())
    }
}

/// What a version registered from a logged model needs of it.
struct LoggedModelLocation {
    artifact_uri: String,
    source_run_id: Option<String>,
}

/// Appends a sort key, refusing a field given twice as MLflow does.
fn push_unique_sort_key(
    keys: &mut Vec<SortKey>,
    expr: &str,
    kind: SortKind,
    descending: bool,
    order_by: &[String],
) -> Result<()> {
    if keys.iter().any(|key| key.expr == expr) {
        return Err(Error::Invalid(format!(
            "`order_by` contains duplicate fields: {order_by:?}"
        )));
    }
    keys.push(SortKey::new(expr, kind, descending, false));
    Ok(())
}

/// Splits off the clauses on the prompt tag. MLflow (`_is_querying_prompt`) looks at the first
/// such clause: `= 'true'` or `!= 'false'` asks for prompts, and then every clause stays an
/// ordinary tag clause. Otherwise all prompt-tag clauses go and prompts are excluded instead —
/// which is how models *without* the tag satisfy ``tag.`mlflow.prompt.is_prompt` != 'true'``,
/// the clause the client appends to every search.
fn without_prompt_clauses(clauses: Vec<Clause>) -> (Vec<Clause>, bool) {
    let is_prompt_clause =
        |clause: &Clause| matches!(&clause.key, Key::Tag(key) if key == IS_PROMPT_TAG);
    let querying_prompts = clauses
        .iter()
        .find(|clause| is_prompt_clause(clause))
        .is_some_and(|clause| match (&clause.op, &clause.value) {
            (Comparator::Eq, Value::String(value)) => value.eq_ignore_ascii_case("true"),
            (Comparator::Ne, Value::String(value)) => value.eq_ignore_ascii_case("false"),
            _ => false,
        });
    if querying_prompts {
        return (clauses, true);
    }
    (
        clauses
            .into_iter()
            .filter(|clause| !is_prompt_clause(clause))
            .collect(),
        false,
    )
}

fn invalid_source(source: &str, id_field: &str) -> Error {
    Error::Invalid(format!(
        "Invalid model version source: '{source}'. The {id_field} request parameter must identify \
         the resource that contains the source."
    ))
}

/// A `models:/` URI, as MLflow's `_parse_model_uri` reads it.
enum ModelsUri<'a> {
    LoggedModel(&'a str),
    Registered(&'a str, ModelsSelector<'a>),
}

enum ModelsSelector<'a> {
    Version(i64),
    Stage(&'a str),
    Latest,
    Alias(&'a str),
}

fn parse_models_uri<'a>(source: &str, path: &'a str) -> Result<ModelsUri<'a>> {
    let improper = || {
        Error::Invalid(format!(
            "Invalid model version source: '{source}'. Not a proper models:/ URI: use \
             models:/<name>/<version>, models:/<name>/<stage>, models:/<name>@<alias> or models:/<model_id>."
        ))
    };
    let rest = path.strip_prefix('/').ok_or_else(improper)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if rest.is_empty() || parts.len() > 2 || parts[0].trim().is_empty() {
        return Err(improper());
    }
    if let [name, suffix] = parts[..] {
        if suffix.trim().is_empty() {
            return Err(improper());
        }
        if suffix.chars().all(|c| c.is_ascii_digit()) {
            let version = suffix.parse().map_err(|_| improper())?;
            return Ok(ModelsUri::Registered(
                name,
                ModelsSelector::Version(version),
            ));
        }
        if suffix.eq_ignore_ascii_case(LATEST_ALIAS) {
            return Ok(ModelsUri::Registered(name, ModelsSelector::Latest));
        }
        return Ok(ModelsUri::Registered(name, ModelsSelector::Stage(suffix)));
    }
    if let Some((name, alias)) = rest.rsplit_once('@') {
        if alias.trim().is_empty() {
            return Err(improper());
        }
        return Ok(ModelsUri::Registered(name, ModelsSelector::Alias(alias)));
    }
    Ok(ModelsUri::LoggedModel(rest))
}

/// A URI cut as Python's `urlsplit` cuts it (scheme lower-cased; query and fragment dropped).
struct UriParts<'a> {
    scheme: String,
    authority: Option<&'a str>,
    path: &'a str,
}

impl<'a> UriParts<'a> {
    fn split(uri: &'a str) -> UriParts<'a> {
        let (scheme, rest) = match uri.split_once(':') {
            Some((scheme, rest))
                if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
            {
                (scheme.to_ascii_lowercase(), rest)
            }
            _ => (String::new(), uri),
        };
        let (authority, rest) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find(['/', '?', '#']).unwrap_or(after.len());
                (Some(&after[..end]), &after[end..])
            }
            None => (None, rest),
        };
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        UriParts {
            scheme,
            authority,
            path: &rest[..end],
        }
    }
}

/// MLflow's `is_local_uri`: no scheme, or `file:`.
fn is_local(uri: &UriParts<'_>) -> bool {
    uri.scheme.is_empty() || uri.scheme == "file"
}

/// MLflow's `_is_mlflow_artifact_source`: the proxied artifact service, by scheme or HTTP route.
fn is_mlflow_artifacts(uri: &UriParts<'_>) -> bool {
    if uri.scheme == "mlflow-artifacts" {
        return true;
    }
    let route = ["api", "2.0", "mlflow-artifacts", "artifacts"];
    let parts: Vec<String> = path_parts(uri.path);
    (uri.scheme == "http" || uri.scheme == "https")
        && parts.windows(route.len()).any(|window| window == route)
}

/// Non-empty path segments, each fully percent-decoded.
fn path_parts(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|part| !part.is_empty())
        .map(unquote_fully)
        .collect()
}

/// MLflow's `_is_uri_within_root`: same scheme and authority, and the root's path segments are
/// a prefix of the source's.
fn is_within_root(source: &str, root: &str) -> bool {
    let source = UriParts::split(source);
    let root = UriParts::split(root);
    let source_parts = path_parts(source.path);
    let root_parts = path_parts(root.path);
    source.scheme == root.scheme
        && source.authority.map(str::to_ascii_lowercase)
            == root.authority.map(str::to_ascii_lowercase)
        && !root_parts.is_empty()
        && source_parts.starts_with(&root_parts)
}

/// MLflow's `_validate_non_local_source_contains_relative_paths`: after decoding, the path must
/// be absolute, without `.`/`..` segments or NUL.
fn check_relative_paths(source: &str) -> Result<()> {
    let decoded = unquote_fully(&source.replace('+', " "));
    let path = UriParts::split(&decoded).path.to_owned();
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    let collapsed = collapsed.trim_end_matches('/');
    let normalized = collapsed.starts_with('/')
        && !collapsed.contains('\0')
        && collapsed
            .split('/')
            .skip(1)
            .all(|segment| segment != "." && segment != "..");
    if !normalized || decoded.split('/').any(|part| part == "..") {
        return Err(Error::Invalid(format!(
            "Invalid model version source: '{source}'. If supplying a source as an http, https, local \
             file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided \
             without relative path references present. Please provide an absolute path."
        )));
    }
    Ok(())
}

/// Decodes `%XX` escapes until nothing changes, as MLflow does before checking paths.
fn unquote_fully(text: &str) -> String {
    let mut current = text.to_owned();
    loop {
        let decoded = crate::percent::decode(&current);
        if decoded == current {
            return current;
        }
        current = decoded;
    }
}

/// The filesystem path of a local URI, made absolute and normalized lexically.
fn local_path(uri: &UriParts<'_>) -> std::path::PathBuf {
    let decoded = crate::percent::decode(uri.path);
    let path = std::path::Path::new(&decoded);
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normalized = std::path::PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                normalized.pop();
            }
            std::path::Component::CurDir => {}
            other => normalized.push(other),
        }
    }
    normalized
}

fn path_is_within(path: &std::path::Path, root: &std::path::Path) -> bool {
    path.starts_with(root)
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

    #[test]
    fn models_uris_parse_like_mlflow() {
        assert!(matches!(
            parse_models_uri("", "/m/3").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Version(3))
        ));
        assert!(matches!(
            parse_models_uri("", "/m/Production").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Stage("Production"))
        ));
        assert!(matches!(
            parse_models_uri("", "/m/LATEST").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Latest)
        ));
        assert!(matches!(
            parse_models_uri("", "/m@champion").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Alias("champion"))
        ));
        assert!(matches!(
            parse_models_uri("", "/m-abc").unwrap(),
            ModelsUri::LoggedModel("m-abc")
        ));
        for bad in ["", "/", "/a/b/c", "/m/", "/m@"] {
            assert!(parse_models_uri("", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_paths_in_sources_are_refused() {
        check_relative_paths("s3://bucket/models/x").unwrap();
        check_relative_paths("mlflow-artifacts:/1/abc/artifacts/model").unwrap();
        for bad in [
            "s3://b/../x",
            "s3://b/%2E%2E/x",
            "s3://b/%252E%252E/x",
            "s3://bucket",
            "http://h/a/./b",
            "s3://b/x%00",
        ] {
            assert!(check_relative_paths(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_inside_a_root_match_by_scheme_authority_and_segments() {
        let root = "mlflow-artifacts:/1/abc/artifacts";
        assert!(is_within_root(
            "mlflow-artifacts:/1/abc/artifacts/model",
            root
        ));
        assert!(!is_within_root("mlflow-artifacts:/1/abcd/artifacts", root));
        assert!(!is_within_root("s3:/1/abc/artifacts/model", root));
        assert!(is_mlflow_artifacts(&UriParts::split(
            "http://host:5000/api/2.0/mlflow-artifacts/artifacts/1/x"
        )));
        assert!(!is_mlflow_artifacts(&UriParts::split("s3://b/x")));
    }

    #[test]
    fn prompt_clauses_exclude_prompts_unless_asked_for() {
        let parse = |text| filter::parse_filter(SearchEntity::RegisteredModels, text).unwrap();
        let (kept, querying) = without_prompt_clauses(parse(
            "name = 'a' AND tag.`mlflow.prompt.is_prompt` != 'true'",
        ));
        assert_eq!((kept.len(), querying), (1, false));
        let (kept, querying) =
            without_prompt_clauses(parse("tags.`mlflow.prompt.is_prompt` = 'TRUE'"));
        assert_eq!((kept.len(), querying), (1, true));
        let (kept, querying) = without_prompt_clauses(parse("tags.x = 'y'"));
        assert_eq!((kept.len(), querying), (1, false));
    }

    #[test]
    fn ownership_round_trips_through_its_columns() {
        let ownership = Ownership {
            owner: Owner {
                namespace: "team-a".into(),
                kind: "RegisteredModel".into(),
                name: "churn".into(),
                uid: "u-1".into(),
            },
            fields: [OwnedField::Tags, OwnedField::Aliases].into(),
        };
        assert_eq!(ownership.fields_text(), "aliases,tags");
        let read = ownership_from(
            &Some("team-a".into()),
            &Some("RegisteredModel".into()),
            &Some("churn".into()),
            &Some("u-1".into()),
            "aliases,tags,future",
        );
        assert_eq!(read, Some(ownership.clone()));
        let refused = check_field_writable(
            Some(ownership.clone()),
            OwnedField::Aliases,
            Actor::Api,
            || "registered model 'churn'".into(),
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "registered model 'churn' field 'aliases' is managed by RegisteredModel team-a/churn \
             (uid u-1): change it there (in git)"
        );
        check_field_writable(
            Some(ownership.clone()),
            OwnedField::Description,
            Actor::Api,
            String::new,
        )
        .unwrap();
        check_field_writable(
            Some(ownership),
            OwnedField::Aliases,
            Actor::Owner("u-1"),
            String::new,
        )
        .unwrap();
    }
}
