//! `RegisteredModel`: a model in MLflow's registry declared in git. `spec.aliases` is the
//! truth for the model's aliases: moving `champion: 3` to `champion: 4` is a one-line change.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{DeletionPolicy, ReconcileState};

/// A registered model. Versions are declared by ModelVersion resources or registered by
/// training code; this resource owns the model's description, tags and aliases.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ferroflow.dev",
    version = "v1alpha1",
    kind = "RegisteredModel",
    namespaced,
    status = "RegisteredModelStatus",
    shortname = "mlmodel",
    category = "ferroflow",
    printcolumn = r#"{"name":"MODEL","type":"string","jsonPath":".status.modelName"}"#,
    printcolumn = r#"{"name":"LATEST","type":"integer","jsonPath":".status.latestVersion"}"#,
    printcolumn = r#"{"name":"ALIASES","type":"string","jsonPath":".status.aliases"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"REASON","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.modelName) == has(oldSelf.modelName) && (!has(self.modelName) || self.modelName == oldSelf.modelName)").message("modelName is immutable: create a new RegisteredModel resource instead")
)]
pub struct RegisteredModelSpec {
    /// The registered model's name in MLflow; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("!self.contains('/') && !self.contains(':') && self != '.' && self != '..'").message("modelName cannot contain '/' or ':' and cannot be '.' or '..'"))]
    pub model_name: Option<String>,
    /// The model's description. Owned by this resource when set: the REST API cannot change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The model's tags. When set, this is the whole tag set: tags missing here are removed,
    /// and the REST API cannot change tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 100))]
    pub tags: Option<BTreeMap<String, String>>,
    /// Alias → version number (e.g. `champion: 3`). When set, this is the whole alias set:
    /// aliases missing here are removed, and the REST API cannot move aliases. An alias naming
    /// a version that does not exist leaves the resource `Ready=False` (VersionNotFound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(
        validation = Rule::new("self.all(alias, alias.size() <= 255 && alias.matches('^[\\\\p{L}\\\\p{N}_-]+$'))").message("alias names may only contain letters, digits, '_' and '-' (at most 255)"),
        validation = Rule::new("self.all(alias, alias.lowerAscii() != 'latest' && !alias.matches('^[vV][0-9]+$'))").message("'latest' and 'v<number>' are reserved alias names"),
        validation = Rule::new("self.all(alias, self[alias] >= 1)").message("alias versions are numbers from 1")
    )]
    pub aliases: Option<BTreeMap<String, i64>>,
    /// `Retain` (default) keeps the model when the resource is deleted; `Delete` deletes the
    /// model and its versions from the registry.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What the operator found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredModelStatus {
    /// The registered model's name in MLflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// The highest live version number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<i64>,
    /// Aliases as the store has them now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, i64>,
    /// The last promotions of each alias from the promotion history (at most
    /// [`PROMOTIONS_PER_ALIAS`] each, newest first), whatever moved it: the `mlflow` client,
    /// this resource, `ferroflow rollback`; refusals included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub promotions: BTreeMap<String, Vec<PromotionRecord>>,
    /// The newest history entry already reported as an Event: each entry gets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promotion_id: Option<i64>,
    #[serde(flatten)]
    pub state: ReconcileState,
}

/// How many promotions of each alias the status keeps.
pub const PROMOTIONS_PER_ALIAS: i64 = 5;

/// One entry of the promotion history (`GET /api/2.0/ferroflow/promotions` has them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRecord {
    /// The history entry's id.
    pub id: i64,
    pub time: Time,
    /// The version that held the alias before (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<i64>,
    /// The version it points at afterwards, or would have (unset: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<i64>,
    /// The authenticated user, `anonymous`, or the resource `namespace/Kind/name`.
    pub actor: String,
    /// `api` or `operator`.
    pub path: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// The promotion policies' rules that failed, each with what was seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_rules: Vec<String>,
}

impl RegisteredModel {
    /// The MLflow model name this resource declares.
    pub fn model_name(&self) -> &str {
        self.spec
            .model_name
            .as_deref()
            .unwrap_or_else(|| self.metadata.name.as_deref().unwrap_or_default())
    }
}
