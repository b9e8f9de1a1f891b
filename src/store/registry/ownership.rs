//! Which Kubernetes resource declares a registry row and which of its fields it owns, and the
//! checks that keep other writers off those fields.

use std::collections::BTreeSet;

pub use crate::store::ownership::{Actor, Owner};

use crate::store::ownership::{OwnerColumns, check_writable, encode_owned, tag_entry};

use super::{
    MODEL_COLUMNS, ModelRow, ModelVersion, RegistryTx, VERSION_COLUMNS, VERSIONS_FROM, VersionRow,
    validate_model_name,
};
use crate::store::{BeginWrite, Error, KeyValue, Result, Store, with_pool, with_write_pool};

/// The tag naming the resource that owns a registered model or version
/// (`namespace/Kind/name`, as the promotion history names it), so that MLflow's UI and every
/// client show it. The store writes it with the owner columns and removes it on release; no
/// other write may set or delete it.
pub const OWNER_TAG: &str = "ferroflow.owner";

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
    /// `owned_fields` for this ownership (see [`crate::store::ownership`]).
    pub(super) fn fields_text(&self) -> String {
        encode_owned(self.fields.iter().map(|field| field.as_str()))
    }
}

/// A registry row: a registered model by name, or one of its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryRef<'a> {
    Model(&'a str),
    Version(&'a str, i64),
}

/// A row some resource owns, as [`Store::list_owned`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRow {
    pub name: String,
    /// `None` for the registered model itself.
    pub version: Option<i64>,
    pub ownership: Ownership,
}

/// The ownership the owner columns of a registry row record.
pub(super) fn ownership_of(columns: &OwnerColumns) -> Option<Ownership> {
    let (owner, entries) = columns.read()?;
    Some(Ownership {
        owner,
        fields: fields_of(entries),
    })
}

/// The whole fields among owned entries. An unknown entry (written by a newer version) is
/// ignored rather than failing reads.
fn fields_of<'a>(entries: impl Iterator<Item = &'a str>) -> BTreeSet<OwnedField> {
    entries.filter_map(OwnedField::parse).collect()
}

/// Refuses `actor` changing `field` of an object owned by someone else.
pub(super) fn check_field_writable(
    ownership: Option<Ownership>,
    field: OwnedField,
    actor: Actor<'_>,
    object: impl FnOnce() -> String,
) -> Result<()> {
    let owner = ownership
        .as_ref()
        .filter(|ownership| ownership.fields.contains(&field))
        .map(|ownership| &ownership.owner);
    check_writable(owner, Some(field.as_str()), actor, object)
}

/// Refuses `actor` setting or deleting tag `key`: a declared tag of an owned row (see
/// [`check_field_writable`]), or the [`OWNER_TAG`], which only the store writes: refused as
/// owned (naming the owner) to anyone but the owner, and as invalid otherwise.
pub(super) fn check_tag_writable(
    ownership: Option<Ownership>,
    key: &str,
    actor: Actor<'_>,
    object: impl FnOnce() -> String,
) -> Result<()> {
    if key != OWNER_TAG {
        return check_field_writable(ownership, OwnedField::Tags, actor, object);
    }
    if let Some(ownership) = ownership.filter(|ownership| !actor.is(&ownership.owner)) {
        check_writable(Some(&ownership.owner), Some(&tag_entry(key)), actor, object)?;
    }
    Err(owner_tag_refused())
}

/// Refuses tags given at creation that include the [`OWNER_TAG`].
pub(super) fn refuse_owner_tag(tags: &[KeyValue]) -> Result<()> {
    if tags.iter().any(|tag| tag.key == OWNER_TAG) {
        return Err(owner_tag_refused());
    }
    Ok(())
}

fn owner_tag_refused() -> Error {
    Error::Invalid(format!(
        "Tag '{OWNER_TAG}' names the Kubernetes resource that owns the object; ferroflow writes it"
    ))
}

/// Refuses `actor` renaming (`field` = `name`) or deleting (`None`) an object someone else owns.
pub(super) fn check_object_writable(
    ownership: Option<Ownership>,
    field: Option<&str>,
    actor: Actor<'_>,
    object: impl FnOnce() -> String,
) -> Result<()> {
    check_writable(
        ownership.as_ref().map(|ownership| &ownership.owner),
        field,
        actor,
        object,
    )
}

pub(super) fn check_ownership_fields(target: RegistryRef<'_>, ownership: &Ownership) -> Result<()> {
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

impl Store {
    /// Records that `ownership.owner` declares the row and owns `ownership.fields` (replacing
    /// the fields it owned before). Refused with [`Error::OwnedElsewhere`] when another
    /// resource owns the row: two resources declaring one model is a conflict for a human.
    #[tracing::instrument(name = "store.set_owner", skip_all)]
    pub async fn set_owner(&self, target: RegistryRef<'_>, ownership: &Ownership) -> Result<()> {
        check_ownership_fields(target, ownership)?;
        self.write_owner(target, Some(ownership), &ownership.owner.uid)
            .await
    }

    /// Releases the row from the resource with `uid` (a `Retain` deletion policy): all its
    /// fields become writable through the API. A row that `uid` does not own is left alone;
    /// one owned by another resource is refused.
    #[tracing::instrument(name = "store.clear_owner", skip_all)]
    pub async fn clear_owner(&self, target: RegistryRef<'_>, uid: &str) -> Result<()> {
        self.write_owner(target, None, uid).await
    }

    /// Every live row that the resource with `uid` owns (at most one model and one version,
    /// since a uid owns at most one row of each).
    #[tracing::instrument(name = "store.list_owned", skip_all)]
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
        let written = with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
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
                    tx.write_owner_tag(model.registered_model_id, version, ownership.map(|o| &o.owner))
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }
                Err(error) if crate::store::error::is_unique_violation(&error) => Err(error),
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

    pub(super) async fn owned_model_name(&self, uid: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, pool => sqlx::query_scalar::<_, String>(
            "SELECT name FROM registered_models WHERE owner_uid = $1")
            .bind(uid)
            .fetch_optional(pool)
            .await)?)
    }

    pub(super) async fn owned_version(&self, uid: &str) -> Result<Option<ModelVersion>> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(ownership.fields_text(), "aliases\ntags");
        assert_eq!(
            fields_of(["aliases", "tags", "tags.team", "future"].into_iter()),
            ownership.fields
        );
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

    #[test]
    fn the_owner_tag_is_refused_to_every_tag_write() {
        let ownership = Ownership {
            owner: Owner {
                namespace: "team-a".into(),
                kind: "ModelVersion".into(),
                name: "churn-1".into(),
                uid: "u-1".into(),
            },
            fields: BTreeSet::new(),
        };
        let object = || "model version 'churn' version 1".to_owned();
        // Others: refused as owned, naming the owner, though the owner declares no tags.
        let refused =
            check_tag_writable(Some(ownership.clone()), OWNER_TAG, Actor::Api, object).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "model version 'churn' version 1 field 'tags.ferroflow.owner' is managed by \
             ModelVersion team-a/churn-1 (uid u-1): change it there (in git)"
        );
        // The owner and writers of unowned rows: invalid, only the store writes it.
        for (ownership, actor) in [
            (Some(ownership.clone()), Actor::Owner("u-1")),
            (None, Actor::User("alice")),
        ] {
            assert!(matches!(
                check_tag_writable(ownership, OWNER_TAG, actor, object),
                Err(Error::Invalid(_))
            ));
        }
        // Other tags: open unless the owner declares the tags.
        check_tag_writable(Some(ownership), "team", Actor::Api, object).unwrap();
        assert!(refuse_owner_tag(&[KeyValue::new("team", "a")]).is_ok());
        assert!(refuse_owner_tag(&[KeyValue::new(OWNER_TAG, "x")]).is_err());
    }
}
