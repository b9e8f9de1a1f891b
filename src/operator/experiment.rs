//! Reconciles an Experiment: create or adopt the MLflow experiment by name, keep description
//! and tags as the spec says; on deletion, soft-delete (`Delete`) or leave it (`Retain`).

use kube::ResourceExt;

use super::context::Context;
use super::reconcile::{Failure, Reconciler, owned_store};
use super::shared::owner_of;
use crate::crd::{DeletionPolicy, Experiment, ExperimentStatus, Outcome, Reason, ReconcileState};
use crate::store::experiments::{Experiment as StoredExperiment, ExperimentOwnership};
use crate::store::registry::Actor;
use crate::store::{self, KeyValue, Store};

/// MLflow keeps an experiment's description in this tag.
const DESCRIPTION_TAG: &str = "mlflow.note.content";
const LIFECYCLE_DELETED: &str = "deleted";

impl Reconciler for Experiment {
    type Status = ExperimentStatus;
    const KIND: &'static str = "Experiment";
    /// The deletion policy applies to store rows, which no owner reference reaches.
    const NEEDS_FINALIZER: bool = true;

    fn status(&self) -> Option<&ExperimentStatus> {
        self.status.as_ref()
    }

    fn state(status: &ExperimentStatus) -> &ReconcileState {
        &status.state
    }

    fn state_mut(status: &mut ExperimentStatus) -> &mut ReconcileState {
        &mut status.state
    }

    async fn sync(&self, ctx: &Context, status: &mut ExperimentStatus) -> Result<Outcome, Failure> {
        let name = self.experiment_name();
        let owner = owner_of(self);
        let uid = owner.uid.clone();
        let actor = Actor::Owner(&uid);
        let store = owned_store(ctx, self).await?;
        let mut experiment = find_or_create(ctx, &store, self, name).await?;
        let mut desired: Vec<KeyValue> = self
            .spec
            .tags
            .iter()
            .map(|(key, value)| KeyValue::new(key, value))
            .collect();
        if let Some(description) = &self.spec.description {
            desired.push(KeyValue::new(DESCRIPTION_TAG, description));
        }
        // The store remembers which tags this resource declared last time: those it no longer
        // declares are removed below, once ownership has moved to the new set.
        let previously_owned = experiment
            .ownership
            .as_ref()
            .filter(|ownership| ownership.owner.uid == owner.uid)
            .map(|ownership| ownership.tag_keys.clone())
            .unwrap_or_default();
        let ownership = ExperimentOwnership {
            owner,
            tag_keys: desired.iter().map(|tag| tag.key.clone()).collect(),
        };
        store
            .set_experiment_owner(experiment.experiment_id, &ownership)
            .await?;
        if experiment.lifecycle_stage == LIFECYCLE_DELETED {
            // Declared in git means it should exist: bring back what someone deleted.
            store
                .restore_experiment(experiment.experiment_id, actor)
                .await?;
            experiment = store.get_experiment(experiment.experiment_id).await?;
        }
        status.experiment_id = Some(experiment.experiment_id.to_string());
        status.experiment_name = Some(experiment.name.clone());
        status.lifecycle_stage = Some(experiment.lifecycle_stage.clone());
        if let Some(location) = &self.spec.artifact_location
            && *location != experiment.artifact_location
        {
            return Err(Failure::Report(Outcome::not_ready(
                Reason::InvalidSpec,
                format!(
                    "experiment '{name}' already exists with artifact location '{}', not '{location}'; \
                     MLflow cannot move it: remove artifactLocation or use another experimentName",
                    experiment.artifact_location
                ),
            )));
        }

        for tag in &desired {
            let current = experiment.tags.iter().find(|t| t.key == tag.key);
            if current.map(|t| &t.value) != Some(&tag.value) {
                store
                    .set_experiment_tag(experiment.experiment_id, tag, actor)
                    .await?;
            }
        }
        for key in previously_owned.difference(&ownership.tag_keys) {
            if experiment.tags.iter().any(|t| &t.key == key) {
                match store
                    .delete_experiment_tag(experiment.experiment_id, key, actor)
                    .await
                {
                    Ok(()) | Err(store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(Outcome::ready(format!(
            "experiment '{}' (id {}) matches the spec",
            experiment.name, experiment.experiment_id
        )))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<(), Failure> {
        let uid = self.uid().unwrap_or_default();
        let store = owned_store(ctx, self).await?;
        let experiment = match store.get_experiment_by_name(self.experiment_name()).await {
            Ok(experiment) => experiment,
            Err(store::Error::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        // Only the experiment this resource declares: one with the same name that another
        // resource (or nobody) owns is not ours to delete or release.
        if experiment.ownership.as_ref().map(|o| o.owner.uid.as_str()) != Some(uid.as_str()) {
            return Ok(());
        }
        if self.spec.deletion_policy == DeletionPolicy::Delete
            && experiment.lifecycle_stage != LIFECYCLE_DELETED
        {
            store
                .delete_experiment(experiment.experiment_id, Actor::Owner(&uid))
                .await?;
        }
        // Deleted or kept, nobody declares it any more: the API may restore or change it.
        store
            .clear_experiment_owner(experiment.experiment_id, &uid)
            .await?;
        Ok(())
    }
}

async fn find_or_create(
    ctx: &Context,
    store: &Store,
    obj: &Experiment,
    name: &str,
) -> Result<StoredExperiment, Failure> {
    match store.get_experiment_by_name(name).await {
        Ok(experiment) => return Ok(experiment),
        Err(store::Error::NotFound { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let tags: Vec<KeyValue> = obj
        .spec
        .tags
        .iter()
        .map(|(key, value)| KeyValue::new(key, value))
        .collect();
    match store
        .create_experiment(
            name,
            obj.spec.artifact_location.as_deref(),
            &tags,
            &ctx.config.default_artifact_root,
        )
        .await
    {
        // Someone created it between our read and our write: adopt theirs.
        Ok(_) | Err(store::Error::AlreadyExists(_)) => {
            Ok(store.get_experiment_by_name(name).await?)
        }
        Err(error) => Err(error.into()),
    }
}
