//! Pure builders: a resource plus what was resolved from the store in, the Kubernetes objects
//! it owns out. No client, no store, no clock here: the same input gives the same objects, so
//! builders are unit-tested against whole expected objects (see `operator::test_support`).
//!
//! This module holds what every builder shares: the labels that mark an object as owned and
//! the owner reference that lets the garbage collector remove it with its owner.

pub mod project_run;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::context::FIELD_MANAGER;
use crate::client::TOKEN_FILE_ENV;

pub mod model_deployment;

/// The volume of a Pod's service-account token for the tracking server, which
/// `ferroflow server --auth kubernetes` reviews (a server without auth ignores it). A projected
/// token, mounted only in the containers that call the tracking server: the Pod's API token
/// stays as the resource sets it.
const TRACKING_TOKEN_VOLUME: &str = "tracking-token";
const TRACKING_TOKEN_DIR: &str = "/var/run/secrets/ferroflow/tracking";
const TRACKING_TOKEN_FILE: &str = "token";

/// The projected token volume; the kubelet renews the file before `expiration_seconds` pass
/// (at least 600, the shortest lifetime the API server grants).
pub fn tracking_token_volume(expiration_seconds: i64) -> Volume {
    Volume {
        name: TRACKING_TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: TRACKING_TOKEN_FILE.to_owned(),
                    expiration_seconds: Some(expiration_seconds),
                    audience: None,
                }),
                ..VolumeProjection::default()
            }]),
            default_mode: None,
        }),
        ..Volume::default()
    }
}

/// The token volume's mount, read-only.
pub fn tracking_token_mount() -> VolumeMount {
    VolumeMount {
        name: TRACKING_TOKEN_VOLUME.to_owned(),
        mount_path: TRACKING_TOKEN_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Tells ferroflow's client in the container where the token is (`FERROFLOW_TRACKING_TOKEN_FILE`).
pub fn tracking_token_env() -> EnvVar {
    EnvVar {
        name: TOKEN_FILE_ENV.to_owned(),
        value: Some(format!("{TRACKING_TOKEN_DIR}/{TRACKING_TOKEN_FILE}")),
        value_from: None,
    }
}

/// `app.kubernetes.io/name`: the application the object runs (e.g. `mlflow-serving`).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the owning resource's name, which tells instances apart.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: the object's role (e.g. `server`, `run`).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/part-of`: always [`PART_OF`].
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/managed-by`: always the operator's field manager.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The kind of the ferroflow resource that owns the object.
pub const LABEL_OWNER_KIND: &str = "ferroflow.dev/owner-kind";
/// The name of the owning resource (cut to a label value's 63 characters; for people).
pub const LABEL_OWNER_NAME: &str = "ferroflow.dev/owner-name";
/// The uid of the owning resource: names can be longer than a label value and are reused
/// after a delete, uids are neither, so the operator finds what it owns by this one.
pub const LABEL_OWNER_UID: &str = "ferroflow.dev/owner-uid";
/// Value of `app.kubernetes.io/part-of`.
pub const PART_OF: &str = "ferroflow";

/// Longest label value Kubernetes accepts.
const LABEL_VALUE_MAX: usize = 63;

/// What an owned object is, for its `app.kubernetes.io/{name,component}` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// `app.kubernetes.io/name`.
    pub app: &'static str,
    /// `app.kubernetes.io/component`.
    pub component: &'static str,
}

/// The labels that select every object `owner` owns, whatever its role: the operator lists
/// owned objects with exactly these to find the ones no longer desired.
pub fn selector_labels<K: Resource<DynamicType = ()>>(owner: &K) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
        (LABEL_OWNER_KIND.to_owned(), K::kind(&()).into_owned()),
        (
            LABEL_OWNER_UID.to_owned(),
            owner.uid().unwrap_or_default().to_owned(),
        ),
    ])
}

/// The same labels as a label selector string (`key=value,…`).
pub fn selector<K: Resource<DynamicType = ()>>(owner: &K) -> String {
    selector_labels(owner)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every label an owned object carries: the standard `app.kubernetes.io/*` set and the
/// `ferroflow.dev/owner-*` labels.
pub fn labels<K: Resource<DynamicType = ()>>(owner: &K, role: Role) -> BTreeMap<String, String> {
    let name = label_value(&owner.name_any());
    let mut labels = selector_labels(owner);
    labels.extend([
        (LABEL_NAME.to_owned(), role.app.to_owned()),
        (LABEL_INSTANCE.to_owned(), name.clone()),
        (LABEL_COMPONENT.to_owned(), role.component.to_owned()),
        (LABEL_PART_OF.to_owned(), PART_OF.to_owned()),
        (LABEL_OWNER_NAME.to_owned(), name),
    ]);
    labels
}

/// The reference that makes `owner` the controller of an object: the garbage collector
/// deletes the object with its owner, and with `blockOwnerDeletion` a foreground deletion of
/// the owner waits for it. `None` for an owner without a uid (not read from the API server).
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone()?,
        uid: owner.meta().uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Metadata for an object named `name` that `owner` owns: its namespace, the labels and the
/// owner reference.
pub fn owned_meta<K: Resource<DynamicType = ()>>(owner: &K, name: &str, role: Role) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: owner.namespace(),
        labels: Some(labels(owner, role)),
        owner_references: owner_reference(owner).map(|reference| vec![reference]),
        ..ObjectMeta::default()
    }
}

/// `value` cut to a valid label value: at most 63 characters, starting and ending with an
/// alphanumeric. Object names only hold label-safe characters, so cutting is enough.
fn label_value(value: &str) -> String {
    let cut: String = value.chars().take(LABEL_VALUE_MAX).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Experiment;
    use crate::operator::test_support::from_yaml;
    use serde_json::json;

    const ROLE: Role = Role {
        app: "mlflow-serving",
        component: "server",
    };

    fn owner(name: &str) -> Experiment {
        from_yaml(&format!(
            "
apiVersion: ferroflow.dev/v1alpha1
kind: Experiment
metadata:
  name: {name}
  namespace: team-a
  uid: 7b0c1a52-0c2f-4f57-9d2c-5c1f9f3b6a10
spec: {{}}
"
        ))
    }

    #[test]
    fn owned_meta_carries_labels_and_controller_reference() {
        let meta = owned_meta(&owner("churn"), "churn-server", ROLE);
        assert_eq!(
            serde_json::to_value(&meta).unwrap(),
            json!({
                "name": "churn-server",
                "namespace": "team-a",
                "labels": {
                    "app.kubernetes.io/component": "server",
                    "app.kubernetes.io/instance": "churn",
                    "app.kubernetes.io/managed-by": "ferroflow-operator",
                    "app.kubernetes.io/name": "mlflow-serving",
                    "app.kubernetes.io/part-of": "ferroflow",
                    "ferroflow.dev/owner-kind": "Experiment",
                    "ferroflow.dev/owner-name": "churn",
                    "ferroflow.dev/owner-uid": "7b0c1a52-0c2f-4f57-9d2c-5c1f9f3b6a10",
                },
                "ownerReferences": [{
                    "apiVersion": "ferroflow.dev/v1alpha1",
                    "kind": "Experiment",
                    "name": "churn",
                    "uid": "7b0c1a52-0c2f-4f57-9d2c-5c1f9f3b6a10",
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            })
        );
    }

    #[test]
    fn selector_names_the_owner_by_kind_and_uid() {
        assert_eq!(
            selector(&owner("churn")),
            "app.kubernetes.io/managed-by=ferroflow-operator,\
             ferroflow.dev/owner-kind=Experiment,\
             ferroflow.dev/owner-uid=7b0c1a52-0c2f-4f57-9d2c-5c1f9f3b6a10"
        );
    }

    #[test]
    fn long_owner_names_are_cut_to_valid_label_values() {
        let name = format!("{}-x", "a".repeat(62));
        let labels = labels(&owner(&name), ROLE);
        assert_eq!(labels[LABEL_OWNER_NAME], "a".repeat(62));
        assert_eq!(labels[LABEL_INSTANCE], "a".repeat(62));
    }
}
