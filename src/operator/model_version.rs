//! Reconciles a ModelVersion: adopt the version it names, or register `source` exactly once
//! (keyed by the resource's uid, so a crash between the store write and the status patch never
//! registers twice); then make stage, description and tags match the spec. Deletion: `Delete`
//! deletes the version, `Retain` releases it. A version it registers has its `MLmodel` read
//! through the tracking server and recorded, as the server does for versions registered
//! through its API, so the promotion policies' `modelMetadata` rule can judge it.

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::context::Context;
use super::error::Error;
use super::reconcile::{Failure, Reconciler, now, publish};
use super::registered_model::model_name_of;
use super::shared::{owner_of, tag_changes, tags_of};
use super::wake::concerns_model;
use crate::client::download::{DownloadError, read_file};
use crate::crd::{
    DeletionPolicy, ModelVersion, ModelVersionStatus, Outcome, Reason, ReconcileState, Stage,
};
use crate::store;
use crate::store::notify::RegistryChange;
use crate::store::registry::{
    self, Actor, MAX_MLMODEL_BYTES, ModelFiles, NewModelVersion, OwnedField, Ownership, RegistryRef,
};

impl ModelVersion {
    fn ownership(&self) -> Ownership {
        let mut fields = BTreeSet::new();
        if self.spec.stage.is_some() {
            fields.insert(OwnedField::Stage);
        }
        if self.spec.description.is_some() {
            fields.insert(OwnedField::Description);
        }
        if self.spec.tags.is_some() {
            fields.insert(OwnedField::Tags);
        }
        Ownership {
            owner: owner_of(self),
            fields,
        }
    }
}

fn store_stage(stage: Stage) -> registry::Stage {
    match stage {
        Stage::None => registry::Stage::None,
        Stage::Staging => registry::Stage::Staging,
        Stage::Production => registry::Stage::Production,
        Stage::Archived => registry::Stage::Archived,
    }
}

/// What reading a version's `MLmodel` through the tracking server came to.
#[derive(Debug)]
enum MlmodelRead {
    /// Record these (no `MLmodel` there is a reading too, as the server records it).
    Record(ModelFiles),
    /// Leave the files unread, as the server does for files it does not serve (or an
    /// oversized `MLmodel`): the `modelMetadata` rule refuses the version.
    Unread,
    /// Try again later (the server is unreachable or answered with an error).
    Retry(DownloadError),
}

fn mlmodel_read(read: Result<Option<Vec<u8>>, DownloadError>) -> MlmodelRead {
    match read {
        Ok(Some(bytes)) => {
            MlmodelRead::Record(ModelFiles::from_mlmodel(&String::from_utf8_lossy(&bytes)))
        }
        Ok(None) => MlmodelRead::Record(ModelFiles::NO_MLMODEL),
        Err(
            DownloadError::NotProxied(_)
            | DownloadError::UnsupportedUri(_)
            | DownloadError::UnsafeName(_)
            | DownloadError::TooLarge { .. },
        ) => MlmodelRead::Unread,
        Err(error) => MlmodelRead::Retry(error),
    }
}

/// Reads the `MLmodel` of `version` (registered by the operator) through the tracking server,
/// unless already recorded, and records what it declares with the store function the server
/// uses. An unreachable server fails the reconcile, retried with backoff.
async fn record_model_files(
    ctx: &Context,
    store: &store::Store,
    version: &registry::ModelVersion,
) -> Result<(), Failure> {
    if store
        .model_files(&version.name, version.version)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mlmodel = format!("{}/MLmodel", version.storage_location.trim_end_matches('/'));
    let read = match ctx.tracking_client(store.workspace()) {
        Ok(client) => read_file(&client, &mlmodel, MAX_MLMODEL_BYTES).await,
        Err(error) => Err(error.into()),
    };
    match mlmodel_read(read) {
        MlmodelRead::Record(files) => {
            store
                .record_model_files(&version.name, version.version, &files)
                .await?;
        }
        MlmodelRead::Unread => {
            tracing::info!(%mlmodel, "the version's MLmodel is not read: not served through the tracking server, or too large");
        }
        MlmodelRead::Retry(source) => {
            return Err(Failure::Operator(Error::ReadModelFiles {
                mlmodel,
                url: ctx.config.tracking_api_url.to_string(),
                source: Box::new(source),
            }));
        }
    }
    Ok(())
}

impl Reconciler for ModelVersion {
    type Status = ModelVersionStatus;
    const KIND: &'static str = "ModelVersion";
    /// The deletion policy applies to store rows, which no owner reference reaches.
    const NEEDS_FINALIZER: bool = true;

    /// The model is known once reconciled (`status.modelName`); before that, the resync or
    /// the RegisteredModel watch brings the version here.
    fn wakes_on(&self, change: &RegistryChange) -> bool {
        self.status
            .as_ref()
            .and_then(|status| status.model_name.as_deref())
            .is_some_and(|name| concerns_model(change, self, name))
    }

    fn status(&self) -> Option<&ModelVersionStatus> {
        self.status.as_ref()
    }

    fn state(status: &ModelVersionStatus) -> &ReconcileState {
        &status.state
    }

    fn state_mut(status: &mut ModelVersionStatus) -> &mut ReconcileState {
        &mut status.state
    }

    async fn sync(
        &self,
        ctx: &Context,
        status: &mut ModelVersionStatus,
    ) -> Result<Outcome, Failure> {
        let namespace = self.namespace().unwrap_or_default();
        let name = model_name_of(ctx, &namespace, &self.spec.model_ref, "spec.modelRef").await?;
        status.model_name = Some(name.clone());
        let store = ctx.store_for(self);
        match store.get_registered_model(&name).await {
            Ok(_) => {}
            // The RegisteredModel resource exists but has not created the model yet.
            Err(store::Error::NotFound { .. }) => {
                return Ok(Outcome::progressing(
                    Reason::Reconciling,
                    format!("waiting for registered model '{name}' to be created"),
                ));
            }
            Err(error) => return Err(error.into()),
        }
        let ownership = self.ownership();
        let uid = ownership.owner.uid.clone();
        let actor = Actor::Owner(&uid);

        let mut version = match (self.spec.version, &self.spec.source) {
            (Some(number), _) => {
                store.get_model_version(&name, number).await?;
                store
                    .set_owner(RegistryRef::Version(&name, number), &ownership)
                    .await?;
                store.get_model_version(&name, number).await?
            }
            (None, Some(source)) => {
                // Idempotent by owner uid: a second call returns the version it registered.
                let created = store
                    .create_model_version(NewModelVersion {
                        name: name.clone(),
                        source: source.clone(),
                        run_id: self.spec.run_id.clone(),
                        tags: tags_of(self.spec.tags.as_ref()),
                        description: self.spec.description.clone(),
                        ownership: Some(ownership.clone()),
                        ..NewModelVersion::default()
                    })
                    .await?;
                // Fields owned since registration may have changed in git since.
                store
                    .set_owner(RegistryRef::Version(&name, created.version), &ownership)
                    .await?;
                // Before any stage change, which a policy may judge by it.
                record_model_files(ctx, &store, &created).await?;
                created
            }
            (None, None) => {
                return Ok(Outcome::not_ready(
                    Reason::InvalidSpec,
                    "set exactly one of spec.version or spec.source",
                ));
            }
        };
        let number = version.version;
        status.version = Some(number);

        if let Some(description) = &self.spec.description
            && version.description.as_deref().unwrap_or_default() != description
        {
            store
                .update_model_version(&name, number, Some(description), actor)
                .await?;
        }
        if let Some(tags) = &self.spec.tags {
            let changes = tag_changes(&version.tags, tags);
            for tag in &changes.set {
                store
                    .set_model_version_tag(&name, number, tag, actor)
                    .await?;
            }
            for key in &changes.delete {
                store
                    .delete_model_version_tag(&name, number, key, actor)
                    .await?;
            }
        }
        if let Some(stage) = self.spec.stage.map(store_stage)
            && version.current_stage != stage
        {
            let before = version.current_stage;
            store
                .transition_model_version_stage(
                    &name,
                    number,
                    stage,
                    self.spec.archive_existing_versions,
                    actor,
                )
                .await?;
            status.stage_changed_time = Some(now());
            let note = format!("model '{name}' version {number} moved from {before} to {stage}");
            publish(
                ctx,
                self,
                EventType::Normal,
                "StageChanged",
                "TransitionStage",
                &note,
            )
            .await;
        }

        version = store.get_model_version(&name, number).await?;
        status.stage = Some(version.current_stage.as_str().to_owned());
        status.aliases = version.aliases.clone();
        status.run_id = Some(version.run_id.clone()).filter(|id| !id.is_empty());
        status.download_uri = Some(version.storage_location.clone());
        Ok(Outcome::ready(format!(
            "model '{name}' version {number} matches the spec (stage {})",
            version.current_stage
        )))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<(), Failure> {
        let uid = self.uid().unwrap_or_default();
        let store = ctx.store_for(self);
        // What this resource owns, from the store itself: also right when the resource is
        // deleted before its status ever recorded the version.
        for owned in store.list_owned(&uid).await? {
            let Some(number) = owned.version else {
                continue;
            };
            let result = match self.spec.deletion_policy {
                DeletionPolicy::Delete => {
                    store
                        .delete_model_version(&owned.name, number, Actor::Owner(&uid))
                        .await
                }
                DeletionPolicy::Retain => {
                    store
                        .clear_owner(RegistryRef::Version(&owned.name, number), &uid)
                        .await
                }
            };
            match result {
                Ok(()) | Err(store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientError;

    #[test]
    fn an_mlmodel_read_is_recorded_left_unread_or_retried() {
        let signed = b"flavors: {}\nsignature:\n  inputs: '[]'\n".to_vec();
        assert!(matches!(
            mlmodel_read(Ok(Some(signed))),
            MlmodelRead::Record(ModelFiles {
                has_mlmodel: true,
                has_signature: true,
                has_input_example: false
            })
        ));
        // No MLmodel: recorded as such, as the tracking server records it.
        assert!(matches!(
            mlmodel_read(Ok(None)),
            MlmodelRead::Record(ModelFiles::NO_MLMODEL)
        ));
        for unread in [
            DownloadError::NotProxied("s3://bucket/model/MLmodel".into()),
            DownloadError::TooLarge {
                uri: "mlflow-artifacts:/1/MLmodel".into(),
                max_bytes: MAX_MLMODEL_BYTES,
            },
        ] {
            assert!(matches!(mlmodel_read(Err(unread)), MlmodelRead::Unread));
        }
        let refused = ClientError::Api {
            url: "http://tracking:5000/".into(),
            status: 503,
            code: "TEMPORARILY_UNAVAILABLE".into(),
            message: "down".into(),
        };
        assert!(matches!(
            mlmodel_read(Err(refused.into())),
            MlmodelRead::Retry(DownloadError::Client(_))
        ));
    }
}
