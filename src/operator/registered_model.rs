//! Reconciles a RegisteredModel: create or adopt the model, record this resource as its owner
//! (so the REST API refuses to change what git declares), and make description, tags and
//! aliases match the spec. Deletion: `Delete` removes the model, `Retain` releases it.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::context::Context;
use super::reconcile::{Failure, Reconciler, publish};
use crate::crd::{
    DeletionPolicy, Outcome, Reason, ReconcileState, RegisteredModel, RegisteredModelStatus,
};
use crate::store::registry::{Actor, OwnedField, Owner, Ownership, RegistryRef};
use crate::store::{self, KeyValue};

/// Tags under this prefix belong to MLflow itself (e.g. prompt markers) and are never removed
/// because git does not list them.
pub const SYSTEM_TAG_PREFIX: &str = "mlflow.";

/// The store's owner record for a resource.
pub fn owner_of<K: kube::Resource<DynamicType = ()>>(obj: &K) -> Owner {
    Owner {
        namespace: obj.namespace().unwrap_or_default(),
        kind: K::kind(&()).into_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
    }
}

impl RegisteredModel {
    fn ownership(&self) -> Ownership {
        let mut fields = BTreeSet::new();
        if self.spec.description.is_some() {
            fields.insert(OwnedField::Description);
        }
        if self.spec.tags.is_some() {
            fields.insert(OwnedField::Tags);
        }
        if self.spec.aliases.is_some() {
            fields.insert(OwnedField::Aliases);
        }
        Ownership {
            owner: owner_of(self),
            fields,
        }
    }
}

impl Reconciler for RegisteredModel {
    type Status = RegisteredModelStatus;
    const KIND: &'static str = "RegisteredModel";

    fn status(&self) -> Option<&RegisteredModelStatus> {
        self.status.as_ref()
    }

    fn state(status: &RegisteredModelStatus) -> &ReconcileState {
        &status.state
    }

    fn state_mut(status: &mut RegisteredModelStatus) -> &mut ReconcileState {
        &mut status.state
    }

    async fn sync(
        &self,
        ctx: &Context,
        status: &mut RegisteredModelStatus,
    ) -> Result<Outcome, Failure> {
        let name = self.model_name();
        let ownership = self.ownership();
        let uid = ownership.owner.uid.clone();
        let actor = Actor::Owner(&uid);
        status.model_name = Some(name.to_owned());
        let model = match ctx.store.get_registered_model(name).await {
            Ok(_) => {
                ctx.store
                    .set_owner(RegistryRef::Model(name), &ownership)
                    .await?;
                ctx.store.get_registered_model(name).await?
            }
            Err(store::Error::NotFound { .. }) => {
                let tags = tags_of(self.spec.tags.as_ref());
                match ctx
                    .store
                    .create_registered_model(
                        name,
                        &tags,
                        self.spec.description.as_deref(),
                        Some(&ownership),
                    )
                    .await
                {
                    Ok(model) => model,
                    // Created meanwhile by someone else: adopt it.
                    Err(store::Error::AlreadyExists(_)) => {
                        ctx.store
                            .set_owner(RegistryRef::Model(name), &ownership)
                            .await?;
                        ctx.store.get_registered_model(name).await?
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        };

        if let Some(description) = &self.spec.description
            && model.description.as_deref().unwrap_or_default() != description
        {
            ctx.store
                .update_registered_model(name, Some(description), actor)
                .await?;
        }
        if let Some(tags) = &self.spec.tags {
            let changes = tag_changes(&model.tags, tags);
            for tag in &changes.set {
                ctx.store.set_registered_model_tag(name, tag, actor).await?;
            }
            for key in &changes.delete {
                ctx.store
                    .delete_registered_model_tag(name, key, actor)
                    .await?;
            }
        }

        let mut missing = Vec::new();
        if let Some(aliases) = &self.spec.aliases {
            let current: BTreeMap<&str, i64> = model
                .aliases
                .iter()
                .map(|(alias, version)| (alias.as_str(), *version))
                .collect();
            for (alias, &version) in aliases {
                let before = current.get(alias.as_str()).copied();
                if before == Some(version) {
                    continue;
                }
                match ctx
                    .store
                    .set_registered_model_alias(name, alias, version, actor)
                    .await
                {
                    Ok(()) => {
                        let note = match before {
                            Some(before) => format!(
                                "alias '{alias}' of model '{name}' moved from version {before} to {version}"
                            ),
                            None => format!(
                                "alias '{alias}' of model '{name}' set to version {version}"
                            ),
                        };
                        publish(
                            ctx,
                            self,
                            EventType::Normal,
                            "AliasMoved",
                            "SetAlias",
                            &note,
                        )
                        .await;
                    }
                    Err(store::Error::NotFound { .. }) => {
                        missing.push(format!("{alias} → {version}"))
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            for alias in current.keys() {
                if !aliases.contains_key(*alias) {
                    ctx.store
                        .delete_registered_model_alias(name, alias, actor)
                        .await?;
                    let note = format!("alias '{alias}' of model '{name}' removed");
                    publish(
                        ctx,
                        self,
                        EventType::Normal,
                        "AliasMoved",
                        "DeleteAlias",
                        &note,
                    )
                    .await;
                }
            }
        }

        let model = ctx.store.get_registered_model(name).await?;
        status.latest_version = model.latest_versions.iter().map(|v| v.version).max();
        status.aliases = model.aliases.iter().cloned().collect();
        if !missing.is_empty() {
            return Ok(Outcome::not_ready(
                Reason::VersionNotFound,
                format!(
                    "model '{name}' has no such version for alias {}; register the version or fix spec.aliases",
                    missing.join(", ")
                ),
            ));
        }
        Ok(Outcome::ready(format!(
            "registered model '{name}' matches the spec"
        )))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<(), Failure> {
        let uid = self.uid().unwrap_or_default();
        let name = self.model_name();
        let result = match self.spec.deletion_policy {
            DeletionPolicy::Delete => {
                ctx.store
                    .delete_registered_model(name, Actor::Owner(&uid))
                    .await
            }
            DeletionPolicy::Retain => ctx.store.clear_owner(RegistryRef::Model(name), &uid).await,
        };
        match result {
            Ok(()) | Err(store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// What to write so that a row's tags become the declared map.
#[derive(Debug, PartialEq)]
pub struct TagChanges {
    /// Declared tags that are missing or have another value.
    pub set: Vec<KeyValue>,
    /// Keys present but not declared, except MLflow's own (`mlflow.`).
    pub delete: Vec<String>,
}

/// Compares a row's `current` tags with the `declared` map (the whole tag set a resource owns).
pub fn tag_changes(current: &[KeyValue], declared: &BTreeMap<String, String>) -> TagChanges {
    let set = declared
        .iter()
        .filter(|(key, value)| {
            current.iter().find(|t| &t.key == *key).map(|t| &t.value) != Some(*value)
        })
        .map(|(key, value)| KeyValue::new(key, value))
        .collect();
    let delete = current
        .iter()
        .filter(|t| !declared.contains_key(&t.key) && !t.key.starts_with(SYSTEM_TAG_PREFIX))
        .map(|t| t.key.clone())
        .collect();
    TagChanges { set, delete }
}

/// A spec tag map as store tags.
pub fn tags_of(tags: Option<&BTreeMap<String, String>>) -> Vec<KeyValue> {
    tags.into_iter()
        .flatten()
        .map(|(key, value)| KeyValue::new(key, value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_changes_set_what_differs_and_delete_what_is_undeclared() {
        let current = vec![
            KeyValue::new("owner", "growth"),
            KeyValue::new("stale", "x"),
            KeyValue::new("team", "old"),
            KeyValue::new("mlflow.prompt.is_prompt", "false"),
        ];
        let declared = BTreeMap::from([
            ("owner".to_owned(), "growth".to_owned()),
            ("team".to_owned(), "new".to_owned()),
            ("tier".to_owned(), "gold".to_owned()),
        ]);
        assert_eq!(
            tag_changes(&current, &declared),
            TagChanges {
                set: vec![KeyValue::new("team", "new"), KeyValue::new("tier", "gold")],
                delete: vec!["stale".to_owned()],
            }
        );
    }
}
