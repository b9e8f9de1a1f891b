//! The promotion history: every alias set, move and removal and every stage transition,
//! appended in the transaction that makes it, so the history and the registry never disagree.
//! Nothing edits or deletes an entry (the tables' triggers refuse it); a model's history
//! follows it through renames (by its id) and outlives its deletion (by its last name).

use serde::{Deserialize, Serialize};

use super::ownership::{Actor, OwnedField, Owner, check_field_writable};
use super::policies::{PolicyTx, RuleResult, Target, denial, evaluate};
use super::{
    MODEL_COLUMNS, ModelRow, RegistryTx, Stage, model_not_found, validate_alias_name,
    validate_alias_settable, validate_model_name,
};
use crate::store::notify::{ChangeKind, Publish, RegistryChange};
use crate::store::{
    Backend, BeginWrite, Entity, Error, Page, Result, Store, now_millis, with_pool, with_write_pool,
};

/// Largest page of [`Store::promotions`].
pub const MAX_PROMOTIONS_PAGE: i64 = 1000;
/// Page size of [`Store::promotions`] when the caller does not say.
pub const DEFAULT_PROMOTIONS_PAGE: i64 = 100;
/// The history's actor for a REST call whose caller is unknown (`--auth none`).
pub const ANONYMOUS: &str = "anonymous";

/// What a promotion moves: an alias, or a version's stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    Alias,
    Stage,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Alias => "alias",
            TargetType::Stage => "stage",
        }
    }

    /// `alias` or `stage`, as the REST API and the CLI spell them.
    pub fn parse(text: &str) -> Result<TargetType> {
        match text {
            "alias" => Ok(TargetType::Alias),
            "stage" => Ok(TargetType::Stage),
            other => Err(Error::Invalid(format!(
                "Invalid target_type '{other}': must be 'alias' or 'stage'."
            ))),
        }
    }
}

/// Through which door a promotion came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionPath {
    /// The REST API (the `mlflow` client, the UI, `ferroflow rollback`).
    Api,
    /// The operator, applying a RegisteredModel or ModelVersion resource.
    Operator,
}

/// One entry of the history (also its JSON in the REST API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The model's name when the entry was written.
    pub name: String,
    pub target_type: TargetType,
    /// The alias, or the stage the version moved to.
    pub target: String,
    /// Alias: the version that held it before (`None`: it was unset).
    pub from_version: Option<i64>,
    /// Alias: the version it points at afterwards (`None`: removed). Stage: the version.
    pub to_version: Option<i64>,
    /// Stage: the version's stage before.
    pub from_stage: Option<String>,
    /// The authenticated user, `anonymous`, or the resource `namespace/Kind/name`.
    pub actor: String,
    pub path: PromotionPath,
    pub allowed: bool,
    /// Written by [`Store::rollback_alias`].
    pub rollback: bool,
    /// The promotion policies' verdicts (empty when no policy guards the target).
    #[serde(default)]
    pub results: Vec<RuleResult>,
}

/// Who made a change, as the history records it.
pub(super) struct Who {
    actor: String,
    path: PromotionPath,
}

/// The actor as the history names it: the authenticated user, the resource that owns one of
/// `rows` when the operator writes on its behalf (else its uid), or [`ANONYMOUS`].
fn who(actor: Actor<'_>, owners: &[Option<&Owner>]) -> Who {
    Who {
        actor: actor
            .identity(owners)
            .unwrap_or_else(|| ANONYMOUS.to_owned()),
        path: match actor {
            Actor::Api | Actor::User(_) => PromotionPath::Api,
            Actor::Owner(_) => PromotionPath::Operator,
        },
    }
}

/// An entry about to be appended.
pub(super) struct NewPromotion<'a> {
    target_type: TargetType,
    target: &'a str,
    from_version: Option<i64>,
    to_version: Option<i64>,
    from_stage: Option<Stage>,
    rollback: bool,
    allowed: bool,
    pub(super) results: Vec<RuleResult>,
}

impl<'a> NewPromotion<'a> {
    fn alias(alias: &'a str, from_version: Option<i64>, to_version: Option<i64>) -> Self {
        Self {
            target_type: TargetType::Alias,
            target: alias,
            from_version,
            to_version,
            from_stage: None,
            rollback: false,
            allowed: true,
            results: Vec::new(),
        }
    }

    fn stage(version: i64, from: Stage, to: Stage) -> NewPromotion<'static> {
        NewPromotion {
            target_type: TargetType::Stage,
            target: to.as_str(),
            from_version: None,
            to_version: Some(version),
            from_stage: Some(from),
            rollback: false,
            allowed: true,
            results: Vec::new(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct PromotionRow {
    promotion_id: i64,
    time: i64,
    model_name: String,
    target_type: String,
    target: String,
    from_version: Option<i64>,
    to_version: Option<i64>,
    from_stage: Option<String>,
    actor: String,
    path: String,
    allowed: bool,
    rollback: bool,
    results: String,
}

const PROMOTION_COLUMNS: &str = "promotion_id, time, model_name, target_type, target, \
     from_version, to_version, from_stage, actor, path, allowed, rollback, results";

impl From<PromotionRow> for Promotion {
    fn from(row: PromotionRow) -> Self {
        Promotion {
            id: row.promotion_id,
            timestamp: row.time,
            name: row.model_name,
            // CHECK constraints keep both columns to these spellings.
            target_type: TargetType::parse(&row.target_type).unwrap_or(TargetType::Alias),
            target: row.target,
            from_version: row.from_version,
            to_version: row.to_version,
            from_stage: row.from_stage,
            actor: row.actor,
            path: if row.path == "operator" {
                PromotionPath::Operator
            } else {
                PromotionPath::Api
            },
            allowed: row.allowed,
            rollback: row.rollback,
            results: serde_json::from_str(&row.results).unwrap_or_default(),
        }
    }
}

/// What held a target at an instant ([`Store::promotion_at`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Alias: the version it pointed at (`None`: unset). Stage: the versions in it, ordered.
    pub versions: Vec<i64>,
    /// The entry that put it there, `None` when nothing had happened yet.
    pub promotion_id: Option<i64>,
}

/// Appends history entries inside a registry write transaction; one implementation per
/// connection type, as for [`RegistryTx`].
pub(super) trait PromotionTx {
    fn append_promotions<'a>(
        &'a mut self,
        model: &'a ModelRow,
        who: &'a Who,
        entries: &'a [NewPromotion<'a>],
    ) -> impl std::future::Future<Output = Result<Vec<i64>>> + Send + 'a;

    /// The newest entry of `target` of `model`, if any.
    fn latest_promotion<'a>(
        &'a mut self,
        model: &'a ModelRow,
        target_type: TargetType,
        target: &'a str,
    ) -> impl std::future::Future<Output = Result<Option<Promotion>>> + Send + 'a;
}

macro_rules! impl_promotion_tx {
    ($connection:ty) => {
        impl PromotionTx for $connection {
            async fn append_promotions(
                &mut self,
                model: &ModelRow,
                who: &Who,
                entries: &[NewPromotion<'_>],
            ) -> Result<Vec<i64>> {
                let now = now_millis();
                let mut ids = Vec::with_capacity(entries.len());
                for entry in entries {
                    let id = sqlx::query_scalar::<_, i64>(
                        "INSERT INTO promotions (time, registered_model_id, model_name, target_type, target, \
                         from_version, to_version, from_stage, actor, path, allowed, rollback, results, workspace) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING promotion_id",
                    )
                    .bind(now)
                    .bind(model.registered_model_id)
                    .bind(&model.name)
                    .bind(entry.target_type.as_str())
                    .bind(entry.target)
                    .bind(entry.from_version)
                    .bind(entry.to_version)
                    .bind(entry.from_stage.map(Stage::as_str))
                    .bind(&who.actor)
                    .bind(match who.path {
                        PromotionPath::Api => "api",
                        PromotionPath::Operator => "operator",
                    })
                    .bind(entry.allowed)
                    .bind(entry.rollback)
                    .bind(serde_json::to_string(&entry.results).unwrap_or_else(|_| "[]".to_owned()))
                    .bind(&model.workspace)
                    .fetch_one(&mut *self)
                    .await?;
                    ids.push(id);
                }
                Ok(ids)
            }

            async fn latest_promotion(
                &mut self,
                model: &ModelRow,
                target_type: TargetType,
                target: &str,
            ) -> Result<Option<Promotion>> {
                let row = sqlx::query_as::<_, PromotionRow>(&format!(
                    "SELECT {PROMOTION_COLUMNS} FROM promotions WHERE registered_model_id = $1 \
                     AND target_type = $2 AND target = $3 ORDER BY promotion_id DESC LIMIT 1"
                ))
                .bind(model.registered_model_id)
                .bind(target_type.as_str())
                .bind(target)
                .fetch_optional(&mut *self)
                .await?;
                Ok(row.map(Promotion::from))
            }
        }
    };
}

impl_promotion_tx!(sqlx::PgConnection);
impl_promotion_tx!(sqlx::SqliteConnection);

/// Judges `entry` by the policies guarding `target` for version `candidate` and keeps the
/// verdicts on it. When a rule fails, appends the entry as refused and returns the denial: the
/// caller commits (the refusal stays in the history) and then fails with it. The operator
/// retrying a refused resource appends nothing while the newest entry of the target is that
/// same refusal ([`same_refusal`]), so its retries do not push other entries out of the
/// resource's bounded status; each REST call is a request of its own and always appended.
pub(super) async fn refused<C: PolicyTx + PromotionTx + Publish + Send>(
    connection: &mut C,
    model: &ModelRow,
    who: &Who,
    entry: &mut NewPromotion<'_>,
    target: Target<'_>,
    candidate: i64,
) -> Result<Option<Error>> {
    entry.results = evaluate(connection, model, target, candidate).await?;
    let Some(message) = denial(&model.name, candidate, target, &entry.results) else {
        return Ok(None);
    };
    entry.allowed = false;
    if who.path == PromotionPath::Operator
        && connection
            .latest_promotion(model, entry.target_type, entry.target)
            .await?
            .is_some_and(|latest| same_refusal(&latest, who, entry))
    {
        // The operator retrying the same desired state: recorded once, and no news.
        return Ok(Some(Error::PolicyDenied(message)));
    }
    connection
        .append_promotions(model, who, std::slice::from_ref(entry))
        .await?;
    // Nothing moved, but the refusal is news: the operator reports it on the model's resource.
    let (alias, stage) = match target {
        Target::Alias(alias) => (Some(alias.to_owned()), None),
        Target::Stage(stage) => (None, Some(stage.as_str().to_owned())),
    };
    connection
        .publish(&[RegistryChange {
            version: Some(candidate),
            alias,
            stage,
            ..RegistryChange::new(ChangeKind::PromotionDenied, &model.workspace, &model.name)
        }])
        .await?;
    Ok(Some(Error::PolicyDenied(message)))
}

/// Whether `latest`, the newest entry of a target, already records refusal `entry` by `who`:
/// the same move (from and to the same version, or stage), refused to the same actor through
/// the same path by the same failing rules. The values seen are left out of the comparison: a
/// dwell rule's "held for 12s" grows on every retry without making it another refusal.
fn same_refusal(latest: &Promotion, who: &Who, entry: &NewPromotion<'_>) -> bool {
    let failing = |results: &[RuleResult]| -> Vec<(String, String)> {
        results
            .iter()
            .filter(|result| !result.passed)
            .map(|result| (result.policy.clone(), result.rule.clone()))
            .collect()
    };
    !latest.allowed
        && latest.rollback == entry.rollback
        && latest.from_version == entry.from_version
        && latest.to_version == entry.to_version
        && latest.from_stage.as_deref() == entry.from_stage.map(Stage::as_str)
        && latest.actor == who.actor
        && latest.path == who.path
        && failing(&latest.results) == failing(&entry.results)
}

/// The history entry and its actor for an alias going from `from` to `to`.
pub(super) fn alias_moved<'a>(
    actor: Actor<'_>,
    model: &ModelRow,
    alias: &'a str,
    from: Option<i64>,
    to: Option<i64>,
) -> (Who, NewPromotion<'a>) {
    let owner = model.ownership().map(|ownership| ownership.owner);
    (
        who(actor, &[owner.as_ref()]),
        NewPromotion::alias(alias, from, to),
    )
}

/// The actor and entries for versions changing stage: `(version, from, to)` each; a version
/// already in its stage is left out.
pub(super) fn stage_moved(
    actor: Actor<'_>,
    owners: &[Option<&Owner>],
    moves: &[(i64, Stage, Stage)],
) -> (Who, Vec<NewPromotion<'static>>) {
    (
        who(actor, owners),
        moves
            .iter()
            .filter(|(_, from, to)| from != to)
            .map(|&(version, from, to)| NewPromotion::stage(version, from, to))
            .collect(),
    )
}

impl Store {
    /// The history of model `name` (through renames; a deleted model's by its last name),
    /// oldest first, optionally of one target, paged by `page_token` (an entry id).
    pub async fn promotions(
        &self,
        name: &str,
        target: Option<(TargetType, &str)>,
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<Page<Promotion>> {
        validate_model_name(name)?;
        if !(1..=MAX_PROMOTIONS_PAGE).contains(&max_results) {
            return Err(Error::Invalid(format!(
                "Invalid value {max_results} for parameter 'max_results': must be between 1 and {MAX_PROMOTIONS_PAGE}."
            )));
        }
        let after = match page_token {
            None | Some("") => 0,
            Some(token) => token
                .parse::<i64>()
                .map_err(|_| Error::Invalid(format!("Invalid page token '{token}'.")))?,
        };
        let model_ids = self.history_model_ids(name).await?;
        let (target_type, target) = match target {
            Some((target_type, target)) => (Some(target_type.as_str()), Some(target)),
            None => (None, None),
        };
        let rows = with_pool!(self, pool => {
            let sql = format!(
                "SELECT {PROMOTION_COLUMNS} FROM promotions WHERE registered_model_id IN {ids} \
                 AND promotion_id > $2 AND ($3 IS NULL OR target_type = $3) AND ($4 IS NULL OR target = $4) \
                 ORDER BY promotion_id LIMIT $5",
                ids = id_list(self.backend()),
            );
            sqlx::query_as::<_, PromotionRow>(&sql)
                .bind(serde_json::to_string(&model_ids).unwrap_or_default())
                .bind(after)
                .bind(target_type)
                .bind(target)
                .bind(max_results + 1)
                .fetch_all(pool)
                .await?
        });
        let mut items: Vec<Promotion> = rows.into_iter().map(Promotion::from).collect();
        let next_page_token = if items.len() as i64 > max_results {
            items.truncate(max_results as usize);
            items.last().map(|last| last.id.to_string())
        } else {
            None
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// What held `target` of model `name` at `time` (milliseconds): the state after the last
    /// allowed entry written at or before it.
    pub async fn promotion_at(
        &self,
        name: &str,
        target_type: TargetType,
        target: &str,
        time: i64,
    ) -> Result<Holder> {
        validate_model_name(name)?;
        let target = match target_type {
            TargetType::Alias => {
                validate_alias_name(target)?;
                target.to_owned()
            }
            TargetType::Stage => Stage::parse(target)?.as_str().to_owned(),
        };
        let model_ids = self.history_model_ids(name).await?;
        let ids = serde_json::to_string(&model_ids).unwrap_or_default();
        let holder = with_pool!(self, pool => {
            match target_type {
                TargetType::Alias => {
                    let sql = format!(
                        "SELECT promotion_id, to_version FROM promotions WHERE registered_model_id IN {ids_table} \
                         AND target_type = 'alias' AND target = $2 AND allowed AND time <= $3 \
                         ORDER BY promotion_id DESC LIMIT 1",
                        ids_table = id_list(self.backend()),
                    );
                    let last = sqlx::query_as::<_, (i64, Option<i64>)>(&sql)
                        .bind(&ids)
                        .bind(&target)
                        .bind(time)
                        .fetch_optional(pool)
                        .await?;
                    Holder {
                        versions: last.and_then(|(_, version)| version).into_iter().collect(),
                        promotion_id: last.map(|(id, _)| id),
                    }
                }
                TargetType::Stage => {
                    // Each version's last stage entry at or before `time`; those in `target`.
                    let sql = format!(
                        "SELECT p.promotion_id, p.to_version, p.target FROM promotions p \
                         WHERE p.registered_model_id IN {ids_table} AND p.target_type = 'stage' \
                         AND p.allowed AND p.time <= $2 AND p.promotion_id = (SELECT MAX(q.promotion_id) FROM promotions q \
                         WHERE q.registered_model_id = p.registered_model_id AND q.target_type = 'stage' \
                         AND q.to_version = p.to_version AND q.allowed AND q.time <= $2) ORDER BY p.to_version",
                        ids_table = id_list(self.backend()),
                    );
                    let rows = sqlx::query_as::<_, (i64, Option<i64>, String)>(&sql)
                        .bind(&ids)
                        .bind(time)
                        .fetch_all(pool)
                        .await?;
                    let held: Vec<_> = rows.into_iter().filter(|(_, _, stage)| *stage == target).collect();
                    Holder {
                        versions: held.iter().filter_map(|(_, version, _)| *version).collect(),
                        promotion_id: held.iter().map(|(id, _, _)| *id).max(),
                    }
                }
            }
        });
        Ok(holder)
    }

    /// Moves `alias` back to the version that held it before its current one got it (the
    /// `from_version` of the entry that set it), recorded as a rollback. Refused (BAD_REQUEST: a
    /// client mistake, never a 5xx) when the alias has no earlier holder or that version is gone.
    pub async fn rollback_alias(
        &self,
        name: &str,
        alias: &str,
        actor: Actor<'_>,
    ) -> Result<Promotion> {
        validate_model_name(name)?;
        validate_alias_settable(alias)?;
        let id = with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            check_field_writable(model.ownership(), OwnedField::Aliases, actor, || model.describe())?;
            let current = sqlx::query_scalar::<_, i64>(
                "SELECT version FROM registered_model_aliases WHERE registered_model_id = $1 AND alias = $2",
            )
            .bind(model.registered_model_id)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::AliasNotFound { model: name.to_owned(), alias: alias.to_owned() })?;
            let previous = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT from_version FROM promotions WHERE registered_model_id = $1 AND target_type = 'alias' \
                 AND target = $2 AND allowed AND to_version = $3 ORDER BY promotion_id DESC LIMIT 1",
            )
            .bind(model.registered_model_id)
            .bind(alias)
            .bind(current)
            .fetch_optional(&mut *tx)
            .await?
            .flatten()
            .ok_or_else(|| Error::BadRequest(format!(
                "Cannot roll back alias '{alias}' of model '{name}': the promotion history has no version that held it before version {current}."
            )))?;
            tx.live_version(&model, previous).await.map_err(|_| Error::BadRequest(format!(
                "Cannot roll back alias '{alias}' of model '{name}' to version {previous}: that version was deleted."
            )))?;
            let (who, mut entry) = alias_moved(actor, &model, alias, Some(current), Some(previous));
            entry.rollback = true;
            if let Some(denied) = refused(&mut *tx, &model, &who, &mut entry, Target::Alias(alias), previous).await? {
                tx.commit().await?;
                return Err(denied);
            }
            sqlx::query("UPDATE registered_model_aliases SET version = $1 WHERE registered_model_id = $2 AND alias = $3")
                .bind(previous)
                .bind(model.registered_model_id)
                .bind(alias)
                .execute(&mut *tx)
                .await?;
            let ids = tx.append_promotions(&model, &who, std::slice::from_ref(&entry)).await?;
            tx.publish(&[RegistryChange {
                version: Some(previous),
                alias: Some(alias.to_owned()),
                ..RegistryChange::new(ChangeKind::AliasSet, self.workspace(), name)
            }])
            .await?;
            tx.commit().await?;
            ids[0]
        });
        self.promotion(id).await
    }

    /// What the policies guarding `target` say about moving it to `version`, without moving
    /// anything or writing history (a dry run for CI jobs and rollout analyses).
    pub async fn check_promotion(
        &self,
        name: &str,
        target: Target<'_>,
        version: i64,
    ) -> Result<Vec<RuleResult>> {
        validate_model_name(name)?;
        if let Target::Alias(alias) = target {
            validate_alias_settable(alias)?;
        }
        let results = with_pool!(self, pool => {
            let mut connection = pool.acquire().await?;
            let model = sqlx::query_as::<_, ModelRow>(&format!(
                "SELECT {MODEL_COLUMNS} FROM registered_models rm WHERE rm.name = $1 AND rm.workspace = $2"
            ))
            .bind(name)
            .bind(self.workspace())
            .fetch_optional(&mut *connection)
            .await?
            .ok_or_else(|| model_not_found(name))?;
            connection.live_version(&model, version).await?;
            evaluate(&mut *connection, &model, target, version).await?
        });
        Ok(results)
    }

    async fn promotion(&self, id: i64) -> Result<Promotion> {
        let row = with_pool!(self, pool => {
            sqlx::query_as::<_, PromotionRow>(&format!(
                "SELECT {PROMOTION_COLUMNS} FROM promotions WHERE promotion_id = $1"
            ))
            .bind(id)
            .fetch_one(pool)
            .await?
        });
        Ok(row.into())
    }

    /// The newest `per_alias` entries of each alias of model `name` (through renames), newest
    /// first within an alias, aliases by name.
    pub async fn recent_alias_promotions(
        &self,
        name: &str,
        per_alias: i64,
    ) -> Result<Vec<Promotion>> {
        validate_model_name(name)?;
        let model_ids = self.history_model_ids(name).await?;
        let rows = with_pool!(self, pool => {
            let sql = format!(
                "SELECT {PROMOTION_COLUMNS} FROM (SELECT {PROMOTION_COLUMNS}, ROW_NUMBER() OVER \
                 (PARTITION BY target ORDER BY promotion_id DESC) AS newness FROM promotions \
                 WHERE registered_model_id IN {ids} AND target_type = 'alias') AS recent \
                 WHERE newness <= $2 ORDER BY target, promotion_id DESC",
                ids = id_list(self.backend()),
            );
            sqlx::query_as::<_, PromotionRow>(&sql)
                .bind(serde_json::to_string(&model_ids).unwrap_or_default())
                .bind(per_alias)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Promotion::from).collect())
    }

    /// The model ids whose history `name` names: the live model of that name, else every
    /// deleted model that last carried it. Neither: the model was never known.
    async fn history_model_ids(&self, name: &str) -> Result<Vec<i64>> {
        let ids = with_pool!(self, pool => {
            match sqlx::query_scalar::<_, i64>(
                "SELECT registered_model_id FROM registered_models WHERE name = $1 AND workspace = $2",
            )
                .bind(name)
                .bind(self.workspace())
                .fetch_optional(pool)
                .await?
            {
                Some(id) => vec![id],
                None => sqlx::query_scalar::<_, i64>(
                    "SELECT DISTINCT p.registered_model_id FROM promotions p WHERE p.model_name = $1 \
                     AND p.workspace = $2 AND NOT EXISTS (SELECT 1 FROM registered_models rm WHERE rm.registered_model_id = p.registered_model_id) \
                     ORDER BY p.registered_model_id",
                )
                .bind(name)
                .bind(self.workspace())
                .fetch_all(pool)
                .await?,
            }
        });
        if ids.is_empty() {
            return Err(Error::not_found(
                Entity::RegisteredModel,
                format!("Registered Model with name={name} not found"),
            ));
        }
        Ok(ids)
    }
}

/// `(subquery)` over the JSON array of model ids bound as `$1`, in each dialect (one bind for
/// any number of ids).
fn id_list(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "(SELECT value::bigint FROM json_array_elements_text($1::json) AS ids(value))"
        }
        Backend::Sqlite => "(SELECT value FROM json_each($1))",
    }
}
