//! `ProjectRun`: one run of an MLflow project's entry point, as a Pod. The operator creates
//! the MLflow run first (keyed by the resource's UID), then a Pod whose main container runs
//! `ferroflow run PROJECT -e ENTRY -P … --run-id ID` in the user's image; the Pod's end ends
//! the run. Optionally registers the run's model as a new version once it succeeds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ReconcileState;
use super::model_version::ModelRef;

/// The entry point run when none is named, as in `mlflow run`.
pub const DEFAULT_ENTRY_POINT: &str = "main";

/// A run of an MLflow project in a Pod.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ferroflow.dev",
    version = "v1alpha1",
    kind = "ProjectRun",
    namespaced,
    status = "ProjectRunStatus",
    shortname = "mlrun",
    category = "ferroflow",
    printcolumn = r#"{"name":"EXPERIMENT","type":"string","jsonPath":".status.experimentName"}"#,
    printcolumn = r#"{"name":"ENTRY","type":"string","jsonPath":".spec.entryPoint"}"#,
    printcolumn = r#"{"name":"PHASE","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"RUN","type":"string","jsonPath":".status.runId"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","priority":1}"#,
    printcolumn = r#"{"name":"REASON","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.experimentRef) != has(self.experimentName)").message("set exactly one of experimentRef (an Experiment resource) or experimentName"),
    validation = Rule::new("has(self.projectDir) != has(self.source)").message("set exactly one of projectDir (a folder in the image) or source (an artifact URI the init container downloads)"),
    validation = Rule::new("self.image == oldSelf.image").message("image is immutable: a run happens once; create a new ProjectRun instead"),
    validation = Rule::new("self.entryPoint == oldSelf.entryPoint").message("entryPoint is immutable: create a new ProjectRun instead"),
    validation = Rule::new("has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)").message("parameters are immutable: they were logged to the run; create a new ProjectRun instead"),
    validation = Rule::new("has(self.projectDir) == has(oldSelf.projectDir) && (!has(self.projectDir) || self.projectDir == oldSelf.projectDir)").message("projectDir is immutable"),
    validation = Rule::new("has(self.source) == has(oldSelf.source) && (!has(self.source) || self.source == oldSelf.source)").message("source is immutable"),
    validation = Rule::new("has(self.experimentName) == has(oldSelf.experimentName) && (!has(self.experimentName) || self.experimentName == oldSelf.experimentName)").message("experimentName is immutable: the run exists in its experiment"),
    validation = Rule::new("has(self.experimentRef) == has(oldSelf.experimentRef) && (!has(self.experimentRef) || self.experimentRef == oldSelf.experimentRef)").message("experimentRef is immutable: the run exists in its experiment"),
    validation = Rule::new("has(self.backoffLimit) == has(oldSelf.backoffLimit) && (!has(self.backoffLimit) || self.backoffLimit == oldSelf.backoffLimit)").message("backoffLimit is immutable: it decides whether a Job or a bare Pod runs the command")
)]
pub struct ProjectRunSpec {
    /// The Experiment resource (same namespace) to create the run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_ref: Option<ExperimentRef>,
    /// The MLflow experiment, by name, to create the run in (created when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 500))]
    pub experiment_name: Option<String>,
    /// The image the command runs in: it is the project's environment (the MLproject's
    /// `python_env`/`conda_env` are not built; `docker_env.image` is not pulled).
    #[schemars(length(min = 1))]
    pub image: String,
    /// The project folder inside the image (holding the MLproject file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub project_dir: Option<String>,
    /// Where the init container downloads the project from, through ferroflow: `runs:/…`,
    /// `mlflow-artifacts:/…`, a `.tar.gz`/`.zip` archive or a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub source: Option<String>,
    /// The entry point (declared in the MLproject, or a `.py`/`.sh` file). Immutable.
    #[serde(default = "default_entry_point")]
    #[schemars(length(min = 1))]
    pub entry_point: String,
    /// Parameters, as `-P name=value` (quote numbers: `alpha: "0.5"`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 100))]
    pub parameters: Option<BTreeMap<String, String>>,
    /// CPU, memory and other resources of the main container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Environment of the main container (besides the MLflow variables the operator sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Environment of the main container from ConfigMaps and Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Volumes of the Pod (besides the MLproject's `docker_env.volumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Where the main container mounts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// The Pod's service account (e.g. one with cloud credentials for the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Nodes the Pod may run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the Pod tolerates (e.g. GPU nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Seconds the run may take (all attempts together); then its Pod is stopped and the run
    /// FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Retries of a failed Pod: above 0, a Job runs the command and a failed attempt is
    /// retried in the same MLflow run, which ends when the Job does. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backoff_limit: Option<i32>,
    /// Seconds the finished Job (with its Pods) is kept before Kubernetes deletes it; only with
    /// `backoffLimit` above 0, which makes a Job. The ProjectRun and the MLflow run stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// While true no Pod is created (a queue such as Kueue sets it to admit the run later);
    /// with `backoffLimit` above 0 the Job exists, suspended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Register the run's model as a new version once the run succeeds (exactly once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_model: Option<RegisterModel>,
}

/// Names an Experiment resource in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExperimentRef {
    /// `metadata.name` of the Experiment resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn default_entry_point() -> String {
    DEFAULT_ENTRY_POINT.to_owned()
}

/// Which registered model gets the run's model, under which alias.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.modelRef) != has(self.modelName)").message("set exactly one of modelRef (a RegisteredModel resource) or modelName")
)]
pub struct RegisterModel {
    /// The RegisteredModel resource (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<ModelRef>,
    /// The registered model, by name (created when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model_name: Option<String>,
    /// The model's path in the run's artifacts (`mlflow.sklearn.log_model(…, name="model")`
    /// logs it at `model`).
    #[serde(default = "default_artifact_path")]
    #[schemars(length(min = 1))]
    pub artifact_path: String,
    /// An alias to point at the new version (e.g. `challenger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub alias: Option<String>,
}

fn default_artifact_path() -> String {
    "model".to_owned()
}

/// Where the run is, as the Argo CD health check reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// The run exists; its Pod is not running yet (or the resource is suspended).
    Pending,
    /// The Pod runs the command.
    Running,
    /// The command exited 0: the run is FINISHED.
    Succeeded,
    /// The command failed (or the deadline passed): the run is FAILED.
    Failed,
    /// The resource was deleted mid-run: the run is KILLED.
    Killed,
}

/// What the operator did and found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRunStatus {
    /// The MLflow run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The MLflow experiment the run is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The Pod running (or that ran) the command; with a Job, its latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// When the Pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The model version `registerModel` registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_version: Option<i64>,
    #[serde(flatten)]
    pub state: ReconcileState,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt as _;

    use super::*;

    #[test]
    fn the_health_checks_sample_reads_back_unchanged() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/argocd/health/ferroflow.dev/ProjectRun/testdata/degraded_failed.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let run: ProjectRun = serde_yaml::from_str(&text).unwrap();
        assert_eq!(run.spec.entry_point, "main");
        assert_eq!(run.status.as_ref().unwrap().phase, Some(Phase::Failed));
        let original: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let written = serde_yaml::to_value(&run).unwrap();
        assert_eq!(written["spec"], original["spec"]);
        assert_eq!(written["status"], original["status"]);
    }

    #[test]
    fn shows_experiment_entry_phase_run_and_age() {
        let crd = ProjectRun::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["mlrun".to_owned()]));
        let columns: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|column| column.priority.unwrap_or(0) == 0)
            .map(|column| column.name.clone())
            .collect();
        assert_eq!(columns, ["EXPERIMENT", "ENTRY", "PHASE", "RUN", "AGE"]);
    }

    #[test]
    fn defaults_fill_the_entry_point_and_the_model_path() {
        let spec: ProjectRunSpec = serde_yaml::from_str(
            "experimentName: e\nimage: i\nprojectDir: /p\nregisterModel: {modelName: m}\n",
        )
        .unwrap();
        assert_eq!(spec.entry_point, "main");
        assert!(!spec.suspend);
        assert_eq!(spec.register_model.unwrap().artifact_path, "model");
    }
}
