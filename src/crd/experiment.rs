//! `Experiment`: an MLflow experiment declared in git. The operator creates it, or adopts the
//! one with the same name, and keeps its description and tags as the spec says.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{DeletionPolicy, ReconcileState};

/// An MLflow experiment. Training code logs runs into it by name.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ferroflow.dev",
    version = "v1alpha1",
    kind = "Experiment",
    namespaced,
    status = "ExperimentStatus",
    shortname = "mlexp",
    category = "ferroflow",
    printcolumn = r#"{"name":"EXPERIMENT","type":"string","jsonPath":".status.experimentName"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.experimentId"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"REASON","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.experimentName) == has(oldSelf.experimentName) && (!has(self.experimentName) || self.experimentName == oldSelf.experimentName)").message("experimentName is immutable: create a new Experiment resource instead"),
    validation = Rule::new("has(self.artifactLocation) == has(oldSelf.artifactLocation) && (!has(self.artifactLocation) || self.artifactLocation == oldSelf.artifactLocation)").message("artifactLocation is immutable: MLflow cannot move an experiment's artifacts")
)]
pub struct ExperimentSpec {
    /// The MLflow experiment name; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 500))]
    pub experiment_name: Option<String>,
    /// Shown in MLflow's UI (the `mlflow.note.content` tag). Owned by this resource when set.
    /// While the resource exists the REST API can neither rename nor delete the experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where runs of a new experiment store artifacts (e.g. `s3://bucket/prefix`); defaults to
    /// the server's artifact root. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub artifact_location: Option<String>,
    /// Experiment tags set from git; the REST API cannot change them. Removing a key here
    /// removes the tag; tags the resource never listed (e.g. set by training code) stay
    /// writable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `Retain` (default) keeps the experiment when the resource is deleted; `Delete`
    /// soft-deletes it (restorable from MLflow).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What the operator found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// The MLflow experiment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// The MLflow experiment name in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_name: Option<String>,
    /// `active` or `deleted`, as MLflow reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<String>,
    #[serde(flatten)]
    pub state: ReconcileState,
}

impl Experiment {
    /// The MLflow experiment name this resource declares.
    pub fn experiment_name(&self) -> &str {
        self.spec
            .experiment_name
            .as_deref()
            .unwrap_or_else(|| self.metadata.name.as_deref().unwrap_or_default())
    }
}
