//! ProjectRun + its MLflow run → the Pod that runs it. The init container copies the
//! `ferroflow` binary (from the operator's image) into a shared volume and, for a `source`,
//! downloads the project through the tracking server; the main container runs
//! `ferroflow run PROJECT -e ENTRY -P … --run-id ID` in the user's image with
//! `MLFLOW_TRACKING_URI` set to the in-cluster URL from the operator's settings and
//! `MLFLOW_WORKSPACE` to the run's workspace. When retries
//! are asked for (`backoffLimit` above 0) the same Pod is the template of a Job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, Pod, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use url::Url;

use super::{Role, owned_meta, tracking_token_env, tracking_token_mount, tracking_token_volume};
use crate::client::WORKSPACE_ENV;
use crate::crd::ProjectRun;

/// What the run's Pod is, for its labels.
pub const ROLE: Role = Role {
    app: "mlflow-project",
    component: "run",
};
/// The run the Pod belongs to (a run id is 32 hex digits: a valid label value).
pub const LABEL_RUN_ID: &str = "ferroflow.dev/run-id";
/// Name of the main container (`kubectl logs POD -c run`).
pub const MAIN_CONTAINER: &str = "run";
/// Name of the init container.
pub const INIT_CONTAINER: &str = "prepare";
/// Where the init container puts the ferroflow binary, in the main container too.
pub const BIN_DIR: &str = "/ferroflow/bin";
/// Where a downloaded `source` project lands.
pub const PROJECT_DIR: &str = "/ferroflow/project";
/// The ferroflow binary inside the operator's image (see the Dockerfile).
pub const IMAGE_BINARY: &str = "/usr/local/bin/ferroflow";
const BIN_VOLUME: &str = "ferroflow-bin";
/// Lifetime of the tracking token: `ferroflow run` hands the project's process the token it
/// read at start (`MLFLOW_TRACKING_TOKEN`, which MLflow's client cannot re-read from a file),
/// so it must outlast a long training run.
const TOKEN_SECONDS: i64 = 24 * 3600;
const PROJECT_VOLUME: &str = "ferroflow-project";
/// Longest Pod name: a DNS subdomain.
const POD_NAME_MAX: usize = 253;
/// Longest Job name: the Job controller puts it in its Pods' `job-name` label, a label value.
const JOB_NAME_MAX: usize = 63;
/// What both names end with.
const NAME_SUFFIX: &str = "-run";

/// What the Pod is built from besides the resource.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInputs<'a> {
    /// The MLflow run the reconciler created for the resource.
    pub run_id: &'a str,
    /// `MLFLOW_TRACKING_URI` of the Pod (the operator's in-cluster tracking URL).
    pub tracking_url: &'a Url,
    /// `MLFLOW_WORKSPACE` of the Pod: the run's workspace.
    pub workspace: &'a str,
    /// The image holding the ferroflow binary (the operator's own).
    pub ferroflow_image: &'a str,
}

/// Whether `run` runs as a Job, which retries a failed Pod, rather than as one bare Pod.
pub fn runs_as_job(run: &ProjectRun) -> bool {
    run.spec.backoff_limit.is_some_and(|limit| limit > 0)
}

/// The Pod's name: the resource's, with `-run`.
pub fn pod_name(run: &ProjectRun) -> String {
    name_with_suffix(run, POD_NAME_MAX)
}

/// The Job's name: the resource's (cut to fit a label value), with `-run`.
pub fn job_name(run: &ProjectRun) -> String {
    name_with_suffix(run, JOB_NAME_MAX)
}

fn name_with_suffix(run: &ProjectRun, max: usize) -> String {
    let name: String = run
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .chars()
        .take(max - NAME_SUFFIX.len())
        .collect();
    format!("{}{NAME_SUFFIX}", name.trim_end_matches(['-', '.']))
}

/// The Pod that runs `run`.
pub fn pod(run: &ProjectRun, inputs: &PodInputs<'_>) -> Pod {
    Pod {
        metadata: metadata(run, &pod_name(run), inputs),
        spec: Some(pod_spec(run, inputs)),
        status: None,
    }
}

/// The Job that runs `run` with retries: the Pod of [`pod`] as its template; the deadline,
/// the retries, the time kept after finishing and `suspend` (how a queue such as Kueue admits
/// it) are the Job's.
pub fn job(run: &ProjectRun, inputs: &PodInputs<'_>) -> Job {
    let spec = &run.spec;
    let metadata = metadata(run, &job_name(run), inputs);
    let mut template = pod_spec(run, inputs);
    // The deadline covers the whole run, retries included, not each attempt.
    template.active_deadline_seconds = None;
    Job {
        spec: Some(JobSpec {
            backoff_limit: spec.backoff_limit,
            active_deadline_seconds: spec.active_deadline_seconds,
            ttl_seconds_after_finished: spec.ttl_seconds_after_finished,
            suspend: Some(spec.suspend),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: metadata.labels.clone(),
                    ..ObjectMeta::default()
                }),
                spec: Some(template),
            },
            ..JobSpec::default()
        }),
        metadata,
        status: None,
    }
}

/// The owned object's metadata, with the run's label.
fn metadata(run: &ProjectRun, name: &str, inputs: &PodInputs<'_>) -> ObjectMeta {
    let mut metadata = owned_meta(run, name, ROLE);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(LABEL_RUN_ID.to_owned(), inputs.run_id.to_owned());
    metadata
}

/// What the run's Pod does: the init container, then `ferroflow run` in the user's image.
fn pod_spec(run: &ProjectRun, inputs: &PodInputs<'_>) -> PodSpec {
    let spec = &run.spec;
    let bin_mount = VolumeMount {
        name: BIN_VOLUME.to_owned(),
        mount_path: BIN_DIR.to_owned(),
        ..VolumeMount::default()
    };
    let project_mount = VolumeMount {
        name: PROJECT_VOLUME.to_owned(),
        mount_path: PROJECT_DIR.to_owned(),
        ..VolumeMount::default()
    };
    let mut volumes = vec![empty_dir(BIN_VOLUME), tracking_token_volume(TOKEN_SECONDS)];
    let mut init_args = vec![
        "project-init".to_owned(),
        "--binary-to".to_owned(),
        format!("{BIN_DIR}/ferroflow"),
    ];
    let mut init_mounts = vec![bin_mount.clone(), tracking_token_mount()];
    let mut main_mounts = vec![
        VolumeMount {
            read_only: Some(true),
            ..bin_mount
        },
        tracking_token_mount(),
    ];
    let project = match (&spec.source, &spec.project_dir) {
        (Some(source), _) => {
            volumes.push(empty_dir(PROJECT_VOLUME));
            init_args.extend([
                "--source".to_owned(),
                source.clone(),
                "--into".to_owned(),
                PROJECT_DIR.to_owned(),
            ]);
            init_mounts.push(project_mount.clone());
            main_mounts.push(project_mount);
            PROJECT_DIR.to_owned()
        }
        (None, Some(dir)) => dir.clone(),
        (None, None) => ".".to_owned(),
    };
    volumes.extend(spec.volumes.iter().cloned());
    main_mounts.extend(spec.volume_mounts.iter().cloned());

    let tracking_env = [
        env_var("MLFLOW_TRACKING_URI", inputs.tracking_url.as_str()),
        env_var(WORKSPACE_ENV, inputs.workspace),
        tracking_token_env(),
    ];
    let mut env = spec.env.clone();
    // Last, so nothing above can point the run at another server or workspace.
    env.extend(tracking_env.iter().cloned());

    let mut args = vec![
        "run".to_owned(),
        project,
        "-e".to_owned(),
        spec.entry_point.clone(),
    ];
    for (name, value) in spec.parameters.iter().flatten() {
        args.extend(["-P".to_owned(), format!("{name}={value}")]);
    }
    args.extend(["--run-id".to_owned(), inputs.run_id.to_owned()]);

    PodSpec {
        restart_policy: Some("Never".to_owned()),
        service_account_name: spec.service_account_name.clone(),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        active_deadline_seconds: spec.active_deadline_seconds,
        init_containers: Some(vec![Container {
            name: INIT_CONTAINER.to_owned(),
            image: Some(inputs.ferroflow_image.to_owned()),
            command: Some(vec![IMAGE_BINARY.to_owned()]),
            args: Some(init_args),
            env: Some(tracking_env.to_vec()),
            volume_mounts: Some(init_mounts),
            ..Container::default()
        }]),
        containers: vec![Container {
            name: MAIN_CONTAINER.to_owned(),
            image: Some(spec.image.clone()),
            command: Some(vec![format!("{BIN_DIR}/ferroflow")]),
            args: Some(args),
            env: Some(env),
            env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
            resources: spec.resources.clone(),
            volume_mounts: Some(main_mounts),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::operator::test_support::from_yaml;

    const RUN_ID: &str = "8f3e2c1b9a7d4e6f8a0b1c2d3e4f5a6b";
    const UID: &str = "6f1c2a0e-3b7d-4e52-9a51-0c8d2f4b7e11";

    fn resource(spec: &str) -> ProjectRun {
        from_yaml(&format!(
            "
apiVersion: ferroflow.dev/v1alpha1
kind: ProjectRun
metadata:
  name: fraud-train
  namespace: ml
  uid: {UID}
spec:
{spec}"
        ))
    }

    fn labels() -> serde_json::Value {
        json!({
            "app.kubernetes.io/component": "run",
            "app.kubernetes.io/instance": "fraud-train",
            "app.kubernetes.io/managed-by": "ferroflow-operator",
            "app.kubernetes.io/name": "mlflow-project",
            "app.kubernetes.io/part-of": "ferroflow",
            "ferroflow.dev/owner-kind": "ProjectRun",
            "ferroflow.dev/owner-name": "fraud-train",
            "ferroflow.dev/owner-uid": UID,
            "ferroflow.dev/run-id": RUN_ID,
        })
    }

    fn owner() -> serde_json::Value {
        json!([{
            "apiVersion": "ferroflow.dev/v1alpha1",
            "kind": "ProjectRun",
            "name": "fraud-train",
            "uid": UID,
            "controller": true,
            "blockOwnerDeletion": true,
        }])
    }

    fn tracking() -> Url {
        Url::parse("http://ferroflow.ferroflow-system.svc:5000").unwrap()
    }

    /// The projected token both containers sign in to the tracking server with.
    fn token_env() -> serde_json::Value {
        json!({"name": "FERROFLOW_TRACKING_TOKEN_FILE", "value": "/var/run/secrets/ferroflow/tracking/token"})
    }

    fn token_mount() -> serde_json::Value {
        json!({"name": "tracking-token", "mountPath": "/var/run/secrets/ferroflow/tracking", "readOnly": true})
    }

    /// A day: the run's process keeps the token it was started with.
    fn token_volume() -> serde_json::Value {
        json!({"name": "tracking-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 86400}}]}})
    }

    #[test]
    fn a_project_in_the_image_runs_with_everything_the_spec_sets() {
        let run = resource(
            "  experimentName: fraud
  image: ghcr.io/example/fraud:1
  projectDir: /app
  entryPoint: train
  parameters: {alpha: '0.5', label: it's here}
  resources: {limits: {cpu: '2'}}
  env: [{name: MLFLOW_TRACKING_URI, value: http://laptop:5000}, {name: A, value: '1'}]
  envFrom: [{secretRef: {name: creds}}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
  volumeMounts: [{name: data, mountPath: /data}]
  serviceAccountName: trainer
  nodeSelector: {gpu: 'true'}
  tolerations: [{key: gpu, operator: Exists}]
  activeDeadlineSeconds: 3600
",
        );
        let url = tracking();
        let built = pod(
            &run,
            &PodInputs {
                run_id: RUN_ID,
                tracking_url: &url,
                workspace: "ml",
                ferroflow_image: "ghcr.io/ferroflow/ferroflow:0.1.0",
            },
        );
        assert_eq!(
            serde_json::to_value(&built).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "fraud-train-run",
                    "namespace": "ml",
                    "labels": labels(),
                    "ownerReferences": owner(),
                },
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "trainer",
                    "nodeSelector": {"gpu": "true"},
                    "tolerations": [{"key": "gpu", "operator": "Exists"}],
                    "activeDeadlineSeconds": 3600,
                    "initContainers": [{
                        "name": "prepare",
                        "image": "ghcr.io/ferroflow/ferroflow:0.1.0",
                        "command": ["/usr/local/bin/ferroflow"],
                        "args": ["project-init", "--binary-to", "/ferroflow/bin/ferroflow"],
                        "env": [{"name": "MLFLOW_TRACKING_URI",
                                 "value": "http://ferroflow.ferroflow-system.svc:5000/"},
                                {"name": "MLFLOW_WORKSPACE", "value": "ml"}, token_env()],
                        "volumeMounts": [{"name": "ferroflow-bin", "mountPath": "/ferroflow/bin"}, token_mount()],
                    }],
                    "containers": [{
                        "name": "run",
                        "image": "ghcr.io/example/fraud:1",
                        "command": ["/ferroflow/bin/ferroflow"],
                        "args": ["run", "/app", "-e", "train", "-P", "alpha=0.5", "-P", "label=it's here",
                                 "--run-id", RUN_ID],
                        "env": [
                            {"name": "MLFLOW_TRACKING_URI", "value": "http://laptop:5000"},
                            {"name": "A", "value": "1"},
                            {"name": "MLFLOW_TRACKING_URI",
                             "value": "http://ferroflow.ferroflow-system.svc:5000/"},
                            {"name": "MLFLOW_WORKSPACE", "value": "ml"},
                            token_env(),
                        ],
                        "envFrom": [{"secretRef": {"name": "creds"}}],
                        "resources": {"limits": {"cpu": "2"}},
                        "volumeMounts": [
                            {"name": "ferroflow-bin", "mountPath": "/ferroflow/bin", "readOnly": true},
                            token_mount(),
                            {"name": "data", "mountPath": "/data"},
                        ],
                    }],
                    "volumes": [
                        {"name": "ferroflow-bin", "emptyDir": {}},
                        token_volume(),
                        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    ],
                },
            })
        );
    }

    #[test]
    fn a_source_is_downloaded_by_the_init_container() {
        let run = resource(
            "  experimentRef: {name: fraud}
  image: python:3.12
  source: runs:/0123/project
",
        );
        let url = tracking();
        let built = pod(
            &run,
            &PodInputs {
                run_id: RUN_ID,
                tracking_url: &url,
                workspace: "ml",
                ferroflow_image: "ferroflow:dev",
            },
        );
        let tracking_env = json!([{"name": "MLFLOW_TRACKING_URI",
                                   "value": "http://ferroflow.ferroflow-system.svc:5000/"},
                                  {"name": "MLFLOW_WORKSPACE", "value": "ml"}, token_env()]);
        assert_eq!(
            serde_json::to_value(&built).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "fraud-train-run",
                    "namespace": "ml",
                    "labels": labels(),
                    "ownerReferences": owner(),
                },
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [{
                        "name": "prepare",
                        "image": "ferroflow:dev",
                        "command": ["/usr/local/bin/ferroflow"],
                        "args": ["project-init", "--binary-to", "/ferroflow/bin/ferroflow",
                                 "--source", "runs:/0123/project", "--into", "/ferroflow/project"],
                        "env": tracking_env,
                        "volumeMounts": [
                            {"name": "ferroflow-bin", "mountPath": "/ferroflow/bin"},
                            token_mount(),
                            {"name": "ferroflow-project", "mountPath": "/ferroflow/project"},
                        ],
                    }],
                    "containers": [{
                        "name": "run",
                        "image": "python:3.12",
                        "command": ["/ferroflow/bin/ferroflow"],
                        "args": ["run", "/ferroflow/project", "-e", "main", "--run-id", RUN_ID],
                        "env": tracking_env,
                        "volumeMounts": [
                            {"name": "ferroflow-bin", "mountPath": "/ferroflow/bin", "readOnly": true},
                            token_mount(),
                            {"name": "ferroflow-project", "mountPath": "/ferroflow/project"},
                        ],
                    }],
                    "volumes": [
                        {"name": "ferroflow-bin", "emptyDir": {}},
                        token_volume(),
                        {"name": "ferroflow-project", "emptyDir": {}},
                    ],
                },
            })
        );
    }

    #[test]
    fn retries_make_a_job_whose_template_is_the_pod() {
        let run = resource(
            "  experimentName: fraud
  image: ghcr.io/example/fraud:1
  projectDir: /app
  backoffLimit: 2
  activeDeadlineSeconds: 3600
  ttlSecondsAfterFinished: 600
  suspend: true
",
        );
        assert!(runs_as_job(&run));
        let url = tracking();
        let inputs = PodInputs {
            run_id: RUN_ID,
            tracking_url: &url,
            workspace: "ml",
            ferroflow_image: "ferroflow:dev",
        };
        let tracking_env = json!([{"name": "MLFLOW_TRACKING_URI",
                                   "value": "http://ferroflow.ferroflow-system.svc:5000/"},
                                  {"name": "MLFLOW_WORKSPACE", "value": "ml"}, token_env()]);
        assert_eq!(
            serde_json::to_value(job(&run, &inputs)).unwrap(),
            json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": "fraud-train-run",
                    "namespace": "ml",
                    "labels": labels(),
                    "ownerReferences": owner(),
                },
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 3600,
                    "ttlSecondsAfterFinished": 600,
                    "suspend": true,
                    "template": {
                        "metadata": {"labels": labels()},
                        "spec": {
                            // No deadline of its own: the Job's covers every attempt.
                            "restartPolicy": "Never",
                            "initContainers": [{
                                "name": "prepare",
                                "image": "ferroflow:dev",
                                "command": ["/usr/local/bin/ferroflow"],
                                "args": ["project-init", "--binary-to", "/ferroflow/bin/ferroflow"],
                                "env": tracking_env,
                                "volumeMounts": [{"name": "ferroflow-bin", "mountPath": "/ferroflow/bin"}, token_mount()],
                            }],
                            "containers": [{
                                "name": "run",
                                "image": "ghcr.io/example/fraud:1",
                                "command": ["/ferroflow/bin/ferroflow"],
                                "args": ["run", "/app", "-e", "main", "--run-id", RUN_ID],
                                "env": tracking_env,
                                "volumeMounts": [
                                    {"name": "ferroflow-bin", "mountPath": "/ferroflow/bin", "readOnly": true},
                                    token_mount(),
                                ],
                            }],
                            "volumes": [{"name": "ferroflow-bin", "emptyDir": {}}, token_volume()],
                        },
                    },
                },
            })
        );
        // The same Pod as without retries, but for the deadline.
        let mut bare = pod(&run, &inputs).spec.unwrap();
        bare.active_deadline_seconds = None;
        assert_eq!(job(&run, &inputs).spec.unwrap().template.spec, Some(bare));
    }

    #[test]
    fn no_retries_no_job() {
        for spec in ["", "  backoffLimit: 0\n"] {
            let run = resource(&format!(
                "  experimentName: e\n  image: i\n  projectDir: /p\n{spec}"
            ));
            assert!(!runs_as_job(&run), "{spec}");
        }
    }

    #[test]
    fn long_names_leave_room_for_the_suffix() {
        let mut run = resource("  experimentName: e\n  image: i\n  projectDir: /p\n");
        run.metadata.name = Some(format!("{}-{}", "a".repeat(248), "b".repeat(4)));
        let name = pod_name(&run);
        assert_eq!(name, format!("{}-run", "a".repeat(248)));
        assert!(name.len() <= 253);
        // The Job's name becomes its Pods' job-name label: at most 63 characters.
        assert_eq!(job_name(&run), format!("{}-run", "a".repeat(59)));
    }
}
