//! Kubernetes ownership of store rows, one model for every kind of row: a resource (the
//! [`Owner`]) declares an experiment, a registered model or a model version, and owns some of
//! its fields. The REST API ([`Actor::Api`], or [`Actor::User`] when the caller is
//! authenticated) may not change what another resource owns; the owner ([`Actor::Owner`] with
//! its uid) may. Callers run [`check_writable`] inside the
//! transaction of the write it guards, on the row that transaction read.
//!
//! Owned rows belong to the workspace of their owner's namespace;
//! [`Store::move_owned_into_workspace`] brings those declared before namespaces were
//! workspaces over from `default`.
//!
//! One encoding on every table (migration 0007): the owner's four names in `owner_namespace`,
//! `owner_kind`, `owner_name`, `owner_uid` (all NULL when unowned), and in `owned_fields` the
//! owned entries one per line, sorted: whole fields (`aliases`, `description`, `stage`, `tags`)
//! or single tags (`tags.<key>`).

pub use super::values::Owner;

use super::error::is_unique_violation;
use super::experiments::DEFAULT_EXPERIMENT_ID;
use super::notify::{ChangeKind, Publish, RegistryChange};
use super::{BeginWrite, DEFAULT_WORKSPACE, Error, Result, Store, with_pool, with_write_pool};

/// Who makes a change: the REST API (ownership enforced), anonymous or as an authenticated
/// user, or the owning resource, by uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// A REST call whose caller is unknown (`--auth none`).
    Api,
    /// A REST call by this authenticated user (`--auth kubernetes`: the TokenReview's name).
    User(&'a str),
    Owner(&'a str),
}

impl Actor<'_> {
    /// Whether this actor is `owner` itself.
    pub fn is(self, owner: &Owner) -> bool {
        matches!(self, Actor::Owner(uid) if uid == owner.uid)
    }

    /// Who this actor is, as the data records it: the authenticated user, or the resource
    /// `namespace/Kind/name` among `owners` whose uid it is (else `uid/<uid>`); `None` when
    /// the caller is unknown.
    pub fn identity(self, owners: &[Option<&Owner>]) -> Option<String> {
        match self {
            Actor::Api => None,
            Actor::User(user) => Some(user.to_owned()),
            Actor::Owner(uid) => Some(
                owners
                    .iter()
                    .flatten()
                    .find(|owner| owner.uid == uid)
                    .map(|owner| owner.path())
                    .unwrap_or_else(|| format!("uid/{uid}")),
            ),
        }
    }
}

/// The owner columns of a row, as read (`#[sqlx(flatten)]` into each row type).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct OwnerColumns {
    owner_namespace: Option<String>,
    owner_kind: Option<String>,
    owner_name: Option<String>,
    owner_uid: Option<String>,
    owned_fields: String,
}

impl OwnerColumns {
    /// The owner and its owned entries; `None` for an unowned row.
    pub(crate) fn read(&self) -> Option<(Owner, impl Iterator<Item = &str>)> {
        let (Some(namespace), Some(kind), Some(name), Some(uid)) = (
            &self.owner_namespace,
            &self.owner_kind,
            &self.owner_name,
            &self.owner_uid,
        ) else {
            return None;
        };
        let owner = Owner {
            namespace: namespace.clone(),
            kind: kind.clone(),
            name: name.clone(),
            uid: uid.clone(),
        };
        let entries = self
            .owned_fields
            .lines()
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        Some((owner, entries))
    }
}

/// `owned_fields` for these entries: one per line, sorted, without repeats.
pub(crate) fn encode_owned<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> String {
    let mut entries: Vec<String> = entries
        .into_iter()
        .map(|entry| entry.as_ref().to_owned())
        .collect();
    entries.sort();
    entries.dedup();
    entries.join("\n")
}

/// The entry of one owned tag.
pub(crate) fn tag_entry(key: &str) -> String {
    format!("tags.{key}")
}

/// The key of a single-tag entry; `None` for a whole field.
pub(crate) fn tag_of_entry(entry: &str) -> Option<&str> {
    entry.strip_prefix("tags.")
}

/// Refuses `actor` changing `object` when `owner` (the resource owning what is changed, or
/// `None` when nothing changed is owned) is someone else. `field` names what is changed, `None`
/// for the whole object (delete, restore).
pub(crate) fn check_writable(
    owner: Option<&Owner>,
    field: Option<&str>,
    actor: Actor<'_>,
    object: impl FnOnce() -> String,
) -> Result<()> {
    match owner {
        Some(owner) if !actor.is(owner) => Err(Error::OwnedElsewhere {
            object: object(),
            field: field.map(str::to_owned),
            owner: Box::new(owner.clone()),
        }),
        _ => Ok(()),
    }
}

/// What [`Store::move_owned_into_workspace`] moved, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    pub experiments: Vec<String>,
    pub registered_models: Vec<String>,
}

impl Moved {
    pub fn is_empty(&self) -> bool {
        self.experiments.is_empty() && self.registered_models.is_empty()
    }
}

impl Store {
    /// Moves what the resource `uid` owns in workspace `default` into this store's workspace,
    /// in one transaction: its experiment (runs, logged models and datasets follow its id) and
    /// its registered model (versions, tags, aliases and history follow its id). This is the
    /// upgrade path of resources reconciled while the operator wrote every namespace into
    /// `default`: their objects move, nothing is copied or lost. The experiment `Default`
    /// (id 0) stays. Nothing to move, or a store in `default`: no write, an empty answer. When
    /// this workspace already has an object of the same name, nothing moves and the error
    /// ([`Error::InvalidState`]) names it.
    #[tracing::instrument(name = "store.move_owned_into_workspace", skip_all)]
    pub async fn move_owned_into_workspace(&self, uid: &str) -> Result<Moved> {
        let workspace = self.workspace();
        if workspace == DEFAULT_WORKSPACE {
            return Ok(Moved::default());
        }
        const EXPERIMENTS: &str =
            "FROM experiments WHERE owner_uid = $1 AND workspace = $2 AND experiment_id != $3";
        const MODELS: &str = "FROM registered_models WHERE owner_uid = $1 AND workspace = $2";
        // Read first: the common case, nothing left in `default`, then takes no write lock.
        let waiting = with_pool!(self, pool => {
            let experiments = sqlx::query_scalar::<_, String>(&format!("SELECT name {EXPERIMENTS}"))
                .bind(uid)
                .bind(DEFAULT_WORKSPACE)
                .bind(DEFAULT_EXPERIMENT_ID)
                .fetch_all(pool)
                .await?;
            let models = sqlx::query_scalar::<_, String>(&format!("SELECT name {MODELS}"))
                .bind(uid)
                .bind(DEFAULT_WORKSPACE)
                .fetch_all(pool)
                .await?;
            Moved { experiments, registered_models: models }
        });
        if waiting.is_empty() {
            return Ok(waiting);
        }
        // What a failed move answers: a unique violation means the workspace has one of the name.
        let taken = |error: sqlx::Error, what: &str, names: &[String]| {
            if !is_unique_violation(&error) {
                return Error::from(error);
            }
            Error::InvalidState(format!(
                "{what} {} declared by this resource is in workspace '{DEFAULT_WORKSPACE}' (it \
                 was reconciled before namespaces were workspaces) and cannot move to workspace \
                 '{workspace}', which already has one of that name: rename or delete one of them",
                names
                    .iter()
                    .map(|name| format!("'{name}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let experiments = sqlx::query_scalar::<_, String>(&format!(
                "UPDATE experiments SET workspace = $4 WHERE experiment_id IN (SELECT experiment_id {EXPERIMENTS}) RETURNING name"
            ))
            .bind(uid)
            .bind(DEFAULT_WORKSPACE)
            .bind(DEFAULT_EXPERIMENT_ID)
            .bind(workspace)
            .fetch_all(&mut *tx)
            .await
            .map_err(|error| taken(error, "experiment", &waiting.experiments))?;
            let models = sqlx::query_scalar::<_, String>(&format!(
                "UPDATE registered_models SET workspace = $3 WHERE registered_model_id IN (SELECT registered_model_id {MODELS}) RETURNING name"
            ))
            .bind(uid)
            .bind(DEFAULT_WORKSPACE)
            .bind(workspace)
            .fetch_all(&mut *tx)
            .await
            .map_err(|error| taken(error, "registered model", &waiting.registered_models))?;
            // Who follows the model in this workspace learns it is here now.
            let changes: Vec<RegistryChange> = models
                .iter()
                .map(|name| RegistryChange {
                    previous_name: Some(name.clone()),
                    ..RegistryChange::new(ChangeKind::ModelRenamed, workspace, name)
                })
                .collect();
            tx.publish(&changes).await?;
            tx.commit().await?;
            Ok(Moved { experiments, registered_models: models })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            namespace: "team-a".into(),
            kind: "Experiment".into(),
            name: "churn".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn owned_entries_round_trip_through_the_encoding() {
        let text = encode_owned(["tags", "aliases", &tag_entry("team"), "tags"]);
        assert_eq!(text, "aliases\ntags\ntags.team");
        let columns = OwnerColumns {
            owner_namespace: Some("team-a".into()),
            owner_kind: Some("Experiment".into()),
            owner_name: Some("churn".into()),
            owner_uid: Some("u-1".into()),
            owned_fields: text,
        };
        let (read_owner, entries) = columns.read().unwrap();
        assert_eq!(read_owner, owner());
        let entries: Vec<&str> = entries.collect();
        assert_eq!(entries, ["aliases", "tags", "tags.team"]);
        assert_eq!(
            entries
                .iter()
                .filter_map(|e| tag_of_entry(e))
                .collect::<Vec<_>>(),
            ["team"]
        );
        let unowned = OwnerColumns {
            owner_uid: None,
            ..columns
        };
        assert!(unowned.read().is_none());
    }

    #[test]
    fn only_the_owner_writes_what_it_owns() {
        let owner = owner();
        let object = || "experiment 'churn'".to_owned();
        assert!(check_writable(Some(&owner), Some("name"), Actor::Owner("u-1"), object).is_ok());
        assert!(check_writable(None, Some("name"), Actor::Api, object).is_ok());
        let refused = check_writable(Some(&owner), Some("name"), Actor::Api, object).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "experiment 'churn' field 'name' is managed by Experiment team-a/churn (uid u-1): change it there (in git)"
        );
    }
}
