//! `ModelVersion`: one version of a registered model declared in git, either adopted (a version
//! training code registered) or registered from `source` exactly once. `stage:` is promoted by
//! editing the manifest.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DeletionPolicy, ReconcileState};

/// A version of a registered model.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ferroflow.dev",
    version = "v1alpha1",
    kind = "ModelVersion",
    namespaced,
    status = "ModelVersionStatus",
    shortname = "mlmv",
    category = "ferroflow",
    printcolumn = r#"{"name":"MODEL","type":"string","jsonPath":".status.modelName"}"#,
    printcolumn = r#"{"name":"VERSION","type":"integer","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"STAGE","type":"string","jsonPath":".status.stage"}"#,
    printcolumn = r#"{"name":"ALIASES","type":"string","jsonPath":".status.aliases"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"REASON","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.version) != has(self.source)").message("set exactly one of version (adopt a registered version) or source (register a new version)"),
    validation = Rule::new("!has(self.runId) || has(self.source)").message("runId goes with source: an adopted version keeps the run it was registered from"),
    validation = Rule::new("self.modelRef == oldSelf.modelRef").message("modelRef is immutable: create a new ModelVersion resource instead"),
    validation = Rule::new("has(self.version) == has(oldSelf.version) && (!has(self.version) || self.version == oldSelf.version)").message("version is immutable: create a new ModelVersion resource instead"),
    validation = Rule::new("has(self.source) == has(oldSelf.source) && (!has(self.source) || self.source == oldSelf.source)").message("source is immutable: a registered version's files never change; create a new ModelVersion resource instead"),
    validation = Rule::new("has(self.runId) == has(oldSelf.runId) && (!has(self.runId) || self.runId == oldSelf.runId)").message("runId is immutable")
)]
pub struct ModelVersionSpec {
    /// The RegisteredModel resource (same namespace) this is a version of.
    pub model_ref: ModelRef,
    /// Adopt this existing version number (registered by training code). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<i64>,
    /// Register a new version from these files (e.g. `runs:/<run id>/model`,
    /// `models:/m-<id>`, `s3://…`); registered exactly once. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub source: Option<String>,
    /// The run the files come from, for lineage (with `source` only). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub run_id: Option<String>,
    /// The stage this version should be in. Owned by this resource when set: the REST API
    /// cannot transition it. Left as the store has it when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// When moving into Staging or Production, archive the model's other versions in that stage.
    #[serde(default)]
    pub archive_existing_versions: bool,
    /// The version's description. Owned by this resource when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The version's tags. When set, this is the whole tag set and the REST API cannot change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 100))]
    pub tags: Option<BTreeMap<String, String>>,
    /// `Retain` (default) keeps the version when the resource is deleted; `Delete` deletes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Names a RegisteredModel resource in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelRef {
    /// `metadata.name` of the RegisteredModel resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// MLflow's model version stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Stage {
    None,
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }
}

/// What the operator found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionStatus {
    /// The registered model's name in MLflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// The version number in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The stage the store reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// When the operator last moved the version to another stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_changed_time: Option<Time>,
    /// Aliases pointing at this version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The run the version was registered from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where serving fetches the files (what MLflow's get-download-uri answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_uri: Option<String>,
    #[serde(flatten)]
    pub state: ReconcileState,
}
