//! Reconciles a RegisteredModel: create or adopt the model, record this resource as its owner
//! (so the REST API refuses to change what git declares), and make description, tags and
//! aliases match the spec. Deletion: `Delete` removes the model, `Retain` releases it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::reconcile::{Failure, Reconciler, owned_store, publish};
use super::shared::{AliasMove, alias_changes, owner_of, tag_changes, tags_of};
use super::wake::concerns_model;
use crate::crd::model_version::ModelRef;
use crate::crd::registered_model::{PROMOTIONS_PER_ALIAS, PromotionRecord};
use crate::crd::{
    DeletionPolicy, Outcome, Reason, ReconcileState, RegisteredModel, RegisteredModelStatus,
};
use crate::store::notify::RegistryChange;
use crate::store::registry::{Actor, OwnedField, Ownership, Promotion, PromotionPath, RegistryRef};
use crate::store::{self, Store};

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

impl RegisteredModel {
    /// Copies the last promotions of each alias into `status` and publishes an Event for each
    /// entry newer than the last one reported: `AliasMoved` for a move, whoever made it;
    /// `PolicyDenied` for a refusal, except this resource's own (its Ready condition and the
    /// Warning that comes with it say that, once, however often the operator retries).
    async fn report_promotions(
        &self,
        ctx: &Context,
        store: &Store,
        status: &mut RegisteredModelStatus,
    ) -> Result<(), Failure> {
        let name = self.model_name();
        let recent = store
            .recent_alias_promotions(name, PROMOTIONS_PER_ALIAS)
            .await?;
        let reported = status.last_promotion_id.unwrap_or(0);
        let mut news: Vec<&Promotion> = recent.iter().filter(|entry| entry.id > reported).collect();
        news.sort_by_key(|entry| entry.id);
        let itself = format!(
            "{}/{}/{}",
            self.namespace().unwrap_or_default(),
            Self::KIND,
            self.name_any()
        );
        for entry in news {
            if !entry.allowed && entry.actor == itself {
                continue;
            }
            let (type_, reason, action, note) = promotion_event(name, entry);
            publish(ctx, self, type_, reason, action, &note).await;
        }
        status.last_promotion_id = recent
            .iter()
            .map(|entry| entry.id)
            .max()
            .max(status.last_promotion_id);
        status.promotions = BTreeMap::new();
        for entry in recent {
            status
                .promotions
                .entry(entry.target.clone())
                .or_default()
                .push(promotion_record(entry));
        }
        Ok(())
    }
}

/// The Event telling of history entry `entry` of model `name`: type, reason, action, note.
fn promotion_event(
    name: &str,
    entry: &Promotion,
) -> (EventType, &'static str, &'static str, String) {
    let alias = &entry.target;
    let by = format!("by {} ({})", entry.actor, path_name(entry.path));
    if !entry.allowed {
        let version = entry
            .to_version
            .map_or_else(String::new, |version| format!(" to version {version}"));
        return (
            EventType::Warning,
            "PolicyDenied",
            "SetAlias",
            format!(
                "moving alias '{alias}' of model '{name}'{version} refused {by}: {}",
                failed_rules(entry).join("; ")
            ),
        );
    }
    let rollback = if entry.rollback { " (rollback)" } else { "" };
    match (entry.from_version, entry.to_version) {
        (_, None) => (
            EventType::Normal,
            "AliasMoved",
            "DeleteAlias",
            format!("alias '{alias}' of model '{name}' removed {by}"),
        ),
        (Some(from), Some(to)) => (
            EventType::Normal,
            "AliasMoved",
            if entry.rollback {
                "Rollback"
            } else {
                "SetAlias"
            },
            format!(
                "alias '{alias}' of model '{name}' moved from version {from} to {to}{rollback} {by}"
            ),
        ),
        (None, Some(to)) => (
            EventType::Normal,
            "AliasMoved",
            "SetAlias",
            format!("alias '{alias}' of model '{name}' set to version {to} {by}"),
        ),
    }
}

fn path_name(path: PromotionPath) -> &'static str {
    match path {
        PromotionPath::Api => "api",
        PromotionPath::Operator => "operator",
    }
}

/// Each failed rule of `entry` and what was seen, as a denial names them.
fn failed_rules(entry: &Promotion) -> Vec<String> {
    entry
        .results
        .iter()
        .filter(|result| !result.passed)
        .map(|result| {
            format!(
                "[{}] {} failed: {}",
                result.policy, result.rule, result.observed
            )
        })
        .collect()
}

fn promotion_record(entry: Promotion) -> PromotionRecord {
    PromotionRecord {
        id: entry.id,
        time: Time(Timestamp::from_millisecond(entry.timestamp).unwrap_or_default()),
        failed_rules: failed_rules(&entry),
        from_version: entry.from_version,
        to_version: entry.to_version,
        path: path_name(entry.path).to_owned(),
        actor: entry.actor,
        allowed: entry.allowed,
        rollback: entry.rollback,
    }
}

impl Reconciler for RegisteredModel {
    type Status = RegisteredModelStatus;
    const KIND: &'static str = "RegisteredModel";
    /// The deletion policy applies to store rows, which no owner reference reaches.
    const NEEDS_FINALIZER: bool = true;

    fn wakes_on(&self, change: &RegistryChange) -> bool {
        concerns_model(change, self, self.model_name())
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
        let store = owned_store(ctx, self).await?;
        let model = match store.get_registered_model(name).await {
            Ok(_) => {
                store
                    .set_owner(RegistryRef::Model(name), &ownership)
                    .await?;
                store.get_registered_model(name).await?
            }
            Err(store::Error::NotFound { .. }) => {
                let tags = tags_of(self.spec.tags.as_ref());
                match store
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
                        store
                            .set_owner(RegistryRef::Model(name), &ownership)
                            .await?;
                        store.get_registered_model(name).await?
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        };

        if let Some(description) = &self.spec.description
            && model.description.as_deref().unwrap_or_default() != description
        {
            store
                .update_registered_model(name, Some(description), actor)
                .await?;
        }
        if let Some(tags) = &self.spec.tags {
            let changes = tag_changes(&model.tags, tags);
            for tag in &changes.set {
                store.set_registered_model_tag(name, tag, actor).await?;
            }
            for key in &changes.delete {
                store.delete_registered_model_tag(name, key, actor).await?;
            }
        }

        if status.last_promotion_id.is_none() {
            // First look at this model: what happened before is history, not news.
            let earlier = store
                .recent_alias_promotions(name, PROMOTIONS_PER_ALIAS)
                .await?;
            status.last_promotion_id =
                Some(earlier.iter().map(|entry| entry.id).max().unwrap_or(0));
        }
        let mut missing = Vec::new();
        if let Some(aliases) = &self.spec.aliases {
            let changes = alias_changes(&model.aliases, aliases);
            for AliasMove { alias, to } in &changes.set {
                let moved = store
                    .set_registered_model_alias(name, alias, *to, actor)
                    .await;
                match moved {
                    Ok(()) => {}
                    Err(store::Error::NotFound { .. }) => missing.push(format!("{alias} → {to}")),
                    Err(error) => {
                        // The refusal is in the history: report it before failing.
                        self.report_promotions(ctx, &store, status).await?;
                        return Err(error.into());
                    }
                }
            }
            for alias in &changes.delete {
                store
                    .delete_registered_model_alias(name, alias, actor)
                    .await?;
            }
        }
        self.report_promotions(ctx, &store, status).await?;

        let model = store.get_registered_model(name).await?;
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
        let store = owned_store(ctx, self).await?;
        let result = match self.spec.deletion_policy {
            DeletionPolicy::Delete => {
                store
                    .delete_registered_model(name, Actor::Owner(&uid))
                    .await
            }
            DeletionPolicy::Retain => store.clear_owner(RegistryRef::Model(name), &uid).await,
        };
        match result {
            Ok(()) | Err(store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::registry::{RuleResult, TargetType};

    fn entry(from: Option<i64>, to: Option<i64>, allowed: bool, rollback: bool) -> Promotion {
        Promotion {
            id: 7,
            timestamp: 1_700_000_000_000,
            name: "churn".into(),
            target_type: TargetType::Alias,
            target: "champion".into(),
            from_version: from,
            to_version: to,
            from_stage: None,
            actor: "alice".into(),
            path: PromotionPath::Api,
            allowed,
            rollback,
            results: vec![
                RuleResult {
                    policy: "team-a/gate".into(),
                    rule: "val_auc >= 0.9".into(),
                    passed: allowed,
                    observed: "val_auc = 0.85".into(),
                },
                RuleResult {
                    policy: "team-a/gate".into(),
                    rule: "tag approved = true".into(),
                    passed: true,
                    observed: "tag approved = true".into(),
                },
            ],
        }
    }

    #[test]
    fn events_tell_moves_rollbacks_removals_and_denials() {
        let (type_, reason, action, note) =
            promotion_event("churn", &entry(Some(1), Some(2), true, false));
        assert_eq!(
            (type_, reason, action),
            (EventType::Normal, "AliasMoved", "SetAlias")
        );
        assert_eq!(
            note,
            "alias 'champion' of model 'churn' moved from version 1 to 2 by alice (api)"
        );
        let (_, _, action, note) = promotion_event("churn", &entry(Some(2), Some(1), true, true));
        assert_eq!(action, "Rollback");
        assert!(
            note.contains("moved from version 2 to 1 (rollback) by alice"),
            "{note}"
        );
        let (_, _, action, note) = promotion_event("churn", &entry(Some(2), None, true, false));
        assert_eq!(
            (action, note.as_str()),
            (
                "DeleteAlias",
                "alias 'champion' of model 'churn' removed by alice (api)"
            )
        );
        let (type_, reason, _, note) =
            promotion_event("churn", &entry(None, Some(3), false, false));
        assert_eq!((type_, reason), (EventType::Warning, "PolicyDenied"));
        assert_eq!(
            note,
            "moving alias 'champion' of model 'churn' to version 3 refused by alice (api): \
             [team-a/gate] val_auc >= 0.9 failed: val_auc = 0.85"
        );
    }

    #[test]
    fn a_status_record_keeps_the_failed_rules_only() {
        let record = promotion_record(entry(None, Some(3), false, false));
        assert_eq!(
            record.failed_rules,
            ["[team-a/gate] val_auc >= 0.9 failed: val_auc = 0.85"]
        );
        assert_eq!(
            (record.id, record.path.as_str(), record.allowed),
            (7, "api", false)
        );
        assert_eq!(record.time.0.as_millisecond(), 1_700_000_000_000);
        assert!(
            promotion_record(entry(None, Some(3), true, false))
                .failed_rules
                .is_empty()
        );
    }
}
