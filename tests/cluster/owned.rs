//! `operator::apply` against the real API server: objects a resource owns are applied with
//! the operator's field manager, owner reference and owner labels, re-applied without change,
//! and pruned by label when no longer desired. Also the release of a finalizer that a kind no
//! longer needs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, ensure};
use ferroflow::crd::Experiment;
use ferroflow::operator::apply::{apply_owned, prune_owned};
use ferroflow::operator::build::{self, Role};
use ferroflow::operator::context::FINALIZER;
use ferroflow::operator::reconcile::remove_finalizer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, CustomResourceExt, ResourceExt};
use serde_json::json;

use crate::harness::{self, TestNamespace};

const CRD_ESTABLISHED: Duration = Duration::from_secs(30);
const ROLE: Role = Role {
    app: "owned-test",
    component: "config",
};

fn config_map(owner: &Experiment, name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: build::owned_meta(owner, name, ROLE),
        data: Some(BTreeMap::from([("value".to_owned(), value.to_owned())])),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn owned_objects_are_applied_idempotently_and_pruned_by_label() -> anyhow::Result<()> {
    let Some(cluster) =
        harness::connect("owned_objects_are_applied_idempotently_and_pruned_by_label").await?
    else {
        return Ok(());
    };
    harness::apply_crd(&cluster.client, &Experiment::crd(), CRD_ESTABLISHED).await?;

    cluster
        .in_namespace("ff-owned", |namespace: TestNamespace| async move {
            let client = &namespace.client;
            let experiments: Api<Experiment> = namespace.api();
            let owner: Experiment = serde_json::from_value(json!({
                "apiVersion": "ferroflow.dev/v1alpha1",
                "kind": "Experiment",
                "metadata": {"name": "churn"},
                "spec": {}
            }))?;
            let owner = experiments.create(&PostParams::default(), &owner).await?;
            let owner_uid = owner.uid().context("created owner has a uid")?;
            let config_maps: Api<ConfigMap> = namespace.api();

            let first = apply_owned(client, &owner, &config_map(&owner, "keep", "1"), &()).await?;
            let reference = first.owner_references();
            ensure!(
                reference.len() == 1
                    && reference[0].uid == owner_uid
                    && reference[0].controller == Some(true)
                    && reference[0].block_owner_deletion == Some(true),
                "owner reference: {reference:?}"
            );
            let labels = first.labels();
            ensure!(
                labels.get(build::LABEL_OWNER_UID) == Some(&owner_uid)
                    && labels.get(build::LABEL_MANAGED_BY).map(String::as_str)
                        == Some("ferroflow-operator"),
                "labels: {labels:?}"
            );
            let managers: Vec<_> = first
                .managed_fields()
                .iter()
                .filter_map(|entry| entry.manager.clone())
                .collect();
            ensure!(
                managers == ["ferroflow-operator"],
                "field managers: {managers:?}"
            );

            // The same object again is no change at all: the resourceVersion stays.
            let again = apply_owned(client, &owner, &config_map(&owner, "keep", "1"), &()).await?;
            ensure!(
                again.resource_version() == first.resource_version(),
                "re-applying changed the object: {:?} -> {:?}",
                first.resource_version(),
                again.resource_version()
            );

            // A dynamic object (the path optional kinds like HTTPRoute take), without types.
            let resource = ApiResource::erase::<ConfigMap>(&());
            let mut dynamic: DynamicObject =
                serde_json::from_value(serde_json::to_value(config_map(&owner, "stale", "2"))?)?;
            dynamic.types = None;
            apply_owned(client, &owner, &dynamic, &resource).await?;
            // Not ours: same labels copied by hand, but no owner reference.
            let mut foreign = config_map(&owner, "foreign", "3");
            foreign.metadata.owner_references = None;
            config_maps.create(&PostParams::default(), &foreign).await?;

            let desired = BTreeSet::from(["keep".to_owned()]);
            let deleted = prune_owned::<_, ConfigMap>(client, &owner, &desired, &()).await?;
            ensure!(deleted == ["stale"], "pruned {deleted:?}");
            let left: BTreeSet<String> = config_maps
                .list(&Default::default())
                .await?
                .into_iter()
                .map(|c| c.name_any())
                .filter(|name| name != "kube-root-ca.crt")
                .collect();
            ensure!(
                left == BTreeSet::from(["keep".to_owned(), "foreign".to_owned()]),
                "left after pruning: {left:?}"
            );
            let read = config_maps.get("keep").await?;
            ensure!(
                read.data == Some(BTreeMap::from([("value".to_owned(), "1".to_owned())])),
                "kept object: {:?}",
                read.data
            );
            // Nothing left to prune: a second pass deletes nothing.
            let deleted =
                prune_owned::<_, DynamicObject>(client, &owner, &desired, &resource).await?;
            ensure!(deleted.is_empty(), "second prune deleted {deleted:?}");
            Ok(())
        })
        .await
}

#[tokio::test]
async fn a_finalizer_no_longer_needed_is_released() -> anyhow::Result<()> {
    let Some(cluster) = harness::connect("a_finalizer_no_longer_needed_is_released").await? else {
        return Ok(());
    };
    cluster
        .in_namespace("ff-finalizer", |namespace: TestNamespace| async move {
            let config_maps: Api<ConfigMap> = namespace.api();
            let other = "e2e.ferroflow.dev/keep".to_owned();
            let mut held = ConfigMap::default();
            held.metadata.name = Some("held".to_owned());
            held.metadata.finalizers = Some(vec![FINALIZER.to_owned(), other.clone()]);
            let held = config_maps.create(&PostParams::default(), &held).await?;

            // A stale copy must not overwrite a concurrent change of the list.
            let mut changed = held.clone();
            changed.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
            config_maps
                .replace("held", &PostParams::default(), &changed)
                .await?;
            let stale = remove_finalizer(&config_maps, &held).await;
            ensure!(
                matches!(&stale, Err(kube::Error::Api(status)) if status.code == 409),
                "a stale object must conflict: {stale:?}"
            );

            // Deleted while held: our finalizer goes, and with it the object.
            config_maps.delete("held", &DeleteParams::default()).await?;
            let deleting = config_maps.get("held").await?;
            ensure!(
                deleting.metadata.deletion_timestamp.is_some(),
                "deletion waits for the finalizer"
            );
            ensure!(remove_finalizer(&config_maps, &deleting).await?, "removed");
            harness::wait_deleted(&config_maps, &deleting, Duration::from_secs(30)).await?;

            // Another controller's finalizer stays; a second call finds nothing to do.
            let mut shared = ConfigMap::default();
            shared.metadata.name = Some("shared".to_owned());
            shared.metadata.finalizers = Some(vec![FINALIZER.to_owned(), other.clone()]);
            let shared = config_maps.create(&PostParams::default(), &shared).await?;
            ensure!(remove_finalizer(&config_maps, &shared).await?, "removed");
            let read = config_maps.get("shared").await?;
            ensure!(
                read.finalizers() == [other.clone()],
                "finalizers left: {:?}",
                read.finalizers()
            );
            ensure!(
                !remove_finalizer(&config_maps, &read).await?,
                "nothing to remove"
            );
            // Let the namespace go.
            let mut released = read.clone();
            released.metadata.finalizers = None;
            config_maps
                .replace("shared", &PostParams::default(), &released)
                .await?;
            Ok(())
        })
        .await
}
