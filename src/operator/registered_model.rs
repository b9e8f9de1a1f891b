//! Reconciles a RegisteredModel: create or adopt the model, record this resource as its owner
//! (so the REST API refuses to change what git declares), and make description, tags and
//! aliases match the spec. Deletion: `Delete` removes the model, `Retain` releases it.

use std::collections::BTreeSet;

use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::reconcile::{Failure, Reconciler, publish};
use super::shared::{AliasMove, alias_changes, owner_of, tag_changes, tags_of};
use super::wake::concerns_model;
use crate::crd::model_version::ModelRef;
use crate::crd::{
    DeletionPolicy, Outcome, Reason, ReconcileState, RegisteredModel, RegisteredModelStatus,
};
use crate::store;
use crate::store::notify::RegistryChange;
use crate::store::registry::{Actor, OwnedField, Ownership, RegistryRef};

/// The MLflow name of the model the RegisteredModel resource `reference` (in `namespace`)
/// declares; `field` names where the reference is written, for the condition when it is
/// missing.
pub async fn model_name_of(
    ctx: &Context,
    namespace: &str,
    reference: &ModelRef,
    field: &str,
) -> Result<String, Failure> {
    let api: Api<RegisteredModel> = Api::namespaced(ctx.client.clone(), namespace);
    let name = &reference.name;
    match api.get_opt(name).await {
        Ok(Some(model)) => Ok(model.model_name().to_owned()),
        Ok(None) => Err(Failure::Report(Outcome::not_ready(
            Reason::ModelNotFound,
            format!("RegisteredModel {namespace}/{name} named in {field} does not exist"),
        ))),
        Err(source) => Err(Failure::Kube {
            object: format!("RegisteredModel {namespace}/{name}"),
            source,
        }),
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
    /// The deletion policy applies to store rows, which no owner reference reaches.
    const NEEDS_FINALIZER: bool = true;

    fn wakes_on(&self, change: &RegistryChange) -> bool {
        concerns_model(change, self.model_name())
    }

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
            let changes = alias_changes(&model.aliases, aliases);
            for AliasMove { alias, from, to } in &changes.set {
                match ctx
                    .store
                    .set_registered_model_alias(name, alias, *to, actor)
                    .await
                {
                    Ok(()) => {
                        let note = match from {
                            Some(from) => format!(
                                "alias '{alias}' of model '{name}' moved from version {from} to {to}"
                            ),
                            None => {
                                format!("alias '{alias}' of model '{name}' set to version {to}")
                            }
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
                    Err(store::Error::NotFound { .. }) => missing.push(format!("{alias} → {to}")),
                    Err(error) => return Err(error.into()),
                }
            }
            for alias in &changes.delete {
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
