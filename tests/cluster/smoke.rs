//! Smoke tests: prove the e2e control plane gives the API semantics the
//! operator relies on (CRD schema + CEL admission, status subresource,
//! server-side apply, Deployment rollouts, Pod phases driven through kwok,
//! Jobs, garbage collection of dependents).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::harness::{self, FIELD_MANAGER, TestNamespace};

/// Annotation read by our kwok stages (e2e/cluster/kwok-stages.yaml) to end a
/// Running Pod as `Succeeded` or `Failed`.
const OUTCOME_ANNOTATION: &str = "e2e.ferroflow.dev/outcome";

/// Nothing pulls images on kwok nodes; this one cannot resolve by design.
const FAKE_IMAGE: &str = "registry.invalid/ferroflow-e2e/app:v1";

const CRD_ESTABLISHED: Duration = Duration::from_secs(30);
const PODS_SETTLE: Duration = Duration::from_secs(60);
const ROLLOUT: Duration = Duration::from_secs(90);
/// The garbage collector notices a brand-new CRD kind only at its next
/// discovery sync (every 30 s) and retries with backoff until then.
const GARBAGE_COLLECTION: Duration = Duration::from_secs(120);

const WIDGET_GROUP: &str = "smoke.e2e.ferroflow.dev";
const WIDGET_RULE_MESSAGE: &str = "minReplicas must not exceed maxReplicas";

fn widget_crd() -> anyhow::Result<CustomResourceDefinition> {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{WIDGET_GROUP}")},
        "spec": {
            "group": WIDGET_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["minReplicas", "maxReplicas"],
                            "properties": {
                                "minReplicas": {"type": "integer", "minimum": 0},
                                "maxReplicas": {"type": "integer", "minimum": 0}
                            },
                            "x-kubernetes-validations": [{
                                "rule": "self.minReplicas <= self.maxReplicas",
                                "message": WIDGET_RULE_MESSAGE
                            }]
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "observedGeneration": {"type": "integer"}
                            }
                        }
                    }
                }}
            }]
        }
    });
    serde_json::from_value(crd).context("widget CRD literal")
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(WIDGET_GROUP, "v1", "Widget"),
        "widgets",
    )
}

fn widget(name: &str, min_replicas: i64, max_replicas: i64) -> anyhow::Result<DynamicObject> {
    serde_json::from_value(json!({
        "apiVersion": format!("{WIDGET_GROUP}/v1"),
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    }))
    .context("widget literal")
}

fn phase_of(widget: &DynamicObject) -> Option<&str> {
    widget.data.get("status")?.get("phase")?.as_str()
}

fn owner_reference_to(owner: &DynamicObject) -> anyhow::Result<OwnerReference> {
    let types = owner
        .types
        .as_ref()
        .context("owner read without apiVersion/kind")?;
    Ok(OwnerReference {
        api_version: types.api_version.clone(),
        kind: types.kind.clone(),
        name: owner.name_any(),
        uid: owner.uid().context("owner without uid")?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

#[tokio::test]
async fn crd_cel_rule_status_subresource_and_garbage_collection() -> anyhow::Result<()> {
    let Some(cluster) =
        harness::connect("crd_cel_rule_status_subresource_and_garbage_collection").await?
    else {
        return Ok(());
    };
    harness::apply_crd(&cluster.client, &widget_crd()?, CRD_ESTABLISHED).await?;

    cluster
        .in_namespace("ff-smoke-crd", |namespace: TestNamespace| async move {
            let widgets: Api<DynamicObject> = Api::namespaced_with(
                namespace.client.clone(),
                &namespace.name,
                &widget_resource(),
            );

            // The CEL rule is enforced by the API server, with its message.
            let rejected = widgets
                .create(&PostParams::default(), &widget("inverted", 5, 1)?)
                .await;
            match rejected {
                Err(kube::Error::Api(status)) => {
                    ensure!(status.code == 422, "expected 422 Invalid, got {status:?}");
                    ensure!(
                        status.message.contains(WIDGET_RULE_MESSAGE),
                        "rejection does not carry the rule's message: {}",
                        status.message
                    );
                }
                other => {
                    anyhow::bail!("a widget violating the CEL rule was not rejected: {other:?}")
                }
            }

            // Server-side apply of spec, then of status through the subresource.
            let applied = widgets
                .patch(
                    "ok",
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(widget("ok", 1, 3)?),
                )
                .await
                .context("applying a valid widget")?;
            let generation = applied
                .metadata
                .generation
                .context("widget without generation")?;
            let status_patch = json!({
                "apiVersion": format!("{WIDGET_GROUP}/v1"),
                "kind": "Widget",
                "status": {"phase": "Ready", "observedGeneration": generation}
            });
            widgets
                .patch_status(
                    "ok",
                    &PatchParams::apply("ferroflow-e2e-status").force(),
                    &Patch::Apply(&status_patch),
                )
                .await
                .context("server-side apply of the widget status")?;
            let read_back = widgets.get("ok").await?;
            assert_eq!(phase_of(&read_back), Some("Ready"));
            assert_eq!(
                read_back.data["status"]["observedGeneration"].as_i64(),
                Some(generation)
            );

            // With a status subresource, status sent to the main resource is
            // dropped: the value applied above must survive.
            let mut with_status = widget("ok", 1, 3)?;
            with_status.data["status"] = json!({"phase": "Bogus"});
            widgets
                .patch(
                    "ok",
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(&with_status),
                )
                .await?;
            assert_eq!(phase_of(&widgets.get("ok").await?), Some("Ready"));

            // Deleting the owner widget garbage-collects what it owns.
            let config_maps = namespace.api::<ConfigMap>();
            let mut dependent = ConfigMap::default();
            dependent.metadata.name = Some("owned-by-widget".to_owned());
            dependent.metadata.owner_references = Some(vec![owner_reference_to(&read_back)?]);
            dependent.data = Some(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
            let dependent = config_maps
                .create(&PostParams::default(), &dependent)
                .await?;
            widgets.delete("ok", &DeleteParams::background()).await?;
            harness::wait_deleted(&config_maps, &dependent, GARBAGE_COLLECTION)
                .await
                .context("the widget's ConfigMap was not garbage-collected")?;
            Ok(())
        })
        .await
}

fn deployment(name: &str, replicas: i32, version: &str) -> anyhow::Result<Deployment> {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            // Small surge so the rollout visibly runs old and new side by side.
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"e2e.ferroflow.dev/version": version}},
                "spec": {"containers": [{"name": "app", "image": FAKE_IMAGE}]}
            }
        }
    }))
    .context("deployment literal")
}

async fn replica_sets_of(namespace: &TestNamespace, app: &str) -> anyhow::Result<Vec<ReplicaSet>> {
    Ok(namespace
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items)
}

#[tokio::test]
async fn deployment_rollout_and_cascading_delete() -> anyhow::Result<()> {
    let Some(cluster) = harness::connect("deployment_rollout_and_cascading_delete").await? else {
        return Ok(());
    };
    cluster
        .in_namespace("ff-smoke-deploy", |namespace: TestNamespace| async move {
            let deployments = namespace.api::<Deployment>();
            let apply = PatchParams::apply(FIELD_MANAGER);
            deployments
                .patch("web", &apply, &Patch::Apply(deployment("web", 2, "1")?))
                .await?;
            let first = harness::wait_for(
                &deployments,
                "web",
                harness::rollout_complete(),
                ROLLOUT,
                "2 replicas are ready",
            )
            .await?
            .context("deployment vanished")?;
            assert_eq!(
                first.status.as_ref().and_then(|s| s.ready_replicas),
                Some(2)
            );
            let first_sets = replica_sets_of(&namespace, "web").await?;
            assert_eq!(
                first_sets.len(),
                1,
                "one ReplicaSet before the template changes"
            );
            let first_set_name = first_sets[0].name_any();

            // A new Pod template means a new ReplicaSet; the rollout moves all
            // replicas to it and scales the old one to zero.
            deployments
                .patch("web", &apply, &Patch::Apply(deployment("web", 2, "2")?))
                .await?;
            harness::wait_for(
                &deployments,
                "web",
                harness::rollout_complete(),
                ROLLOUT,
                "the new template is rolled out",
            )
            .await?;
            let sets = replica_sets_of(&namespace, "web").await?;
            assert_eq!(
                sets.len(),
                2,
                "old and new ReplicaSet after the template change"
            );
            for set in &sets {
                let replicas = set.spec.as_ref().and_then(|spec| spec.replicas);
                let ready = set
                    .status
                    .as_ref()
                    .and_then(|status| status.ready_replicas)
                    .unwrap_or(0);
                if set.name_any() == first_set_name {
                    assert_eq!(replicas, Some(0), "old ReplicaSet scaled to zero");
                } else {
                    assert_eq!(
                        (replicas, ready),
                        (Some(2), 2),
                        "new ReplicaSet has 2 ready Pods"
                    );
                }
            }

            // Deleting the Deployment garbage-collects its ReplicaSets and Pods
            // (kwok plays the kubelet that confirms Pod deletion).
            let pods = namespace
                .api::<Pod>()
                .list(&ListParams::default().labels("app=web"))
                .await?;
            ensure!(
                pods.items.len() == 2,
                "expected 2 Pods, found {}",
                pods.items.len()
            );
            deployments
                .delete("web", &DeleteParams::background())
                .await?;
            for set in &sets {
                harness::wait_deleted(&namespace.api::<ReplicaSet>(), set, PODS_SETTLE).await?;
            }
            for pod in &pods.items {
                harness::wait_deleted(&namespace.api::<Pod>(), pod, PODS_SETTLE).await?;
            }
            Ok(())
        })
        .await
}

fn one_shot_pod(name: &str, outcome: Option<&str>) -> anyhow::Result<Pod> {
    let annotations: BTreeMap<&str, &str> = outcome
        .map(|outcome| (OUTCOME_ANNOTATION, outcome))
        .into_iter()
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": FAKE_IMAGE}]
        }
    }))
    .context("pod literal")
}

#[tokio::test]
async fn one_shot_pods_and_jobs_reach_their_outcome() -> anyhow::Result<()> {
    let Some(cluster) = harness::connect("one_shot_pods_and_jobs_reach_their_outcome").await?
    else {
        return Ok(());
    };
    cluster
        .in_namespace("ff-smoke-pods", |namespace: TestNamespace| async move {
            let pods = namespace.api::<Pod>();
            let create = PostParams::default();
            pods.create(&create, &one_shot_pod("succeeds", Some("Succeeded"))?)
                .await?;
            pods.create(&create, &one_shot_pod("fails", Some("Failed"))?)
                .await?;
            pods.create(&create, &one_shot_pod("decided-later", None)?)
                .await?;

            harness::wait_for(
                &pods,
                "succeeds",
                harness::pod_in_phase("Succeeded"),
                PODS_SETTLE,
                "Succeeded",
            )
            .await?;
            let failed = harness::wait_for(
                &pods,
                "fails",
                harness::pod_in_phase("Failed"),
                PODS_SETTLE,
                "Failed",
            )
            .await?
            .context("pod vanished")?;
            let exit_code = failed
                .status
                .and_then(|status| status.container_statuses)
                .and_then(|statuses| statuses.into_iter().next())
                .and_then(|status| status.state)
                .and_then(|state| state.terminated)
                .map(|terminated| terminated.exit_code);
            assert_eq!(
                exit_code,
                Some(1),
                "a failed Pod's container exits non-zero"
            );

            // Without the annotation a bare Pod keeps running; setting it later
            // ends the Pod the way the annotation says.
            harness::wait_for(
                &pods,
                "decided-later",
                harness::pod_running_and_ready(),
                PODS_SETTLE,
                "Running and Ready",
            )
            .await?;
            pods.patch(
                "decided-later",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {OUTCOME_ANNOTATION: "Failed"}}})),
            )
            .await?;
            harness::wait_for(
                &pods,
                "decided-later",
                harness::pod_in_phase("Failed"),
                PODS_SETTLE,
                "Failed",
            )
            .await?;

            // A Job's Pod without the annotation completes, and so does the Job.
            let jobs = namespace.api::<Job>();
            let job: Job = serde_json::from_value(json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "train"},
                "spec": {
                    "backoffLimit": 0,
                    "template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": FAKE_IMAGE}]
                    }}
                }
            }))?;
            jobs.create(&create, &job).await?;
            harness::wait_for(
                &jobs,
                "train",
                conditions::is_job_completed(),
                PODS_SETTLE,
                "it completes",
            )
            .await?;
            Ok(())
        })
        .await
}
