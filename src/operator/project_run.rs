//! Reconciles a ProjectRun: the MLflow run first (found again by the resource's UID, so a
//! crash between creating it and recording it in status never makes a second one), then the
//! Pod that runs it; the Pod's phase becomes the resource's phase and ends the run. Deleting
//! the resource mid-run deletes the Pod and ends the run KILLED (finalizer). With retries
//! (`backoffLimit` above 0) a Job runs the Pod instead: a failed attempt is retried in the same
//! run, and the Job's final condition (Complete or Failed) ends it.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::apply::{self, apply_owned};
use super::build::project_run::{self as builder, PodInputs};
use super::context::{Context, FIELD_MANAGER};
use super::reconcile::{Failure, Reconciler, describe, now, publish};
use super::registered_model::model_name_of;
use crate::client::download::{DownloadError, has_mlmodel, upload_artifact};
use crate::crd::{
    Experiment, Outcome, Phase, ProjectRun, ProjectRunStatus, Reason, ReconcileState,
};
use crate::store::logged_models::{LoggedModelSearch, MAX_LOGGED_MODELS_PAGE};
use crate::store::registry::{Actor, MAX_MODEL_VERSIONS_PAGE, ModelVersionSearch, NewModelVersion};
use crate::store::runs::{NewRun, RunInfo, TERMINAL_RUN_STATUSES};
use crate::store::{self, KeyValue, Store};

/// The run tag that holds the ProjectRun's UID: how the operator finds the run it created.
pub const RUN_UID_TAG: &str = "ferroflow.dev/project-run-uid";
/// Where in the run's artifacts the operator stores the Pod's log when the Pod ends.
pub const POD_LOG_PATH: &str = "ferroflow/pod.log";
/// The most of a Pod's log that is stored: the kubelet returns its first bytes, so a run that
/// logs more gets a cut log rather than an artifact of any size.
const POD_LOG_LIMIT_BYTES: i64 = 16 * 1024 * 1024;
/// The MLflow user of runs the operator creates.
const RUN_USER: &str = "ferroflow-operator";
/// The label the Job controller puts on its Pods: the Job's uid.
const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

impl Reconciler for ProjectRun {
    type Status = ProjectRunStatus;
    const KIND: &'static str = "ProjectRun";
    /// Deleting a running ProjectRun must end its MLflow run KILLED, which no owner reference
    /// reaches.
    const NEEDS_FINALIZER: bool = true;

    fn status(&self) -> Option<&ProjectRunStatus> {
        self.status.as_ref()
    }

    fn state(status: &ProjectRunStatus) -> &ReconcileState {
        &status.state
    }

    fn state_mut(status: &mut ProjectRunStatus) -> &mut ReconcileState {
        &mut status.state
    }

    async fn sync(&self, ctx: &Context, status: &mut ProjectRunStatus) -> Result<Outcome, Failure> {
        let store = &run_store(ctx, self, status.run_id.as_deref()).await?;
        let experiment_id = resolve_experiment(ctx, store, self, status).await?;
        let run = ensure_run(store, self, experiment_id, status.run_id.as_deref()).await?;
        status.run_id = Some(run.run_uuid.clone());
        if let Some(phase) = status.phase.filter(|phase| is_over(*phase)) {
            // Over: the Pod may be gone (ttl, garbage collection); only make sure the run
            // ended, in case the operator stopped between the two writes.
            end_run(store, &run, phase, status.completion_time.as_ref()).await?;
            if phase == Phase::Succeeded {
                return register_model(ctx, store, self, status, &run).await;
            }
            return Ok(outcome_of(phase, status));
        }
        if builder::runs_as_job(self) {
            return sync_job(ctx, store, self, status, &run).await;
        }

        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace(self));
        let pod_name = builder::pod_name(self);
        let pod = get_ours(&pods, self, "Pod", &pod_name).await?;
        let previous = status.phase;
        let Some(pod) = pod else {
            if status.pod_name.is_some() && previous == Some(Phase::Running) {
                // Deleted by someone while it ran: the command did not finish.
                return finish(ctx, store, self, status, &run, Phase::Failed, None).await;
            }
            status.phase = Some(Phase::Pending);
            status.pod_name = None;
            if self.spec.suspend {
                return Ok(Outcome::not_ready(
                    Reason::Suspended,
                    "spec.suspend is true: no Pod is created until it is false",
                ));
            }
            let inputs = PodInputs {
                run_id: &run.run_uuid,
                tracking_url: &ctx.config.tracking_url,
                workspace: store.workspace(),
                ferroflow_image: &ctx.config.ferroflow_image,
            };
            apply_owned(&ctx.client, self, &builder::pod(self, &inputs), &())
                .await
                .map_err(Failure::Operator)?;
            status.pod_name = Some(pod_name.clone());
            return Ok(Outcome::progressing(
                Reason::Pending,
                format!("run {} created; Pod {pod_name} is pending", run.run_uuid),
            ));
        };
        status.pod_name = Some(pod_name.clone());
        let phase = phase_of(&pod);
        if self.spec.suspend && phase == Phase::Pending {
            delete_pod(self, &pods, &pod).await?;
            status.phase = Some(Phase::Pending);
            status.pod_name = None;
            return Ok(Outcome::not_ready(
                Reason::Suspended,
                "spec.suspend is true: the pending Pod was deleted",
            ));
        }
        if let Some(started) = pod.status.as_ref().and_then(|s| s.start_time.clone()) {
            status.start_time = Some(started);
        }
        if is_over(phase) {
            store_pod_log(ctx, store, self, &pods, &pod_name, &run).await;
            let ended = finished_at(&pod);
            return finish(ctx, store, self, status, &run, phase, ended).await;
        }
        status.phase = Some(phase);
        if phase == Phase::Running && previous != Some(Phase::Running) {
            let note = format!("Pod {pod_name} runs MLflow run {}", run.run_uuid);
            publish(ctx, self, EventType::Normal, "RunStarted", "Run", &note).await;
        }
        Ok(outcome_of(phase, status))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<(), Failure> {
        if builder::runs_as_job(self) {
            // Background propagation: the Job's Pods go with it (a Job's own default orphans
            // them).
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace(self));
            delete_owned(self, &jobs, "Job", &builder::job_name(self)).await?;
        } else {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace(self));
            delete_owned(self, &pods, "Pod", &builder::pod_name(self)).await?;
        }
        let status = self.status.clone().unwrap_or_default();
        let store = &run_store(ctx, self, status.run_id.as_deref()).await?;
        let run_id = match (&status.run_id, &status.experiment_id) {
            (Some(run_id), _) => Some(run_id.clone()),
            // Created, but the operator stopped before recording it.
            (None, Some(experiment_id)) => match experiment_id.parse::<i64>() {
                Ok(id) => find_run(store, self, id).await?.map(|run| run.run_uuid),
                Err(_) => None,
            },
            (None, None) => None,
        };
        if let Some(run_id) = run_id {
            match store
                .end_run_if_unfinished(&run_id, "KILLED", now_millis())
                .await
            {
                Ok(_) | Err(store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// The store of the resource's run: its namespace's workspace, except for a run started
/// before namespaces were workspaces (found in `default`, not in the namespace's), which ends
/// where it started: its Pod talks to `default`, and moving a run out of an experiment other
/// runs share would take them along or split it.
async fn run_store(
    ctx: &Context,
    obj: &ProjectRun,
    recorded_run: Option<&str>,
) -> Result<Store, Failure> {
    let store = ctx.store_for(obj);
    let Some(run_id) = recorded_run.filter(|_| store.workspace() != store::DEFAULT_WORKSPACE)
    else {
        return Ok(store);
    };
    match store.get_run_info(run_id).await {
        Err(store::Error::NotFound { .. }) => {}
        Ok(_) => return Ok(store),
        Err(error) => return Err(error.into()),
    }
    let started_before = ctx.unscoped_store();
    match started_before.get_run_info(run_id).await {
        Ok(_) => Ok(started_before.clone()),
        // Gone from both: the namespace's store reports it.
        Err(store::Error::NotFound { .. }) => Ok(store),
        Err(error) => Err(error.into()),
    }
}

/// [`ProjectRun::sync`] for a run with retries: the Job runs the Pod, its final condition
/// ends the run, and the log of its latest attempt is stored.
async fn sync_job(
    ctx: &Context,
    store: &Store,
    obj: &ProjectRun,
    status: &mut ProjectRunStatus,
    run: &RunInfo,
) -> Result<Outcome, Failure> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace(obj));
    let job_name = builder::job_name(obj);
    let job = get_ours(&jobs, obj, "Job", &job_name).await?;
    let previous = status.phase;
    let Some(job) = job else {
        if status.pod_name.is_some() && previous == Some(Phase::Running) {
            // Deleted by someone while it ran: the command did not finish.
            return finish(ctx, store, obj, status, run, Phase::Failed, None).await;
        }
        let inputs = PodInputs {
            run_id: &run.run_uuid,
            tracking_url: &ctx.config.tracking_url,
            workspace: store.workspace(),
            ferroflow_image: &ctx.config.ferroflow_image,
        };
        apply_owned(&ctx.client, obj, &builder::job(obj, &inputs), &())
            .await
            .map_err(Failure::Operator)?;
        status.phase = Some(Phase::Pending);
        status.pod_name = None;
        return Ok(if obj.spec.suspend {
            suspended(&job_name)
        } else {
            Outcome::progressing(
                Reason::Pending,
                format!("run {} created; Job {job_name} is pending", run.run_uuid),
            )
        });
    };
    let wanted_suspend = obj.spec.suspend;
    if job.spec.as_ref().and_then(|spec| spec.suspend) != Some(wanted_suspend) {
        // A queue admits the run by setting spec.suspend to false; the Job follows.
        let patch = serde_json::json!({"spec": {"suspend": wanted_suspend}});
        jobs.patch(
            &job_name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| kube_failure(obj, "Job", &job_name, source))?;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace(obj));
    let attempt = latest_attempt(obj, &pods, &job).await?;
    if let Some(attempt) = &attempt {
        status.pod_name = Some(attempt.name_any());
    }
    if let Some(started) = job.status.as_ref().and_then(|s| s.start_time.clone()) {
        status.start_time = Some(started);
    }
    let (phase, ended) = job_phase(&job, attempt.as_ref(), previous);
    if is_over(phase) {
        if let Some(attempt) = &attempt {
            store_pod_log(ctx, store, obj, &pods, &attempt.name_any(), run).await;
        }
        return finish(ctx, store, obj, status, run, phase, ended).await;
    }
    status.phase = Some(phase);
    if wanted_suspend && phase == Phase::Pending {
        return Ok(suspended(&job_name));
    }
    if phase == Phase::Running && previous != Some(Phase::Running) {
        let pod = status.pod_name.as_deref().unwrap_or_default();
        let note = format!(
            "Job {job_name} (Pod {pod}) runs MLflow run {}",
            run.run_uuid
        );
        publish(ctx, obj, EventType::Normal, "RunStarted", "Run", &note).await;
    }
    let mut outcome = outcome_of(phase, status);
    let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
    if failed > 0 {
        let attempts = obj.spec.backoff_limit.unwrap_or(0) + 1;
        outcome.message = format!(
            "{}; {failed} of {attempts} attempts failed so far, Job {job_name} retries",
            outcome.message
        );
    }
    Ok(outcome)
}

fn suspended(job_name: &str) -> Outcome {
    Outcome::not_ready(
        Reason::Suspended,
        format!("spec.suspend is true: Job {job_name} is suspended; no Pod runs until it is false"),
    )
}

/// The Job's newest Pod: the attempt that runs now, or ran last.
async fn latest_attempt(
    obj: &ProjectRun,
    pods: &Api<Pod>,
    job: &Job,
) -> Result<Option<Pod>, Failure> {
    let selector = format!(
        "{JOB_CONTROLLER_UID_LABEL}={}",
        job.uid().unwrap_or_default()
    );
    let attempts = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| kube_failure(obj, "Pods of Job", &job.name_any(), source))?;
    Ok(attempts
        .items
        .into_iter()
        .filter(|pod| apply::owned_by(pod.owner_references(), &job.uid().unwrap_or_default()))
        .max_by(|a, b| {
            (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any()))
        }))
}

/// The resource's phase for a Job, with when it ended: its final condition (Complete or
/// Failed) ends it; until then a retry is part of the run, so once an attempt ran the run stays
/// Running while the next one is pending, unless the Job is suspended (a queue took it back).
pub fn job_phase(
    job: &Job,
    attempt: Option<&Pod>,
    previous: Option<Phase>,
) -> (Phase, Option<Time>) {
    let status = job.status.as_ref();
    let final_condition = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"));
    if let Some(condition) = final_condition {
        let ended = if condition.type_ == "Complete" {
            status.and_then(|s| s.completion_time.clone())
        } else {
            None
        };
        let ended = ended.or_else(|| condition.last_transition_time.clone());
        let phase = if condition.type_ == "Complete" {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        return (phase, ended);
    }
    if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        return (Phase::Pending, None);
    }
    let phase = match attempt.map(phase_of) {
        Some(Phase::Running) => Phase::Running,
        _ if previous == Some(Phase::Running) => Phase::Running,
        _ => Phase::Pending,
    };
    (phase, None)
}

/// The experiment the run goes in: the Experiment resource's (once it has reconciled), or the
/// named one, created when missing as `mlflow run --experiment-name` does.
async fn resolve_experiment(
    ctx: &Context,
    store: &Store,
    obj: &ProjectRun,
    status: &mut ProjectRunStatus,
) -> Result<i64, Failure> {
    if let Some(reference) = &obj.spec.experiment_ref {
        let experiments: Api<Experiment> = Api::namespaced(ctx.client.clone(), &namespace(obj));
        let object = format!("Experiment {}/{}", namespace(obj), reference.name);
        let experiment = experiments
            .get_opt(&reference.name)
            .await
            .map_err(|source| Failure::Kube {
                object: object.clone(),
                source,
            })?
            .ok_or_else(|| {
                Failure::Report(Outcome::not_ready(
                    Reason::ExperimentNotFound,
                    format!("{object} does not exist"),
                ))
            })?;
        let id = experiment
            .status
            .as_ref()
            .and_then(|s| s.experiment_id.as_deref())
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or_else(|| {
                Failure::Report(Outcome::progressing(
                    Reason::Pending,
                    format!("waiting for {object} to create its MLflow experiment"),
                ))
            })?;
        status.experiment_id = Some(id.to_string());
        status.experiment_name = Some(experiment.experiment_name().to_owned());
        return Ok(id);
    }
    let name = obj.spec.experiment_name.as_deref().unwrap_or_default();
    let experiment = match store.get_experiment_by_name(name).await {
        Ok(experiment) => experiment,
        Err(store::Error::NotFound { .. }) => {
            match store
                .create_experiment(name, None, &[], &ctx.config.default_artifact_root)
                .await
            {
                // Someone created it between our read and our write: use theirs.
                Ok(_) | Err(store::Error::AlreadyExists(_)) => {
                    store.get_experiment_by_name(name).await?
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(error) => return Err(error.into()),
    };
    status.experiment_id = Some(experiment.experiment_id.to_string());
    status.experiment_name = Some(experiment.name);
    Ok(experiment.experiment_id)
}

/// The resource's run: the one status names, else the one tagged with its UID, else a new
/// one. The tag is written in the same transaction as the run, so a run that exists can
/// always be found again.
async fn ensure_run(
    store: &Store,
    obj: &ProjectRun,
    experiment_id: i64,
    recorded: Option<&str>,
) -> Result<RunInfo, Failure> {
    if let Some(run_id) = recorded {
        return Ok(store.get_run_info(run_id).await?);
    }
    if let Some(run) = find_run(store, obj, experiment_id).await? {
        return Ok(run);
    }
    let created = store.create_run(new_run(obj, experiment_id)).await?;
    Ok(created.info)
}

async fn find_run(
    store: &Store,
    obj: &ProjectRun,
    experiment_id: i64,
) -> Result<Option<RunInfo>, Failure> {
    Ok(store
        .find_run_by_tag(experiment_id, RUN_UID_TAG, &obj.uid().unwrap_or_default())
        .await?)
}

/// The run the operator creates for `obj`: named after it, tagged with its UID.
fn new_run(obj: &ProjectRun, experiment_id: i64) -> NewRun {
    NewRun {
        experiment_id,
        user_id: RUN_USER.to_owned(),
        run_name: Some(obj.name_any()),
        start_time: None,
        tags: vec![KeyValue::new(RUN_UID_TAG, obj.uid().unwrap_or_default())],
    }
}

/// Records that the Pod ended in `phase`: ends the run (unless the runner already did),
/// publishes RunFinished or RunFailed once, and says so in status.
async fn finish(
    ctx: &Context,
    store: &Store,
    obj: &ProjectRun,
    status: &mut ProjectRunStatus,
    run: &RunInfo,
    phase: Phase,
    ended: Option<Time>,
) -> Result<Outcome, Failure> {
    let completion = ended.unwrap_or_else(now);
    end_run(store, run, phase, Some(&completion)).await?;
    if status.phase != Some(phase) {
        let (reason, note) = match phase {
            Phase::Succeeded => ("RunFinished", format!("run {} FINISHED", run.run_uuid)),
            _ => ("RunFailed", format!("run {} FAILED", run.run_uuid)),
        };
        let type_ = if phase == Phase::Succeeded {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(ctx, obj, type_, reason, "Run", &note).await;
    }
    status.phase = Some(phase);
    status.completion_time.get_or_insert(completion);
    if phase == Phase::Succeeded {
        return register_model(ctx, store, obj, status, run).await;
    }
    Ok(outcome_of(phase, status))
}

/// Once the run succeeded, `registerModel` registers its model as a new version, exactly
/// once: the version carries the resource's UID tag (written in the same transaction as the
/// version) and is looked for before registering, so a crash between registering and recording
/// `registeredVersion` finds it again. Then the alias moves to it.
async fn register_model(
    ctx: &Context,
    store: &Store,
    obj: &ProjectRun,
    status: &mut ProjectRunStatus,
    run: &RunInfo,
) -> Result<Outcome, Failure> {
    let succeeded = outcome_of(Phase::Succeeded, status);
    let Some(request) = &obj.spec.register_model else {
        return Ok(succeeded);
    };
    if status.registered_version.is_some() {
        return Ok(succeeded);
    }
    let name = match (&request.model_ref, &request.model_name) {
        (Some(reference), _) => {
            let field = "spec.registerModel.modelRef";
            model_name_of(ctx, &namespace(obj), reference, field).await?
        }
        (None, name) => ensure_registered_model(store, name.as_deref().unwrap_or_default()).await?,
    };
    let uid = obj.uid().unwrap_or_default();
    let version = match registered_by(store, &name, &run.run_uuid, &uid).await? {
        Some(version) => version,
        None => {
            let model = run_model(ctx, store, run, &request.artifact_path).await?;
            let registered = store
                .create_model_version(NewModelVersion {
                    name: name.clone(),
                    source: model.source,
                    run_id: Some(run.run_uuid.clone()),
                    model_id: model.model_id,
                    tags: vec![KeyValue::new(RUN_UID_TAG, &uid)],
                    ..NewModelVersion::default()
                })
                .await?;
            registered.version
        }
    };
    if let Some(alias) = &request.alias {
        // As the REST API would: a RegisteredModel resource that declares the aliases keeps them.
        store
            .set_registered_model_alias(&name, alias, version, Actor::Api)
            .await?;
    }
    status.registered_version = Some(version);
    let alias = request
        .alias
        .as_ref()
        .map(|alias| format!(", alias '{alias}'"))
        .unwrap_or_default();
    let note = format!(
        "model '{name}' version {version}{alias} registered from run {}",
        run.run_uuid
    );
    publish(
        ctx,
        obj,
        EventType::Normal,
        "ModelRegistered",
        "Register",
        &note,
    )
    .await;
    Ok(outcome_of(Phase::Succeeded, status))
}

/// The registered model `registerModel.modelName` names, created when missing as
/// `mlflow.register_model` does.
async fn ensure_registered_model(store: &Store, name: &str) -> Result<String, Failure> {
    match store.create_registered_model(name, &[], None, None).await {
        Ok(_) | Err(store::Error::AlreadyExists(_)) => Ok(name.to_owned()),
        Err(error) => Err(error.into()),
    }
}

/// The version of `name` this resource registered from `run_id`, if any.
async fn registered_by(
    store: &Store,
    name: &str,
    run_id: &str,
    uid: &str,
) -> Result<Option<i64>, Failure> {
    let tag = KeyValue::new(RUN_UID_TAG, uid);
    // Run ids are hex: safe to put in the filter; the name and the tag are compared here.
    let page = store
        .search_model_versions(&ModelVersionSearch {
            filter: format!("run_id = '{run_id}'"),
            max_results: MAX_MODEL_VERSIONS_PAGE,
            ..ModelVersionSearch::default()
        })
        .await?;
    Ok(page
        .items
        .into_iter()
        .find(|version| version.name == name && version.tags.contains(&tag))
        .map(|version| version.version))
}

/// What a model version is registered from.
#[derive(Debug, PartialEq)]
struct ModelSource {
    source: String,
    model_id: Option<String>,
}

/// The run's model at `artifact_path`, found as `mlflow.register_model("runs:/RUN/PATH")`
/// finds it: the model logged from the run under that name (MLflow 3's `log_model(name=…)`;
/// the newest when several), else files (an `MLmodel`) at that path of the run's artifacts
/// (MLflow 2). MLflow looks at the files first; the store is asked first here because it needs
/// no call to the tracking server, and a run holds both only if it logged the model twice.
async fn run_model(
    ctx: &Context,
    store: &Store,
    run: &RunInfo,
    artifact_path: &str,
) -> Result<ModelSource, Failure> {
    let artifact_path = artifact_path.trim_matches('/');
    let logged = store
        .search_logged_models(&LoggedModelSearch {
            experiment_ids: vec![run.experiment_id],
            filter: format!("source_run_id = '{}'", run.run_uuid),
            max_results: MAX_LOGGED_MODELS_PAGE,
            ..LoggedModelSearch::default()
        })
        .await?;
    // Newest first: the search's default order.
    if let Some(model) = logged
        .items
        .into_iter()
        .find(|model| model.name == artifact_path)
    {
        return Ok(ModelSource {
            source: format!("models:/{}", model.model_id),
            model_id: Some(model.model_id),
        });
    }
    let folder = format!("{}/{artifact_path}", run.artifact_uri.trim_end_matches('/'));
    let listing = match ctx.tracking_client(store.workspace()) {
        Ok(client) => has_mlmodel(&client, &folder).await,
        Err(error) => Err(error.into()),
    };
    let listing_failed = match listing {
        Ok(true) => {
            return Ok(ModelSource {
                source: format!("runs:/{}/{artifact_path}", run.run_uuid),
                model_id: None,
            });
        }
        Ok(false) | Err(DownloadError::NotProxied(_)) => String::new(),
        Err(error) => format!(" (listing {folder} failed: {error})"),
    };
    Err(Failure::Report(Outcome::not_ready(
        Reason::LoggedModelNotFound,
        format!(
            "run {} succeeded but has no model at '{artifact_path}': no model logged from it \
             with name='{artifact_path}' and no MLmodel there{listing_failed}; nothing was \
             registered (log the model there or fix spec.registerModel.artifactPath)",
            run.run_uuid
        ),
    )))
}

/// Writes the run status `phase` means, unless the run already ended.
async fn end_run(
    store: &Store,
    run: &RunInfo,
    phase: Phase,
    ended: Option<&Time>,
) -> Result<(), Failure> {
    let Some(run_status) = run_status_for(&run.status, phase) else {
        return Ok(());
    };
    let end_time = ended.map_or_else(now_millis, |time| time.0.as_millisecond());
    store
        .end_run_if_unfinished(&run.run_uuid, run_status, end_time)
        .await?;
    Ok(())
}

/// The status the operator writes on a run whose Pod is in `phase`: none while it runs, and
/// none once the run has a terminal status (the runner's own, or an earlier write), which is
/// never replaced.
pub fn run_status_for(current: &str, phase: Phase) -> Option<&'static str> {
    if TERMINAL_RUN_STATUSES.contains(&current) {
        return None;
    }
    match phase {
        Phase::Pending | Phase::Running => None,
        Phase::Succeeded => Some("FINISHED"),
        Phase::Failed => Some("FAILED"),
        Phase::Killed => Some("KILLED"),
    }
}

/// The resource's phase for a Pod: Kubernetes' own phase, with an unknown or missing one
/// read as Pending (the kubelet has not reported yet).
pub fn phase_of(pod: &Pod) -> Phase {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        _ => Phase::Pending,
    }
}

fn is_over(phase: Phase) -> bool {
    matches!(phase, Phase::Succeeded | Phase::Failed | Phase::Killed)
}

/// What the conditions say in `phase`: under way while Pending or Running, Ready once
/// Succeeded, ended (neither under way nor stalled: nothing to retry) once Failed or Killed.
pub fn outcome_of(phase: Phase, status: &ProjectRunStatus) -> Outcome {
    let run = status.run_id.as_deref().unwrap_or_default();
    let pod = status.pod_name.as_deref().unwrap_or_default();
    match phase {
        Phase::Pending => {
            Outcome::progressing(Reason::Pending, format!("run {run}: Pod {pod} is pending"))
        }
        Phase::Running => {
            Outcome::progressing(Reason::Running, format!("run {run}: Pod {pod} is running"))
        }
        Phase::Succeeded => Outcome::ready(format!("run {run} FINISHED: Pod {pod} succeeded")),
        Phase::Failed => Outcome::ended(
            Reason::Failed,
            format!("run {run} FAILED: Pod {pod} failed (kubectl logs {pod} -c run)"),
        ),
        Phase::Killed => Outcome::ended(
            Reason::Killed,
            format!("run {run} KILLED: the ProjectRun was deleted"),
        ),
    }
}

/// When the main container stopped, as the kubelet reports it.
fn finished_at(pod: &Pod) -> Option<Time> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == builder::MAIN_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .finished_at
        .clone()
}

/// Stores the log of the ended Pod's main container as the run's artifact [`POD_LOG_PATH`],
/// through the tracking server's artifact API. Best effort: a log that cannot be read (kwok,
/// a node that is gone) or stored is a Warning event, never a reason to leave the run open.
async fn store_pod_log(
    ctx: &Context,
    store: &Store,
    obj: &ProjectRun,
    pods: &Api<Pod>,
    pod_name: &str,
    run: &RunInfo,
) {
    let uri = format!("{}/{POD_LOG_PATH}", run.artifact_uri.trim_end_matches('/'));
    let stored = async {
        let params = LogParams {
            container: Some(builder::MAIN_CONTAINER.to_owned()),
            limit_bytes: Some(POD_LOG_LIMIT_BYTES),
            ..LogParams::default()
        };
        let log = pods
            .logs(pod_name, &params)
            .await
            .map_err(|error| format!("reading it failed: {error}"))?;
        let client = ctx
            .tracking_client(store.workspace())
            .map_err(|error| error.to_string())?;
        upload_artifact(&client, &uri, log.as_bytes())
            .await
            .map_err(|error| format!("uploading it to {uri} failed: {error}"))
    }
    .await;
    if let Err(why) = stored {
        let note = format!("the log of Pod {pod_name} was not stored as {POD_LOG_PATH}: {why}");
        publish(
            ctx,
            obj,
            EventType::Warning,
            "PodLogNotStored",
            "StoreLog",
            &note,
        )
        .await;
    }
}

/// Whether `obj` controls `object` (a Pod or Job of the same name made by hand is left alone).
fn owned_by(object: &impl ResourceExt, obj: &ProjectRun) -> bool {
    apply::owned_by(object.owner_references(), &obj.uid().unwrap_or_default())
}

/// The Pod or Job `name`, if it exists; one that belongs to someone else is refused, since
/// applying ours would take it over.
async fn get_ours<K>(
    api: &Api<K>,
    obj: &ProjectRun,
    kind: &str,
    name: &str,
) -> Result<Option<K>, Failure>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let object = api
        .get_opt(name)
        .await
        .map_err(|source| kube_failure(obj, kind, name, source))?;
    match object {
        Some(object) if !owned_by(&object, obj) => Err(not_ours(kind, &object)),
        object => Ok(object),
    }
}

/// The answer when a Pod or Job of our name belongs to someone else.
fn not_ours(kind: &str, object: &impl ResourceExt) -> Failure {
    Failure::Report(Outcome::not_ready(
        Reason::InvalidSpec,
        format!(
            "{kind} {} exists and does not belong to this ProjectRun (owners: {:?}); \
             delete it or rename the ProjectRun",
            object.name_any(),
            object
                .owner_references()
                .iter()
                .map(|r| &r.name)
                .collect::<Vec<_>>()
        ),
    ))
}

/// Deletes the Pod or Job `name` if `obj` owns it.
async fn delete_owned<T: apply::Owned>(
    obj: &ProjectRun,
    api: &Api<T>,
    kind: &str,
    name: &str,
) -> Result<(), Failure> {
    let found = api
        .get_opt(name)
        .await
        .map_err(|source| kube_failure(obj, kind, name, source))?;
    if let Some(object) = found.filter(|object| owned_by(object, obj)) {
        // Gone already, or replaced by another of the same name: nothing to do either way.
        apply::delete_exactly(api, &object)
            .await
            .map_err(|source| kube_failure(obj, kind, name, source))?;
    }
    Ok(())
}

async fn delete_pod(obj: &ProjectRun, pods: &Api<Pod>, pod: &Pod) -> Result<(), Failure> {
    // Gone already, or replaced by another Pod of the same name: nothing to do either way.
    apply::delete_exactly(pods, pod)
        .await
        .map(drop)
        .map_err(|source| kube_failure(obj, "Pod", &pod.name_any(), source))
}

fn kube_failure(obj: &ProjectRun, kind: &str, name: &str, source: kube::Error) -> Failure {
    Failure::Kube {
        object: format!("{kind} {}/{name} of {}", namespace(obj), describe(obj)),
        source,
    }
}

fn namespace(obj: &ProjectRun) -> String {
    obj.namespace().unwrap_or_default()
}

fn now_millis() -> i64 {
    now().0.as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::test_support::from_yaml;

    fn pod(status: &str) -> Pod {
        from_yaml(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n{status}"
        ))
    }

    #[test]
    fn the_phase_follows_the_pods_and_an_unreported_one_is_pending() {
        let cases = [
            ("", Phase::Pending),
            ("status: {}", Phase::Pending),
            ("status: {phase: Pending}", Phase::Pending),
            ("status: {phase: Unknown}", Phase::Pending),
            ("status: {phase: Running}", Phase::Running),
            ("status: {phase: Succeeded}", Phase::Succeeded),
            ("status: {phase: Failed}", Phase::Failed),
        ];
        for (status, expected) in cases {
            assert_eq!(phase_of(&pod(status)), expected, "{status}");
        }
    }

    fn job(spec_and_status: &str) -> Job {
        from_yaml(&format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: j}}\n{spec_and_status}"
        ))
    }

    #[test]
    fn a_job_ends_the_run_by_its_final_condition_and_a_retry_does_not() {
        let t = "2026-12-07T04:00:00Z";
        let done = "2026-12-07T04:05:00Z";
        let running = pod("status: {phase: Running}");
        let failed = pod("status: {phase: Failed}");
        let pending = pod("status: {phase: Pending}");
        let cases = [
            ("spec: {suspend: true}", None, None, Phase::Pending),
            ("spec: {suspend: false}", None, None, Phase::Pending),
            ("status: {active: 1}", Some(&pending), None, Phase::Pending),
            ("status: {active: 1}", Some(&running), None, Phase::Running),
            // An attempt failed, the next one is on its way: the run goes on.
            (
                "status: {failed: 1}",
                Some(&failed),
                Some(Phase::Running),
                Phase::Running,
            ),
            (
                "status: {failed: 1, active: 1}",
                Some(&pending),
                Some(Phase::Running),
                Phase::Running,
            ),
            // Failed before it ever ran, with retries left: not over either.
            (
                "status: {failed: 1}",
                Some(&failed),
                Some(Phase::Pending),
                Phase::Pending,
            ),
            // Taken back by a queue.
            (
                "spec: {suspend: true}\nstatus: {failed: 1}",
                Some(&failed),
                Some(Phase::Running),
                Phase::Pending,
            ),
            // Kubernetes 1.31+ sets FailureTarget/SuccessCriteriaMet first: not final yet.
            (
                &format!(
                    "status: {{conditions: [{{type: FailureTarget, status: 'True', lastTransitionTime: '{t}'}}]}}"
                ),
                Some(&failed),
                Some(Phase::Running),
                Phase::Running,
            ),
        ];
        for (text, attempt, previous, expected) in cases {
            assert_eq!(
                job_phase(&job(text), attempt, previous),
                (expected, None),
                "{text}"
            );
        }
        let complete = job(&format!(
            "status: {{completionTime: '{done}', conditions: [\
             {{type: SuccessCriteriaMet, status: 'True', lastTransitionTime: '{t}'}}, \
             {{type: Complete, status: 'True', lastTransitionTime: '{t}'}}]}}"
        ));
        let (phase, ended) = job_phase(&complete, Some(&running), Some(Phase::Running));
        assert_eq!(phase, Phase::Succeeded);
        assert_eq!(ended.unwrap().0.to_string(), done);
        let exhausted = job(&format!(
            "status: {{failed: 3, conditions: [\
             {{type: Failed, status: 'True', reason: BackoffLimitExceeded, lastTransitionTime: '{done}'}}]}}"
        ));
        let (phase, ended) = job_phase(&exhausted, Some(&failed), Some(Phase::Running));
        assert_eq!(phase, Phase::Failed);
        assert_eq!(ended.unwrap().0.to_string(), done);
        let not_yet = job("status: {conditions: [{type: Complete, status: 'False'}]}");
        assert_eq!(job_phase(&not_yet, None, None), (Phase::Pending, None));
    }

    #[test]
    fn the_run_ends_once_and_a_terminal_status_is_never_replaced() {
        let cases = [
            ("RUNNING", Phase::Pending, None),
            ("RUNNING", Phase::Running, None),
            ("RUNNING", Phase::Succeeded, Some("FINISHED")),
            ("RUNNING", Phase::Failed, Some("FAILED")),
            ("RUNNING", Phase::Killed, Some("KILLED")),
            ("SCHEDULED", Phase::Failed, Some("FAILED")),
            // The runner in the Pod ended it first: its status stands.
            ("FAILED", Phase::Succeeded, None),
            ("FINISHED", Phase::Failed, None),
            ("KILLED", Phase::Succeeded, None),
            ("FINISHED", Phase::Killed, None),
        ];
        for (current, phase, expected) in cases {
            assert_eq!(
                run_status_for(current, phase),
                expected,
                "{current} {phase:?}"
            );
        }
    }

    #[test]
    fn the_run_is_keyed_by_the_resources_uid() {
        let run: ProjectRun = from_yaml(
            "apiVersion: ferroflow.dev/v1alpha1
kind: ProjectRun
metadata: {name: fraud-train, namespace: ml, uid: 6f1c2a0e-3b7d-4e52-9a51-0c8d2f4b7e11}
spec: {experimentName: fraud, image: i, projectDir: /p}
",
        );
        let new = new_run(&run, 7);
        assert_eq!(new.experiment_id, 7);
        assert_eq!(new.run_name.as_deref(), Some("fraud-train"));
        assert_eq!(
            new.tags,
            vec![KeyValue::new(
                RUN_UID_TAG,
                "6f1c2a0e-3b7d-4e52-9a51-0c8d2f4b7e11"
            )]
        );
    }

    #[test]
    fn running_is_under_way_success_is_ready_and_failure_is_over_not_stalled() {
        let status = ProjectRunStatus {
            run_id: Some("r1".into()),
            pod_name: Some("fraud-train-run".into()),
            ..ProjectRunStatus::default()
        };
        let running = outcome_of(Phase::Running, &status);
        assert!(running.is_progressing());
        assert_eq!(running.reason, Reason::Running);
        assert!(outcome_of(Phase::Pending, &status).is_progressing());
        assert!(outcome_of(Phase::Succeeded, &status).is_ready());
        for phase in [Phase::Failed, Phase::Killed] {
            let over = outcome_of(phase, &status);
            // Over: nothing to retry, nothing for a human to fix.
            assert!(
                !over.is_ready() && !over.is_stalled() && !over.is_progressing(),
                "{phase:?}"
            );
        }
        let failed = outcome_of(Phase::Failed, &status);
        assert_eq!(failed.reason, Reason::Failed);
        // As the Argo CD health samples show a failed run: Ready, Progressing and Stalled all
        // False, the failure remembered.
        let mut state = ReconcileState::default();
        state.record(Some(1), &failed, &now());
        for type_ in ["Ready", "Progressing", "Stalled"] {
            assert_eq!(state.condition(type_).unwrap().status, "False", "{type_}");
        }
        assert_eq!(state.last_failure.unwrap().reason, "Failed");
    }
}
