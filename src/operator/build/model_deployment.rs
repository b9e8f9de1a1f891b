//! The objects a `ModelDeployment` owns, built from the resource, the version each traffic leg
//! should run and the operator's serving settings: per leg a Deployment (an init container
//! downloads `models:/NAME/VERSION` once into an `emptyDir`, MLflow's scoring server serves
//! it), a Service over every leg, a Service per leg when there are several, and an HTTPRoute
//! with the exact weights when the Gateway API is installed. Pure: the reconciler applies them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, TypeMeta};
use serde_json::json;

use super::{
    Role, labels, owned_meta, owner_reference, tracking_token_env, tracking_token_mount,
    tracking_token_volume,
};
use crate::client::WORKSPACE_ENV;
use crate::crd::ModelDeployment;
use crate::crd::model_deployment::{GatewayRef, Leg};
use crate::operator::context::workspace_of;

/// Pod-template annotation: the version the Pods serve. A new value is a rolling update.
pub const VERSION_ANNOTATION: &str = "ferroflow.dev/model-version";
/// Pod-template annotation: the model URI the init container downloads.
pub const MODEL_URI_ANNOTATION: &str = "ferroflow.dev/model-uri";
/// Label on every owned object and Pod: the ModelDeployment's name (the all-legs selector).
pub const DEPLOYMENT_LABEL: &str = "ferroflow.dev/model-deployment";
/// Label on a leg's Deployment, Service and Pods: the leg's name.
pub const LEG_LABEL: &str = "ferroflow.dev/leg";

/// Where the Pods find the model, as `mlflow models serve -m` reads it.
const MODEL_DIR: &str = "/model";
/// The init container's mount of the shared volume. The model is downloaded into its `model`
/// subfolder (a rename into place cannot target a mount point), which the server mounts at
/// [`MODEL_DIR`].
const DOWNLOAD_DIR: &str = "/downloads";
const MODEL_SUBDIR: &str = "model";
const MODEL_VOLUME: &str = "model";
/// The download runs once, at start: the shortest token lifetime the API server grants.
const TOKEN_SECONDS: i64 = 600;
const PORT_NAME: &str = "http";
/// The user Pods run as when the image would run as root (MLflow's image does).
const POD_USER: i64 = 1000;
/// Names of Services (DNS-1035 labels) and label values are at most 63 characters.
const MAX_NAME_LEN: usize = 63;
/// The startup probe's period and failure threshold: the server has this long to load the
/// model before the kubelet restarts it.
const STARTUP_PERIOD_SECONDS: i32 = 5;
const STARTUP_FAILURES: i32 = 120;
/// Seconds a serving container may take to answer `/ping` after it starts.
pub const STARTUP_WINDOW_SECONDS: i64 = STARTUP_PERIOD_SECONDS as i64 * STARTUP_FAILURES as i64;
/// The container's last log lines become its termination message when it fails, so the
/// operator can say why a version's Pods crash (e.g. the model's class is missing).
const TERMINATION_MESSAGE_POLICY: &str = "FallbackToLogsOnError";
/// Seconds a stopping server keeps answering before it gets SIGTERM: the time for its Pod's
/// removal from the Service's endpoints to reach every proxy, so no request meets a closed port.
const DRAIN_SECONDS: i64 = 5;

/// The operator settings serving needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingSettings {
    /// The runtime image when the resource names none (MLflow with its scoring server).
    pub runtime_image: String,
    /// ferroflow's own image, for the init container's `ferroflow model download`.
    pub ferroflow_image: String,
    /// The tracking server's URL as Pods reach it (the in-cluster ferroflow server).
    pub tracking_uri: String,
    /// The Gateway HTTPRoutes attach to unless the resource names one (`--gateway`).
    pub gateway: Option<GatewayRef>,
}

/// Everything a ModelDeployment owns, for the versions it was built with.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// One per traffic leg, in spec order.
    pub deployments: Vec<Deployment>,
    /// The Service over every leg first, then one per leg when there are several.
    pub services: Vec<Service>,
    /// Only when asked for (the HTTPRoute kind is installed).
    pub http_route: Option<DynamicObject>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("the ModelDeployment has no {0} yet")]
    MissingMetadata(&'static str),
    #[error("set one of alias, version or traffic")]
    NoLegs,
    #[error("no version to run for traffic leg {0}")]
    UnresolvedLeg(String),
    #[error(
        "{name:?} cannot name a Service: at most 63 lowercase letters, digits and '-', starting with a letter"
    )]
    InvalidName { name: String },
}

/// The HTTPRoute kind (`gateway.networking.k8s.io/v1`), for a dynamic API.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// A traffic leg with its share of the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedLeg<'a> {
    pub leg: Leg<'a>,
    pub replicas: i32,
}

/// The legs of the spec with their replicas.
pub fn plan(resource: &ModelDeployment) -> Vec<PlannedLeg<'_>> {
    let legs = resource.spec.legs();
    let weights: Vec<i32> = legs.iter().map(|leg| leg.weight).collect();
    let replicas = split_replicas(resource.spec.replicas, &weights);
    legs.into_iter()
        .zip(replicas)
        .map(|(leg, replicas)| PlannedLeg { leg, replicas })
        .collect()
}

/// Splits `total` replicas in proportion to `weights` (largest remainder), at least one each.
fn split_replicas(total: i32, weights: &[i32]) -> Vec<i32> {
    let weight_sum: i64 = weights.iter().map(|&w| i64::from(w.max(0))).sum();
    if weights.is_empty() {
        return Vec::new();
    }
    // Each leg's exact share, in units of 1/weight_sum replica.
    let exact: Vec<i64> = weights
        .iter()
        .map(|&w| i64::from(total) * i64::from(w.max(0)))
        .collect();
    let unit = weight_sum.max(1);
    let mut counts: Vec<i64> = exact.iter().map(|e| (e / unit).max(1)).collect();
    // What each leg is owed (positive) or was given beyond its share (negative).
    let owed = |counts: &[i64], i: usize| exact[i] - counts[i] * unit;
    let target = i64::from(total).max(weights.len() as i64);
    while counts.iter().sum::<i64>() < target {
        let neediest = (0..counts.len())
            .max_by_key(|&i| (owed(&counts, i), std::cmp::Reverse(i)))
            .unwrap_or(0);
        counts[neediest] += 1;
    }
    while counts.iter().sum::<i64>() > target {
        let Some(richest) = (0..counts.len())
            .filter(|&i| counts[i] > 1)
            .min_by_key(|&i| (owed(&counts, i), i))
        else {
            break;
        };
        counts[richest] -= 1;
    }
    counts
        .into_iter()
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX))
        .collect()
}

/// Scoring-server workers: the CPU limit (else request) rounded up, at least 1.
fn default_workers(resources: Option<&ResourceRequirements>) -> i32 {
    let cpu = |map: Option<&BTreeMap<String, Quantity>>| map.and_then(|m| m.get("cpu")).cloned();
    let quantity =
        resources.and_then(|r| cpu(r.limits.as_ref()).or_else(|| cpu(r.requests.as_ref())));
    quantity
        .and_then(|q| cpu_cores(&q.0))
        .map(|cores| cores.ceil().clamp(1.0, 64.0) as i32)
        .unwrap_or(1)
}

/// Cores in a CPU quantity (`2`, `1.5`, `500m`); None for a form CPUs are not given in.
fn cpu_cores(quantity: &str) -> Option<f64> {
    let (number, scale) = match quantity.strip_suffix('m') {
        Some(millis) => (millis, 0.001),
        None => (quantity, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n * scale)
}

/// Builds every object for `versions` (leg name → the version that leg should run).
pub fn build(
    resource: &ModelDeployment,
    model_name: &str,
    versions: &BTreeMap<String, i64>,
    settings: &ServingSettings,
    with_http_route: bool,
) -> Result<Objects, BuildError> {
    let legs = plan(resource);
    if legs.is_empty() {
        return Err(BuildError::NoLegs);
    }
    let deployments = legs
        .iter()
        .map(|planned| {
            let version = versions
                .get(planned.leg.name)
                .copied()
                .ok_or_else(|| BuildError::UnresolvedLeg(planned.leg.name.to_owned()))?;
            deployment(resource, planned, model_name, version, settings)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut services = vec![service(resource, None)?];
    if legs.len() > 1 {
        for planned in &legs {
            services.push(service(resource, Some(planned.leg.name))?);
        }
    }
    let http_route = if with_http_route {
        Some(http_route(resource, &legs, settings)?)
    } else {
        None
    };
    Ok(Objects {
        deployments,
        services,
        http_route,
    })
}

/// The name of a leg's Deployment and Service: `<name>-<leg>`.
pub fn leg_object_name(resource: &ModelDeployment, leg: &str) -> Result<String, BuildError> {
    checked_name(format!("{}-{leg}", name_of(resource)?))
}

/// The role of every object a ModelDeployment owns, for the shared `app.kubernetes.io` labels.
const ROLE: Role = Role {
    app: "mlflow-model-server",
    component: "serving",
};

/// What every owned object carries: the shared owner labels and reference (`build::owned_meta`)
/// plus the labels that select the Pods of every leg or of one.
struct Owner<'a> {
    resource: &'a ModelDeployment,
    name: &'a str,
}

fn owner(resource: &ModelDeployment) -> Result<Owner<'_>, BuildError> {
    if resource.metadata.namespace.is_none() {
        return Err(BuildError::MissingMetadata("namespace"));
    }
    if owner_reference(resource).is_none() {
        return Err(BuildError::MissingMetadata("uid"));
    }
    Ok(Owner {
        resource,
        name: checked(name_of(resource)?)?,
    })
}

impl Owner<'_> {
    fn labels(&self, leg: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = labels(self.resource, ROLE);
        labels.extend(self.selector(leg));
        labels
    }

    fn selector(&self, leg: Option<&str>) -> BTreeMap<String, String> {
        let mut selector = BTreeMap::from([(DEPLOYMENT_LABEL.to_owned(), self.name.to_owned())]);
        if let Some(leg) = leg {
            selector.insert(LEG_LABEL.to_owned(), leg.to_owned());
        }
        selector
    }

    fn metadata(&self, name: String, leg: Option<&str>) -> ObjectMeta {
        let mut meta = owned_meta(self.resource, &name, ROLE);
        meta.labels = Some(self.labels(leg));
        meta
    }
}

fn name_of(resource: &ModelDeployment) -> Result<&str, BuildError> {
    resource
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("name"))
}

fn is_dns_label(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn checked(name: &str) -> Result<&str, BuildError> {
    if is_dns_label(name) {
        Ok(name)
    } else {
        Err(BuildError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn checked_name(name: String) -> Result<String, BuildError> {
    checked(&name)?;
    Ok(name)
}

/// The Deployment of one traffic leg, running `version`.
pub fn deployment(
    resource: &ModelDeployment,
    planned: &PlannedLeg<'_>,
    model_name: &str,
    version: i64,
    settings: &ServingSettings,
) -> Result<Deployment, BuildError> {
    let owner = owner(resource)?;
    let spec = &resource.spec;
    let leg = planned.leg.name;
    let model_uri = format!("models:/{model_name}/{version}");

    let mut pod_labels = spec.pod_labels.clone().unwrap_or_default();
    pod_labels.extend(owner.labels(Some(leg)));
    let mut pod_annotations = spec.pod_annotations.clone().unwrap_or_default();
    pod_annotations.insert(VERSION_ANNOTATION.to_owned(), version.to_string());
    pod_annotations.insert(MODEL_URI_ANNOTATION.to_owned(), model_uri.clone());

    let workers = spec
        .workers
        .unwrap_or_else(|| default_workers(spec.resources.as_ref()));
    let command = spec.command.clone().unwrap_or_else(|| {
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            MODEL_DIR,
            "--env-manager",
            "local",
            "-h",
            "0.0.0.0",
            "-p",
            &spec.port.to_string(),
            "-w",
            &workers.to_string(),
            "-t",
            &spec.timeout_seconds.to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    });
    let ours = [EnvVar {
        name: "MLFLOW_DISABLE_TELEMETRY".to_owned(),
        value: Some("true".to_owned()),
        value_from: None,
    }];
    // Ours win: the API server refuses a name twice in a server-side applied list.
    let env: Vec<EnvVar> = ours
        .iter()
        .cloned()
        .chain(
            spec.env
                .iter()
                .flatten()
                .filter(|var| ours.iter().all(|own| own.name != var.name))
                .cloned(),
        )
        .collect();

    let server = Container {
        name: "server".to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| settings.runtime_image.clone()),
        ),
        command: Some(command),
        args: spec.args.clone(),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: spec.port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        env_from: spec.env_from.clone(),
        resources: spec.resources.clone(),
        volume_mounts: Some(vec![VolumeMount {
            name: MODEL_VOLUME.to_owned(),
            mount_path: MODEL_DIR.to_owned(),
            sub_path: Some(MODEL_SUBDIR.to_owned()),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        // Loading a model can take minutes; until then only the startup probe runs.
        startup_probe: Some(ping_probe(STARTUP_PERIOD_SECONDS, 2, STARTUP_FAILURES)),
        readiness_probe: Some(ping_probe(5, 2, 3)),
        liveness_probe: Some(ping_probe(10, 5, 3)),
        security_context: Some(container_security()),
        termination_message_policy: Some(TERMINATION_MESSAGE_POLICY.to_owned()),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: DRAIN_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };
    let download = Container {
        name: "download".to_owned(),
        image: Some(settings.ferroflow_image.clone()),
        command: Some(vec![
            "/usr/local/bin/ferroflow".to_owned(),
            "model".to_owned(),
            "download".to_owned(),
            model_uri,
            format!("{DOWNLOAD_DIR}/{MODEL_SUBDIR}"),
        ]),
        env: Some(vec![
            EnvVar {
                name: "MLFLOW_TRACKING_URI".to_owned(),
                value: Some(settings.tracking_uri.clone()),
                value_from: None,
            },
            // The model is in the workspace of the resource's namespace.
            EnvVar {
                name: WORKSPACE_ENV.to_owned(),
                value: Some(workspace_of(resource).to_owned()),
                value_from: None,
            },
            tracking_token_env(),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: MODEL_VOLUME.to_owned(),
                mount_path: DOWNLOAD_DIR.to_owned(),
                ..VolumeMount::default()
            },
            tracking_token_mount(),
        ]),
        security_context: Some(container_security()),
        termination_message_policy: Some(TERMINATION_MESSAGE_POLICY.to_owned()),
        ..Container::default()
    };

    Ok(Deployment {
        metadata: owner.metadata(leg_object_name(resource, leg)?, Some(leg)),
        spec: Some(DeploymentSpec {
            replicas: Some(planned.replicas),
            selector: LabelSelector {
                match_labels: Some(owner.selector(Some(leg))),
                match_expressions: None,
            },
            // New Pods must be ready before old ones go: a version that cannot serve never
            // takes capacity away from the one that can.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_owned())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            progress_deadline_seconds: Some(spec.progress_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![download]),
                    containers: vec![server],
                    volumes: Some(vec![
                        Volume {
                            name: MODEL_VOLUME.to_owned(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        },
                        tracking_token_volume(TOKEN_SECONDS),
                    ]),
                    // `mlflow models serve` runs the scoring server as its child and installs
                    // no SIGTERM handler: as the container's PID 1 it would ignore SIGTERM and
                    // every stop would wait out the grace period. Under the Pod's pause process
                    // it stops on SIGTERM, and the server follows (it asked for SIGTERM when its
                    // parent dies).
                    share_process_namespace: Some(true),
                    service_account_name: spec.service_account_name.clone(),
                    // Serving Pods never call the Kubernetes API (the download's token above is
                    // for the tracking server).
                    automount_service_account_token: Some(false),
                    node_selector: spec.node_selector.clone(),
                    tolerations: spec.tolerations.clone(),
                    affinity: spec.affinity.clone(),
                    image_pull_secrets: spec.image_pull_secrets.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(POD_USER),
                        run_as_group: Some(POD_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn ping_probe(period_seconds: i32, timeout_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/ping".to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(timeout_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// The restricted Pod Security Standard's container settings.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// The Service over every leg (`leg` None, named like the resource) or over one leg.
pub fn service(resource: &ModelDeployment, leg: Option<&str>) -> Result<Service, BuildError> {
    let owner = owner(resource)?;
    let name = match leg {
        Some(leg) => leg_object_name(resource, leg)?,
        None => owner.name.to_owned(),
    };
    Ok(Service {
        metadata: owner.metadata(name, leg),
        spec: Some(ServiceSpec {
            selector: Some(owner.selector(leg)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: resource.spec.port,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The HTTPRoute splitting requests by the legs' exact weights (one leg: its only backend is
/// the Service over every leg, as there is no per-leg Service then).
pub fn http_route(
    resource: &ModelDeployment,
    legs: &[PlannedLeg<'_>],
    settings: &ServingSettings,
) -> Result<DynamicObject, BuildError> {
    let owner = owner(resource)?;
    let port = resource.spec.port;
    let backends = if legs.len() > 1 {
        legs.iter()
            .map(|planned| {
                Ok(json!({
                    "name": leg_object_name(resource, planned.leg.name)?,
                    "port": port,
                    "weight": planned.leg.weight,
                }))
            })
            .collect::<Result<Vec<_>, BuildError>>()?
    } else {
        vec![json!({"name": owner.name, "port": port, "weight": 100})]
    };
    let mut spec = json!({"rules": [{"backendRefs": backends}]});
    // The resource's own Gateway, else the operator's: serialized as a parentRef reads.
    if let Some(gateway) = resource.spec.gateway.as_ref().or(settings.gateway.as_ref()) {
        spec["parentRefs"] = json!([gateway]);
    }
    let resource_type = http_route_resource();
    Ok(DynamicObject {
        types: Some(TypeMeta {
            api_version: resource_type.api_version,
            kind: resource_type.kind,
        }),
        metadata: owner.metadata(owner.name.to_owned(), None),
        data: json!({ "spec": spec }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn resource(spec: Value) -> ModelDeployment {
        serde_json::from_value(json!({
            "apiVersion": "ferroflow.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u-1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn settings() -> ServingSettings {
        ServingSettings {
            runtime_image: "ghcr.io/mlflow/mlflow:v3.17.2".to_owned(),
            ferroflow_image: "ghcr.io/ferroflow/ferroflow:0.1.0".to_owned(),
            tracking_uri: "http://ferroflow.ferroflow-system.svc:5000".to_owned(),
            gateway: None,
        }
    }

    fn versions(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs
            .iter()
            .map(|(leg, v)| ((*leg).to_owned(), *v))
            .collect()
    }

    fn owner_reference() -> Value {
        json!([{
            "apiVersion": "ferroflow.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "fraud",
            "uid": "u-1",
            "controller": true,
            "blockOwnerDeletion": true,
        }])
    }

    fn labels(leg: Option<&str>) -> Value {
        let mut labels = json!({
            "app.kubernetes.io/component": "serving",
            "app.kubernetes.io/instance": "fraud",
            "app.kubernetes.io/managed-by": "ferroflow-operator",
            "app.kubernetes.io/name": "mlflow-model-server",
            "app.kubernetes.io/part-of": "ferroflow",
            "ferroflow.dev/model-deployment": "fraud",
            "ferroflow.dev/owner-kind": "ModelDeployment",
            "ferroflow.dev/owner-name": "fraud",
            "ferroflow.dev/owner-uid": "u-1",
        });
        if let Some(leg) = leg {
            labels["ferroflow.dev/leg"] = json!(leg);
        }
        labels
    }

    fn ping(period: i32, timeout: i32, failures: i32) -> Value {
        json!({
            "httpGet": {"path": "/ping", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": failures,
        })
    }

    fn restricted() -> Value {
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    }

    /// The Deployment of leg `leg` running `version` of `fraud`, with the test's settings:
    /// everything but the server container, which the caller passes.
    fn expected_deployment(leg: &str, replicas: i32, version: i64, server: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": format!("fraud-{leg}"),
                "namespace": "ml",
                "labels": labels(Some(leg)),
                "ownerReferences": owner_reference(),
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {
                    "ferroflow.dev/model-deployment": "fraud",
                    "ferroflow.dev/leg": leg,
                }},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
                },
                "progressDeadlineSeconds": 600,
                "template": {
                    "metadata": {
                        "labels": labels(Some(leg)),
                        "annotations": {
                            "ferroflow.dev/model-version": version.to_string(),
                            "ferroflow.dev/model-uri": format!("models:/fraud/{version}"),
                        },
                    },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "shareProcessNamespace": true,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 1000,
                            "runAsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "initContainers": [{
                            "name": "download",
                            "image": "ghcr.io/ferroflow/ferroflow:0.1.0",
                            "command": [
                                "/usr/local/bin/ferroflow", "model", "download",
                                format!("models:/fraud/{version}"), "/downloads/model",
                            ],
                            "env": [
                                {
                                    "name": "MLFLOW_TRACKING_URI",
                                    "value": "http://ferroflow.ferroflow-system.svc:5000",
                                },
                                {"name": "MLFLOW_WORKSPACE", "value": "ml"},
                                {
                                    "name": "FERROFLOW_TRACKING_TOKEN_FILE",
                                    "value": "/var/run/secrets/ferroflow/tracking/token",
                                },
                            ],
                            "volumeMounts": [
                                {"name": "model", "mountPath": "/downloads"},
                                {
                                    "name": "tracking-token",
                                    "mountPath": "/var/run/secrets/ferroflow/tracking",
                                    "readOnly": true,
                                },
                            ],
                            "securityContext": restricted(),
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }],
                        "containers": [server],
                        "volumes": [
                            {"name": "model", "emptyDir": {}},
                            {"name": "tracking-token", "projected": {"sources": [{
                                "serviceAccountToken": {"path": "token", "expirationSeconds": 600},
                            }]}},
                        ],
                    },
                },
            },
        })
    }

    fn expected_server(command: Value) -> Value {
        json!({
            "name": "server",
            "image": "ghcr.io/mlflow/mlflow:v3.17.2",
            "command": command,
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"}],
            "volumeMounts": [{
                "name": "model", "mountPath": "/model", "subPath": "model", "readOnly": true,
            }],
            "startupProbe": ping(5, 2, 120),
            "readinessProbe": ping(5, 2, 3),
            "livenessProbe": ping(10, 5, 3),
            "securityContext": restricted(),
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        })
    }

    fn serve_command(workers: i32, timeout: i32) -> Value {
        json!([
            "mlflow",
            "models",
            "serve",
            "-m",
            "/model",
            "--env-manager",
            "local",
            "-h",
            "0.0.0.0",
            "-p",
            "8080",
            "-w",
            workers.to_string(),
            "-t",
            timeout.to_string(),
        ])
    }

    fn expected_service(name: &str, leg: Option<&str>) -> Value {
        let mut selector = json!({"ferroflow.dev/model-deployment": "fraud"});
        if let Some(leg) = leg {
            selector["ferroflow.dev/leg"] = json!(leg);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": "ml",
                "labels": labels(leg),
                "ownerReferences": owner_reference(),
            },
            "spec": {
                "selector": selector,
                "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
            },
        })
    }

    fn to_json<T: serde::Serialize>(object: &T) -> Value {
        serde_json::to_value(object).unwrap()
    }

    #[test]
    fn one_alias_is_one_deployment_and_one_service() {
        let md = resource(json!({"modelName": "fraud", "alias": "champion", "replicas": 2}));
        let objects = build(
            &md,
            "fraud",
            &versions(&[("champion", 3)]),
            &settings(),
            false,
        )
        .unwrap();
        assert_eq!(objects.deployments.len(), 1);
        assert_eq!(
            to_json(&objects.deployments[0]),
            expected_deployment("champion", 2, 3, expected_server(serve_command(1, 60)))
        );
        assert_eq!(
            objects.services.iter().map(to_json).collect::<Vec<_>>(),
            vec![expected_service("fraud", None)]
        );
        assert_eq!(objects.http_route, None);
    }

    #[test]
    fn two_legs_split_replicas_and_route_by_weight() {
        let md = resource(json!({
            "modelName": "fraud",
            "replicas": 4,
            "traffic": [
                {"alias": "champion", "weight": 90},
                {"alias": "challenger", "weight": 10},
            ],
        }));
        let mut settings = settings();
        settings.gateway = Some(GatewayRef {
            namespace: Some("gateways".to_owned()),
            name: "models".to_owned(),
            section_name: None,
        });
        let objects = build(
            &md,
            "fraud",
            &versions(&[("champion", 3), ("challenger", 4)]),
            &settings,
            true,
        )
        .unwrap();
        assert_eq!(
            objects.deployments.iter().map(to_json).collect::<Vec<_>>(),
            vec![
                expected_deployment("champion", 3, 3, expected_server(serve_command(1, 60))),
                expected_deployment("challenger", 1, 4, expected_server(serve_command(1, 60))),
            ]
        );
        assert_eq!(
            objects.services.iter().map(to_json).collect::<Vec<_>>(),
            vec![
                expected_service("fraud", None),
                expected_service("fraud-champion", Some("champion")),
                expected_service("fraud-challenger", Some("challenger")),
            ]
        );
        assert_eq!(
            to_json(&objects.http_route.unwrap()),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {
                    "name": "fraud",
                    "namespace": "ml",
                    "labels": labels(None),
                    "ownerReferences": owner_reference(),
                },
                "spec": {
                    "parentRefs": [{"name": "models", "namespace": "gateways"}],
                    "rules": [{"backendRefs": [
                        {"name": "fraud-champion", "port": 8080, "weight": 90},
                        {"name": "fraud-challenger", "port": 8080, "weight": 10},
                    ]}],
                },
            })
        );
    }

    #[test]
    fn the_resources_gateway_wins_over_the_operators_and_none_attaches_nowhere() {
        let route = |spec: Value, gateway: Option<&str>| {
            let mut settings = settings();
            settings.gateway = gateway.map(|g| g.parse().unwrap());
            let objects = build(
                &resource(spec),
                "fraud",
                &versions(&[("champion", 3)]),
                &settings,
                true,
            )
            .unwrap();
            to_json(&objects.http_route.unwrap())["spec"].clone()
        };
        let own = json!({
            "modelName": "fraud",
            "alias": "champion",
            "gateway": {"name": "internal", "sectionName": "http"},
        });
        assert_eq!(
            route(own.clone(), Some("gateways/models"))["parentRefs"],
            json!([{"name": "internal", "sectionName": "http"}])
        );
        assert_eq!(
            route(own, None)["parentRefs"],
            json!([{"name": "internal", "sectionName": "http"}])
        );
        let plain = json!({"modelName": "fraud", "alias": "champion"});
        assert_eq!(
            route(plain.clone(), Some("models"))["parentRefs"],
            json!([{"name": "models"}])
        );
        assert_eq!(
            route(plain, None),
            json!({"rules": [{"backendRefs": [{"name": "fraud", "port": 8080, "weight": 100}]}]})
        );
    }

    #[test]
    fn pod_settings_pass_through_and_ours_win() {
        let md = resource(json!({
            "modelName": "fraud",
            "version": 7,
            "image": "registry.example/serving:1",
            "args": ["--enable-mlserver"],
            "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
            "env": [
                {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "false"},
                {"name": "OMP_NUM_THREADS", "value": "1"},
            ],
            "envFrom": [{"secretRef": {"name": "features"}}],
            "serviceAccountName": "scorer",
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "pull"}],
            "podLabels": {"team": "risk", "ferroflow.dev/leg": "mine"},
            "podAnnotations": {"ferroflow.dev/model-version": "99", "note": "x"},
            "timeoutSeconds": 30,
            "progressDeadlineSeconds": 120,
        }));
        let planned = plan(&md);
        let deployment = to_json(&deployment(&md, &planned[0], "fraud", 7, &settings()).unwrap());
        assert_eq!(deployment["metadata"]["name"], "fraud-pinned");
        assert_eq!(deployment["spec"]["progressDeadlineSeconds"], 120);
        let template = &deployment["spec"]["template"];
        let mut labels = labels(Some("pinned"));
        labels["team"] = json!("risk");
        assert_eq!(template["metadata"]["labels"], labels);
        assert_eq!(
            template["metadata"]["annotations"],
            json!({
                "ferroflow.dev/model-version": "7",
                "ferroflow.dev/model-uri": "models:/fraud/7",
                "note": "x",
            })
        );
        let pod = &template["spec"];
        assert_eq!(pod["serviceAccountName"], "scorer");
        assert_eq!(pod["nodeSelector"], json!({"pool": "cpu"}));
        assert_eq!(
            pod["tolerations"],
            json!([{"key": "dedicated", "operator": "Exists"}])
        );
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "pull"}]));
        let server = &pod["containers"][0];
        assert_eq!(server["image"], "registry.example/serving:1");
        assert_eq!(server["command"], serve_command(2, 30));
        assert_eq!(server["args"], json!(["--enable-mlserver"]));
        assert_eq!(
            server["env"],
            json!([
                {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
                {"name": "OMP_NUM_THREADS", "value": "1"},
            ])
        );
        assert_eq!(
            server["envFrom"],
            json!([{"secretRef": {"name": "features"}}])
        );
        assert_eq!(
            server["resources"],
            json!({"limits": {"cpu": "1500m", "memory": "1Gi"}})
        );
    }

    #[test]
    fn a_custom_command_replaces_the_serve_line() {
        let md = resource(json!({
            "modelName": "fraud", "alias": "champion", "command": ["serve", "/model"], "workers": 4,
        }));
        let planned = plan(&md);
        let deployment = to_json(&deployment(&md, &planned[0], "fraud", 1, &settings()).unwrap());
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["command"],
            json!(["serve", "/model"])
        );
    }

    #[test]
    fn replicas_follow_weights_with_one_per_leg() {
        assert_eq!(split_replicas(10, &[90, 10]), vec![9, 1]);
        assert_eq!(split_replicas(4, &[90, 10]), vec![3, 1]);
        assert_eq!(split_replicas(2, &[99, 1]), vec![1, 1]);
        assert_eq!(split_replicas(3, &[100, 0]), vec![2, 1]);
        assert_eq!(split_replicas(5, &[50, 50]), vec![3, 2]);
        assert_eq!(split_replicas(7, &[34, 33, 33]), vec![3, 2, 2]);
        assert_eq!(split_replicas(1, &[100]), vec![1]);
        for total in 3..40 {
            let split = split_replicas(total, &[70, 20, 10]);
            assert_eq!(split.iter().sum::<i32>(), total, "{split:?}");
            assert!(split.iter().all(|&n| n >= 1), "{split:?}");
        }
    }

    #[test]
    fn workers_come_from_the_cpu_limit_else_request() {
        let resources =
            |value: Value| -> ResourceRequirements { serde_json::from_value(value).unwrap() };
        assert_eq!(default_workers(None), 1);
        assert_eq!(
            default_workers(Some(&resources(json!({"limits": {"cpu": "2"}})))),
            2
        );
        assert_eq!(
            default_workers(Some(&resources(json!({"limits": {"cpu": "1500m"}})))),
            2
        );
        assert_eq!(
            default_workers(Some(&resources(json!({"limits": {"cpu": "250m"}})))),
            1
        );
        assert_eq!(
            default_workers(Some(&resources(
                json!({"requests": {"cpu": "3"}, "limits": {"memory": "1Gi"}})
            ))),
            3
        );
        assert_eq!(
            default_workers(Some(&resources(json!({"limits": {"cpu": "2k"}})))),
            1
        );
    }

    #[test]
    fn names_that_cannot_name_a_service_are_refused() {
        let long = "x".repeat(60);
        let mut md = resource(json!({"modelName": "fraud", "alias": "champion"}));
        md.metadata.name = Some(long.clone());
        assert_eq!(
            build(
                &md,
                "fraud",
                &versions(&[("champion", 1)]),
                &settings(),
                false
            ),
            Err(BuildError::InvalidName {
                name: format!("{long}-champion")
            })
        );
        md.metadata.name = Some("9fraud".to_owned());
        assert!(matches!(
            build(
                &md,
                "fraud",
                &versions(&[("champion", 1)]),
                &settings(),
                false
            ),
            Err(BuildError::InvalidName { .. })
        ));
    }

    #[test]
    fn a_leg_without_a_version_is_an_error() {
        let md = resource(json!({"modelName": "fraud", "alias": "champion"}));
        assert_eq!(
            build(&md, "fraud", &BTreeMap::new(), &settings(), false),
            Err(BuildError::UnresolvedLeg("champion".to_owned()))
        );
    }
}
