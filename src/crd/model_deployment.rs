//! `ModelDeployment`: serving Deployments that follow a registry alias. The operator resolves
//! `alias` (or each `traffic` leg's alias) to a version, hands the Pods that concrete version,
//! and rolls out again when the alias moves. Only the Pod settings serving needs are here
//! (no embedded PodSpec), which keeps the CRD small enough for client-side `kubectl apply`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ReconcileState;
use super::model_version::ModelRef;

/// The leg name of a deployment pinned to `spec.version` (alias legs are named by their alias).
pub const PINNED_LEG: &str = "pinned";

/// Serves a registered model with MLflow's scoring server, following an alias.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ferroflow.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "mldeploy",
    category = "ferroflow",
    printcolumn = r#"{"name":"MODEL","type":"string","jsonPath":".status.modelName"}"#,
    printcolumn = r#"{"name":"ALIAS","type":"string","jsonPath":".spec.alias"}"#,
    printcolumn = r#"{"name":"VERSION","type":"integer","description":"the version serving (the last whose rollout completed)","jsonPath":".status.servingVersion"}"#,
    printcolumn = r#"{"name":"READY","type":"integer","description":"ready replicas over every traffic leg","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"STATUS","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.modelRef) != has(self.modelName)").message("set exactly one of modelRef (a RegisteredModel resource) or modelName (a model only in the registry)"),
    validation = Rule::new("(has(self.alias) ? 1 : 0) + (has(self.version) ? 1 : 0) + (has(self.traffic) ? 1 : 0) == 1").message("set exactly one of alias, version or traffic"),
    validation = Rule::new("!has(self.traffic) || self.replicas >= size(self.traffic)").message("replicas must be at least the number of traffic legs: every leg runs at least one replica")
)]
pub struct ModelDeploymentSpec {
    /// The RegisteredModel resource (same namespace) whose model is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<ModelRef>,
    /// The registered model's name in MLflow, for a model without a RegisteredModel resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model_name: Option<String>,
    /// Serve the version this alias points at (e.g. `champion`), and roll out again whenever it
    /// moves, in git or through the REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = alias_rule())]
    #[schemars(length(min = 1, max = 40))]
    pub alias: Option<String>,
    /// Serve this version number, never another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<i64>,
    /// Split traffic between aliases (what others call canary or experiment): one Deployment
    /// per leg with replicas in proportion to the weights (at least one each), a Service over
    /// every leg, a Service per leg, and an HTTPRoute with the exact weights where the Gateway
    /// API is installed. Promoting the challenger is moving an alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["alias"]))]
    #[x_kube(validation = Rule::new("self.map(leg, leg.weight).sum() == 100").message("traffic weights are percentages and must add up to 100"))]
    pub traffic: Option<Vec<TrafficLeg>>,
    /// Pods over every traffic leg.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// The serving runtime image; defaults to the operator's (MLflow with its scoring server).
    /// A user's image must serve the model in `/model` on `port`, answering `/ping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Replaces the whole default command
    /// (`mlflow models serve -m /model --env-manager local -h 0.0.0.0 -p PORT -w WORKERS -t TIMEOUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments appended to the command (e.g. extra `mlflow models serve` flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The port the runtime listens on and the Services expose.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The serving container's requests and limits; the CPU limit (else request) sets the
    /// default number of workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Environment variables of the serving container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// ConfigMaps and Secrets whose keys become environment variables of the serving container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,
    /// The Pods' service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Schedules the Pods onto nodes with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The Pods' tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// The Pods' affinity and anti-affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Secrets for pulling the images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Extra labels on the Pods (the operator's own labels win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Extra annotations on the Pods (the operator's own annotations win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Seconds the scoring server gives one request (`mlflow models serve -t`).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Scoring server workers per Pod (`-w`); defaults to the CPU limit (else request) rounded
    /// up, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: Option<i32>,
    /// Seconds a rollout may go without progress before it counts as failed and is rolled back
    /// to the version serving before.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 30, max = 86400))]
    pub progress_deadline_seconds: i32,
    /// While true the operator changes nothing: the running Deployments stay as they are, even
    /// when an alias moves.
    #[serde(default)]
    pub suspend: bool,
    /// The Gateway the HTTPRoute attaches to (its `parentRefs`), where the Gateway API is
    /// installed; defaults to the operator's `--gateway`. Without either the route attaches to
    /// no Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
}

/// A Gateway (`gateway.networking.k8s.io`), as an HTTPRoute's `parentRefs` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The Gateway's namespace; defaults to the ModelDeployment's (another one must allow
    /// routes from it in its listeners' `allowedRoutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// The Gateway listener to attach to; all of them when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

impl std::str::FromStr for GatewayRef {
    type Err = String;

    /// `[NAMESPACE/]NAME`, as the operator's `--gateway` takes it.
    fn from_str(value: &str) -> Result<Self, String> {
        let (namespace, name) = match value.split_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, value),
        };
        let label = |part: &str| {
            !part.is_empty()
                && part.len() <= 253
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        if !label(name) || namespace.is_some_and(|namespace| !label(namespace)) {
            return Err(format!(
                "{value:?} is not a Gateway: expected NAME or NAMESPACE/NAME (lowercase)"
            ));
        }
        Ok(GatewayRef {
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
            section_name: None,
        })
    }
}

/// One traffic leg: the version an alias points at, with its share of the requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct TrafficLeg {
    /// The alias this leg follows (e.g. `champion`, `challenger`). It names the leg's
    /// Deployment and Service (`<name>-<alias>`), so it must be a lowercase DNS label.
    #[schemars(length(min = 1, max = 40))]
    #[x_kube(validation = alias_rule())]
    pub alias: String,
    /// Percent of the requests this leg receives; the legs' weights add up to 100.
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,
}

fn alias_rule() -> kube::core::Rule {
    kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message(
        "a served alias must be a lowercase DNS label (it names the Deployment and Service)",
    )
}

fn default_replicas() -> i32 {
    1
}

fn default_port() -> i32 {
    8080
}

fn default_timeout_seconds() -> i32 {
    60
}

fn default_progress_deadline_seconds() -> i32 {
    600
}

/// What the operator resolved and what serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The registered model's name in MLflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// The version the alias (the first traffic leg's alias) points at now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<i64>,
    /// The last version whose rollout completed (the first traffic leg's); a failed rollout
    /// is rolled back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_version: Option<i64>,
    /// The model URI the Pods download (`models:/NAME/VERSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_uri: Option<String>,
    /// Desired Pods over every leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready Pods over every leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Pods on the current Pod template over every leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// One entry per traffic leg (one in all for `alias` or `version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<LegStatus>,
    /// Where the model answers inside the cluster: the Service over every leg
    /// (`http://NAME.NAMESPACE.svc:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(flatten)]
    pub state: ReconcileState,
}

/// One traffic leg as it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegStatus {
    /// The leg's alias, or `pinned` for `spec.version`.
    pub name: String,
    /// The leg's Deployment.
    pub deployment: String,
    /// The leg's share of the requests, in percent.
    pub weight: i32,
    /// The version the leg's alias points at now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<i64>,
    /// The last version whose rollout completed on this leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_version: Option<i64>,
    /// A version whose rollout failed and was rolled back: not tried again until the alias
    /// moves or the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_version: Option<i64>,
    /// Why `failedVersion` was rolled back (the Deployment controller's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Desired Pods of the leg.
    #[serde(default)]
    pub replicas: i32,
    /// Ready Pods of the leg.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods of the leg on its current Pod template.
    #[serde(default)]
    pub updated_replicas: i32,
}

/// What a leg follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Alias(&'a str),
    Version(i64),
}

/// One traffic leg as the spec asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg<'a> {
    /// The alias, or [`PINNED_LEG`]: names the leg's objects.
    pub name: &'a str,
    pub target: Target<'a>,
    /// Percent of the requests.
    pub weight: i32,
}

impl ModelDeploymentSpec {
    /// The legs the spec asks for, in spec order: `traffic`'s, else one leg with all traffic.
    /// Empty only for a spec the schema refuses (neither alias, version nor traffic).
    pub fn legs(&self) -> Vec<Leg<'_>> {
        if let Some(traffic) = &self.traffic {
            return traffic
                .iter()
                .map(|leg| Leg {
                    name: &leg.alias,
                    target: Target::Alias(&leg.alias),
                    weight: leg.weight,
                })
                .collect();
        }
        let single = match (&self.alias, self.version) {
            (Some(alias), _) => Leg {
                name: alias,
                target: Target::Alias(alias),
                weight: 100,
            },
            (None, Some(version)) => Leg {
                name: PINNED_LEG,
                target: Target::Version(version),
                weight: 100,
            },
            (None, None) => return Vec::new(),
        };
        vec![single]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    /// `kubectl apply` without `--server-side` stores the whole object in an annotation of at
    /// most 256 KiB; the CRD itself must fit, with room to spare.
    #[test]
    fn crd_fits_client_side_apply() {
        let json = serde_json::to_string(&ModelDeployment::crd()).unwrap();
        assert!(json.len() < 262_144 / 2, "CRD is {} bytes", json.len());
    }

    #[test]
    fn schema_has_defaults_rules_and_documented_traffic() {
        let crd = serde_json::to_value(ModelDeployment::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["replicas"]["default"], 1);
        assert_eq!(spec["properties"]["port"]["default"], 8080);
        assert_eq!(spec["properties"]["timeoutSeconds"]["default"], 60);
        let traffic = &spec["properties"]["traffic"];
        assert_eq!(traffic["x-kubernetes-list-type"], "map");
        assert_eq!(traffic["x-kubernetes-list-map-keys"][0], "alias");
        assert!(
            traffic["description"]
                .as_str()
                .unwrap()
                .starts_with("Split traffic between aliases")
        );
        assert!(
            traffic["items"]["properties"]["weight"]["description"]
                .as_str()
                .unwrap()
                .contains("Percent")
        );
        let rules: Vec<&str> = spec["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["rule"].as_str().unwrap())
            .collect();
        assert_eq!(rules.len(), 3, "{rules:?}");
        let names = &crd["spec"]["names"];
        assert_eq!(names["shortNames"][0], "mldeploy");
        assert_eq!(names["kind"], "ModelDeployment");
    }

    fn spec(yaml: &str) -> ModelDeploymentSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_gateway_is_named_with_or_without_its_namespace() {
        assert_eq!(
            "gateways/models".parse::<GatewayRef>(),
            Ok(GatewayRef {
                name: "models".to_owned(),
                namespace: Some("gateways".to_owned()),
                section_name: None,
            })
        );
        assert_eq!(
            "models"
                .parse::<GatewayRef>()
                .map(|g| (g.name, g.namespace)),
            Ok(("models".to_owned(), None))
        );
        for bad in ["", "/models", "gateways/", "Models", "a/b/c"] {
            assert!(bad.parse::<GatewayRef>().is_err(), "{bad:?}");
        }
        let gateway = spec(
            "modelName: churn\nalias: champion\ngateway: {name: models, sectionName: https}\n",
        )
        .gateway;
        assert_eq!(
            gateway.and_then(|g| g.section_name).as_deref(),
            Some("https")
        );
    }

    #[test]
    fn legs_follow_alias_version_or_traffic() {
        let alias = spec("modelName: churn\nalias: champion\n");
        assert_eq!(
            alias.legs(),
            vec![Leg {
                name: "champion",
                target: Target::Alias("champion"),
                weight: 100
            }]
        );
        assert_eq!(alias.replicas, 1);
        assert_eq!(alias.port, 8080);
        let pinned = spec("modelName: churn\nversion: 4\n");
        assert_eq!(
            pinned.legs(),
            vec![Leg {
                name: PINNED_LEG,
                target: Target::Version(4),
                weight: 100
            }]
        );
        let split = spec(
            "modelName: churn\nreplicas: 10\ntraffic:\n- {alias: champion, weight: 90}\n- {alias: challenger, weight: 10}\n",
        );
        let legs = split.legs();
        assert_eq!(legs.len(), 2);
        assert_eq!(legs[1].target, Target::Alias("challenger"));
        assert_eq!(legs[1].weight, 10);
    }
}
