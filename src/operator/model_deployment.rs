//! Reconciles a ModelDeployment: resolve each traffic leg's alias (or `version`) to a version
//! in the registry, apply the builder's Deployments, Services and HTTPRoute, prune the legs no
//! longer asked for, and follow the rollouts. A rollout the Deployment controller gives up on
//! (progress deadline exceeded) is put back on the leg's last good version and that version is
//! not tried again until the alias moves or the spec changes. Children go with the resource
//! through their owner references; the finalizer is for the registry, whose versions lose the
//! tag that says this resource serves them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::apply::{apply_owned, prune_owned};
use super::build::model_deployment::{
    self as builder, DEPLOYMENT_LABEL, LEG_LABEL, Objects, STARTUP_WINDOW_SECONDS, ServingSettings,
    VERSION_ANNOTATION, http_route_resource, leg_object_name,
};
use super::context::Context;
use super::reconcile::{Failure, Reconciler, publish};
use super::wake::concerns_model;
use crate::crd::model_deployment::{LegStatus, PINNED_LEG, Target};
use crate::crd::{
    ModelDeployment, ModelDeploymentStatus, Outcome, Reason, ReconcileState, RegisteredModel,
};
use crate::store::notify::RegistryChange;
use crate::store::registry::{Actor, TargetType};
use crate::store::{self, KeyValue, Store, now_millis};

/// The Deployment condition reason with which the Deployment controller gives up a rollout.
const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// Crashes of one container of a new version's Pod after which the version counts as unable
/// to serve: a model that cannot load crashes the same way each time, and waiting out the
/// progress deadline would only delay the rollback. One crash may be bad luck.
const CRASH_LIMIT: i32 = 2;
/// The kubelet's waiting reason between the restarts of a crashing container.
const CRASH_LOOP: &str = "CrashLoopBackOff";
/// Waiting reasons of a container that do not pass by themselves while the image stays.
const HOPELESS_WAITING: [&str; 4] = [
    "ErrImageNeverPull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerError",
];
/// Seconds a new Pod may go without becoming ready: the model's download plus the startup
/// probe's window.
const POD_READY_ALLOWANCE_SECONDS: i64 = 60 + STARTUP_WINDOW_SECONDS;
/// At most this much of a container's termination message goes into status and events.
const MAX_WHY_LEN: usize = 300;
/// Values of the registry tag that tells where a version runs.
const TAG_SERVING: &str = "serving";
const TAG_ROLLED_BACK: &str = "rolled-back";

/// Where a Deployment's rollout stands, as `kubectl rollout status` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the current Pod template and is available.
    Complete,
    /// Under way; the message says how far.
    InProgress(String),
    /// The Deployment controller gave up (progress deadline exceeded); its message says why.
    Failed(String),
}

/// The rollout state of `deployment` as the API server returned it.
pub fn rollout_state(deployment: &Deployment) -> Rollout {
    let Some(status) = &deployment.status else {
        return Rollout::InProgress("waiting for the Deployment controller".to_owned());
    };
    if status.observed_generation.unwrap_or(0) < deployment.metadata.generation.unwrap_or(0) {
        return Rollout::InProgress(
            "waiting for the Deployment controller to see the new template".to_owned(),
        );
    }
    let gave_up = status.conditions.iter().flatten().find(|condition| {
        condition.type_ == "Progressing"
            && condition.status == "False"
            && condition.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
    });
    if let Some(condition) = gave_up {
        let why = condition
            .message
            .clone()
            .unwrap_or_else(|| "the progress deadline was exceeded".to_owned());
        return Rollout::Failed(why);
    }
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        Rollout::InProgress(format!("{updated} of {desired} replicas updated"))
    } else if total > updated {
        Rollout::InProgress(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        Rollout::InProgress(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        Rollout::Complete
    }
}

/// Why the Pods of `version` cannot serve, if one of them shows it: a container that crashed
/// [`CRASH_LIMIT`] times (a model that cannot load) or waits for something that will not come
/// (an image that is not there), a Pod that failed, or one not ready within
/// `ready_allowance_seconds` of its start. None while they may still come up.
pub fn unservable(
    pods: &[Pod],
    version: i64,
    now: Timestamp,
    ready_allowance_seconds: i64,
) -> Option<String> {
    let version = version.to_string();
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(VERSION_ANNOTATION))
                == Some(&version)
        })
        .find_map(|pod| {
            pod_failure(pod, now, ready_allowance_seconds)
                .map(|why| format!("Pod {}: {why}", pod.metadata.name.as_deref().unwrap_or("")))
        })
}

fn pod_failure(pod: &Pod, now: Timestamp, ready_allowance_seconds: i64) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let why = status.message.as_deref().or(status.reason.as_deref());
        return Some(format!("failed ({})", why.unwrap_or("no reason given")));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in containers {
        if let Some(why) = container_failure(container) {
            return Some(format!("container {} {why}", container.name));
        }
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    let started = status.start_time.as_ref()?.0;
    let waited = now.as_second() - started.as_second();
    (!ready && waited > ready_allowance_seconds)
        .then(|| format!("not ready {waited}s after it started"))
}

fn container_failure(container: &ContainerStatus) -> Option<String> {
    let waiting = container
        .state
        .as_ref()
        .and_then(|state| state.waiting.as_ref())
        .and_then(|waiting| {
            let reason = waiting.reason.as_deref()?;
            Some((reason, waiting.message.as_deref().unwrap_or_default()))
        });
    if let Some((reason, message)) = waiting.filter(|(reason, _)| HOPELESS_WAITING.contains(reason))
    {
        return Some(format!("cannot start ({reason}: {})", last_line(message)));
    }
    // The container that ran last, if it ended: still terminated, or waiting to restart.
    let ended = container
        .state
        .as_ref()
        .and_then(|state| state.terminated.as_ref());
    let last = ended.or_else(|| {
        container
            .last_state
            .as_ref()
            .and_then(|state| state.terminated.as_ref())
    });
    let crashes = container.restart_count
        + i32::from(ended.is_some() || waiting.is_some_and(|(reason, _)| reason == CRASH_LOOP));
    if crashes < CRASH_LIMIT {
        return None;
    }
    let last = last
        .map(|terminated| {
            let said = terminated
                .message
                .as_deref()
                .map(last_line)
                .filter(|line| !line.is_empty())
                .or(terminated.reason.clone())
                .unwrap_or_default();
            format!("; last exit code {}: {said}", terminated.exit_code)
        })
        .unwrap_or_default();
    let backing_off = waiting
        .map(|(reason, _)| format!(", {reason}"))
        .unwrap_or_default();
    Some(format!("crashed {crashes} times{backing_off}{last}"))
}

/// The last non-empty line of a container's message (a traceback ends with the error), cut
/// to [`MAX_WHY_LEN`] characters.
fn last_line(message: &str) -> String {
    let line = message
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default();
    line.chars().take(MAX_WHY_LEN).collect()
}

/// The version a leg's Deployment should run: the resolved one, unless that one failed
/// before (then the last good one keeps serving).
pub fn target_version(resolved: i64, serving: Option<i64>, failed: Option<i64>) -> i64 {
    match serving {
        Some(serving) if failed == Some(resolved) => serving,
        _ => resolved,
    }
}

/// What one leg's rollout means for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegDecision {
    /// The target version serves on every replica.
    Serving,
    /// The target version is rolling out.
    RollingOut(String),
    /// The target version failed: put the Deployment back on `to`.
    RollBack { failed: i64, to: i64, why: String },
    /// Held on the last good version since `failed` failed before.
    HeldBack { failed: i64 },
    /// The target version failed and there is nothing to go back to.
    Stuck(String),
}

/// Decides a leg from its resolved and target versions, the last good one and the rollout.
pub fn decide(resolved: i64, target: i64, serving: Option<i64>, rollout: &Rollout) -> LegDecision {
    if target != resolved {
        return LegDecision::HeldBack { failed: resolved };
    }
    match rollout {
        Rollout::Complete => LegDecision::Serving,
        Rollout::InProgress(message) => LegDecision::RollingOut(message.clone()),
        Rollout::Failed(why) => match serving {
            Some(to) if to != target => LegDecision::RollBack {
                failed: target,
                to,
                why: why.clone(),
            },
            _ => LegDecision::Stuck(why.clone()),
        },
    }
}

/// The registry tag values a leg's versions carry: serving → `serving`, failed → `rolled-back`.
pub fn deployment_tags(legs: &[LegStatus]) -> BTreeMap<i64, &'static str> {
    let mut tags = BTreeMap::new();
    for leg in legs {
        if let Some(failed) = leg.failed_version {
            tags.insert(failed, TAG_ROLLED_BACK);
        }
    }
    // A version serving on one leg is serving, whatever another leg thinks of it.
    for leg in legs {
        if let Some(serving) = leg.serving_version {
            tags.insert(serving, TAG_SERVING);
        }
    }
    tags
}

/// Names of the owned objects of one kind that are not in `objects`: what to prune.
fn names<'a, T: kube::Resource + 'a>(objects: impl IntoIterator<Item = &'a T>) -> BTreeSet<String>
where
    T::DynamicType: Default,
{
    objects.into_iter().map(ResourceExt::name_any).collect()
}

impl ModelDeployment {
    /// The registry tag key that marks the versions this resource serves.
    fn tag_key(&self) -> String {
        format!(
            "ferroflow.deployment/{}.{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    /// The registered model's name: the RegisteredModel resource's, or `modelName`.
    async fn model_name(&self, ctx: &Context) -> Result<String, Failure> {
        let Some(model_ref) = &self.spec.model_ref else {
            return Ok(self.spec.model_name.clone().unwrap_or_default());
        };
        let namespace = self.namespace().unwrap_or_default();
        let api: Api<RegisteredModel> = Api::namespaced(ctx.client.clone(), &namespace);
        match api.get_opt(&model_ref.name).await {
            Ok(Some(model)) => Ok(model.model_name().to_owned()),
            Ok(None) => Err(Failure::Report(Outcome::not_ready(
                Reason::ModelNotFound,
                format!(
                    "RegisteredModel {namespace}/{} does not exist",
                    model_ref.name
                ),
            ))),
            Err(source) => Err(Failure::Kube {
                object: format!("RegisteredModel {namespace}/{}", model_ref.name),
                source,
            }),
        }
    }

    fn settings(ctx: &Context) -> ServingSettings {
        ServingSettings {
            runtime_image: ctx.config.serving_image.clone(),
            ferroflow_image: ctx.config.ferroflow_image.clone(),
            tracking_uri: ctx
                .config
                .tracking_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            gateway: ctx.config.gateway.clone(),
        }
    }

    fn build(
        &self,
        model_name: &str,
        targets: &BTreeMap<String, i64>,
        ctx: &Context,
        with_route: bool,
    ) -> Result<Objects, Failure> {
        builder::build(self, model_name, targets, &Self::settings(ctx), with_route).map_err(
            |error| Failure::Report(Outcome::not_ready(Reason::InvalidSpec, error.to_string())),
        )
    }

    /// Why the Pods of `leg` running `version` cannot serve, if they show it.
    async fn unservable_pods(
        &self,
        ctx: &Context,
        leg: &str,
        version: i64,
    ) -> Result<Option<String>, Failure> {
        let namespace = self.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let selector = format!("{DEPLOYMENT_LABEL}={},{LEG_LABEL}={leg}", self.name_any());
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Failure::Kube {
                object: format!("the Pods of {namespace}/{} leg {leg}", self.name_any()),
                source,
            })?;
        Ok(unservable(
            &listed.items,
            version,
            Timestamp::now(),
            POD_READY_ALLOWANCE_SECONDS,
        ))
    }

    /// Makes the registry tags match `legs`, given the ones `previous` recorded. A version a
    /// ModelVersion resource declares the tags of refuses the write: that is no reason to stop
    /// serving, so it is logged.
    async fn record_tags(
        &self,
        ctx: &Context,
        model: &str,
        previous: &[LegStatus],
        legs: &[LegStatus],
    ) {
        let store = ctx.store_for(self);
        let key = self.tag_key();
        let before = deployment_tags(previous);
        let after = deployment_tags(legs);
        for (version, value) in &after {
            if before.get(version) == Some(value) {
                continue;
            }
            let tag = KeyValue {
                key: key.clone(),
                value: (*value).to_owned(),
            };
            if let Err(error) = store
                .set_model_version_tag(model, *version, &tag, Actor::Api)
                .await
            {
                tracing::warn!(%error, version, "could not tag the version with where it serves");
            }
            if let Some(alias) = serving_aliases(legs).get(version) {
                self.record_promotion(ctx, model, alias, *version).await;
            }
        }
        for version in before.keys().filter(|version| !after.contains_key(version)) {
            for key in [&key, &self.promotion_tag_key()] {
                if let Err(error) = remove_tag(&store, model, *version, key).await {
                    tracing::warn!(%error, version, "could not remove the serving tag of the version");
                }
            }
        }
    }

    /// The registry tag key that names, on a version this resource serves through an alias,
    /// the promotion history entry that moved the alias there.
    fn promotion_tag_key(&self) -> String {
        format!("{}.promotion", self.tag_key())
    }

    /// Tags `version`, now serving `alias`, with the id of the history entry that put it there
    /// (who promoted it, and the policies' verdicts: `GET /api/2.0/ferroflow/promotions`).
    /// Nothing when the alias has moved on meanwhile: the next rollout tags its own version.
    async fn record_promotion(&self, ctx: &Context, model: &str, alias: &str, version: i64) {
        let store = ctx.store_for(self);
        let holder = match store
            .promotion_at(model, TargetType::Alias, alias, now_millis())
            .await
        {
            Ok(holder) => holder,
            Err(error) => {
                tracing::warn!(%error, version, "could not look up the promotion of the served version");
                return;
            }
        };
        let Some(id) = holder.promotion_id.filter(|_| holder.versions == [version]) else {
            return;
        };
        let tag = KeyValue {
            key: self.promotion_tag_key(),
            value: id.to_string(),
        };
        if let Err(error) = store
            .set_model_version_tag(model, version, &tag, Actor::Api)
            .await
        {
            tracing::warn!(%error, version, "could not tag the version with its promotion");
        }
    }
}

/// The alias each version serves through, for alias legs (a pinned version has no promotion).
fn serving_aliases(legs: &[LegStatus]) -> BTreeMap<i64, &str> {
    legs.iter()
        .filter(|leg| leg.name != PINNED_LEG)
        .filter_map(|leg| Some((leg.serving_version?, leg.name.as_str())))
        .collect()
}

/// Removes the tag `key` from `version`; a version or model deleted since has none to remove.
async fn remove_tag(
    store: &Store,
    model: &str,
    version: i64,
    key: &str,
) -> Result<(), store::Error> {
    match store
        .delete_model_version_tag(model, version, key, Actor::Api)
        .await
    {
        Ok(()) | Err(store::Error::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Why `model` (not found in the resource's workspace) cannot be served: said plainly when
/// it is in `default`, where a release before namespaces were workspaces found every model.
/// The running Deployments are left as they are either way.
async fn not_in_workspace(
    ctx: &Context,
    store: &Store,
    model: &str,
    not_found: store::Error,
) -> Failure {
    let elsewhere = ctx.unscoped_store();
    if store.workspace() == elsewhere.workspace()
        || elsewhere.get_registered_model(model).await.is_err()
    {
        return not_found.into();
    }
    Failure::Report(Outcome::not_ready(
        Reason::ModelNotFound,
        format!(
            "registered model '{model}' is in workspace '{}', not in '{}', the workspace of this \
             resource's namespace: register it there (MLFLOW_WORKSPACE={}) or declare it with a \
             RegisteredModel in this namespace; the running Deployments are left as they are",
            elsewhere.workspace(),
            store.workspace(),
            store.workspace()
        ),
    ))
}

/// Whether the HTTPRoute kind is installed: asked once per operator run.
async fn http_routes_installed(ctx: &Context) -> Result<bool, Failure> {
    let resource = http_route_resource();
    ctx.http_routes
        .get_or_try_init(|| async {
            match ctx
                .client
                .list_api_group_resources(&resource.api_version)
                .await
            {
                Ok(list) => Ok(list.resources.iter().any(|r| r.name == resource.plural)),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                Err(source) => Err(Failure::Kube {
                    object: format!("the API group {}", resource.api_version),
                    source,
                }),
            }
        })
        .await
        .copied()
}

fn apply_failure(error: super::error::Error) -> Failure {
    Failure::Operator(error)
}

impl Reconciler for ModelDeployment {
    type Status = ModelDeploymentStatus;
    const KIND: &'static str = "ModelDeployment";
    /// Every object it owns carries its owner reference (the garbage collector removes them),
    /// but the registry's tags on the versions it served must be removed by the operator.
    const NEEDS_FINALIZER: bool = true;

    async fn cleanup(&self, ctx: &Context) -> Result<(), Failure> {
        let Some(status) = &self.status else {
            return Ok(());
        };
        let Some(model) = status.model_name.as_deref() else {
            return Ok(());
        };
        let store = ctx.store_for(self);
        let keys = [self.tag_key(), self.promotion_tag_key()];
        let tagged: Vec<(i64, &String)> = deployment_tags(&status.legs)
            .into_keys()
            .flat_map(|version| keys.iter().map(move |key| (version, key)))
            .collect();
        for (version, key) in tagged {
            if let Err(error) = remove_tag(&store, model, version, key).await {
                match Failure::from(error) {
                    // The database is down: keep the finalizer and retry.
                    Failure::Store(error) => return Err(Failure::Store(error)),
                    // Refused (e.g. a ModelVersion resource owns the tags): no reason to
                    // keep the resource.
                    refused => {
                        tracing::warn!(
                            ?refused,
                            version,
                            "could not remove the serving tag of the version"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn wakes_on(&self, change: &RegistryChange) -> bool {
        let name = self
            .status
            .as_ref()
            .and_then(|status| status.model_name.as_deref())
            .or(self.spec.model_name.as_deref());
        name.is_some_and(|name| concerns_model(change, self, name))
    }

    fn status(&self) -> Option<&ModelDeploymentStatus> {
        self.status.as_ref()
    }

    fn state(status: &ModelDeploymentStatus) -> &ReconcileState {
        &status.state
    }

    fn state_mut(status: &mut ModelDeploymentStatus) -> &mut ReconcileState {
        &mut status.state
    }

    async fn sync(
        &self,
        ctx: &Context,
        status: &mut ModelDeploymentStatus,
    ) -> Result<Outcome, Failure> {
        if self.spec.suspend {
            let serving = status
                .serving_version
                .map(|v| format!("version {v} serving; "))
                .unwrap_or_default();
            return Ok(Outcome::ready(format!(
                "{serving}suspended: the running Deployments are left as they are"
            )));
        }
        let model = self.model_name(ctx).await?;
        status.model_name = Some(model.clone());
        let store = ctx.store_for(self);
        match store.get_registered_model(&model).await {
            Ok(_) => {}
            Err(error @ store::Error::NotFound { .. }) => {
                return Err(not_in_workspace(ctx, &store, &model, error).await);
            }
            Err(error) => return Err(error.into()),
        }

        // Resolve every leg first: one that does not resolve leaves everything as it runs.
        let planned = builder::plan(self);
        let mut resolved = BTreeMap::new();
        for leg in &planned {
            let version = match leg.leg.target {
                Target::Alias(alias) => {
                    store
                        .get_model_version_by_alias(&model, alias)
                        .await?
                        .version
                }
                Target::Version(version) => store.get_model_version(&model, version).await?.version,
            };
            resolved.insert(leg.leg.name.to_owned(), version);
        }

        // A changed spec is worth trying the failed version again.
        let spec_changed = status.state.observed_generation != self.metadata.generation;
        let previous: BTreeMap<String, LegStatus> = status
            .legs
            .iter()
            .map(|leg| (leg.name.clone(), leg.clone()))
            .collect();
        let mut targets = BTreeMap::new();
        let mut memory = BTreeMap::new();
        for (leg, &version) in &resolved {
            let before = previous.get(leg);
            let serving = before.and_then(|leg| leg.serving_version);
            let failure = before
                .filter(|before| !spec_changed && before.failed_version == Some(version))
                .map(|before| (version, before.failure_reason.clone().unwrap_or_default()));
            targets.insert(
                leg.clone(),
                target_version(version, serving, failure.as_ref().map(|(v, _)| *v)),
            );
            memory.insert(leg.clone(), (serving, failure));
        }

        let with_route = http_routes_installed(ctx).await?;
        let mut objects = self.build(&model, &targets, ctx, with_route)?;
        let namespace = self.namespace().unwrap_or_default();
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);

        let mut legs = Vec::new();
        let mut rolling = Vec::new();
        let mut rolled_back = Vec::new();
        let mut stuck = Vec::new();
        for (planned, index) in planned.iter().zip(0..) {
            let leg = planned.leg.name;
            let deployment_name = leg_object_name(self, leg).map_err(|error| {
                Failure::Report(Outcome::not_ready(Reason::InvalidSpec, error.to_string()))
            })?;
            let running = deployments
                .get_opt(&deployment_name)
                .await
                .map_err(|source| Failure::Kube {
                    object: format!("Deployment {namespace}/{deployment_name}"),
                    source,
                })?
                .as_ref()
                .and_then(template_version);
            let resolved_version = resolved[leg];
            let (mut serving, mut failure) = memory[leg].clone();
            let target = targets[leg];
            if running != Some(target) {
                let from = running.map(|v| format!(" (was {v})")).unwrap_or_default();
                publish(
                    ctx,
                    self,
                    EventType::Normal,
                    "RolloutStarted",
                    "Rollout",
                    &format!("rolling out version {target} of model '{model}' on leg {leg}{from}"),
                )
                .await;
            }
            let mut applied = apply_owned(&ctx.client, self, &objects.deployments[index], &())
                .await
                .map_err(apply_failure)?;
            let mut rollout = rollout_state(&applied);
            // A new version whose Pods show they cannot serve fails now, not at the deadline.
            if matches!(rollout, Rollout::InProgress(_))
                && serving != Some(target)
                && let Some(why) = self.unservable_pods(ctx, leg, target).await?
            {
                rollout = Rollout::Failed(why);
            }
            match decide(resolved_version, target, serving, &rollout) {
                LegDecision::Serving => {
                    if serving != Some(target) {
                        publish(
                            ctx,
                            self,
                            EventType::Normal,
                            "RolloutComplete",
                            "Rollout",
                            &format!("version {target} of model '{model}' serves on leg {leg}"),
                        )
                        .await;
                    }
                    serving = Some(target);
                }
                LegDecision::RollingOut(message) => {
                    rolling.push(format!(
                        "rolling out version {target} on leg {leg}: {message}"
                    ));
                }
                LegDecision::HeldBack { failed: version } => {
                    let why = failure
                        .as_ref()
                        .map(|(_, why)| why.as_str())
                        .unwrap_or_default();
                    rolled_back.push(rolled_back_message(&model, leg, version, why, target));
                }
                LegDecision::RollBack {
                    failed: version,
                    to,
                    why,
                } => {
                    targets.insert(leg.to_owned(), to);
                    objects = self.build(&model, &targets, ctx, with_route)?;
                    applied = apply_owned(&ctx.client, self, &objects.deployments[index], &())
                        .await
                        .map_err(apply_failure)?;
                    rolled_back.push(rolled_back_message(&model, leg, version, &why, to));
                    failure = Some((version, why));
                }
                LegDecision::Stuck(why) => {
                    stuck.push(format!(
                        "version {target} of model '{model}' cannot roll out on leg {leg}: {why}"
                    ));
                }
            }
            let counts = applied.status.as_ref();
            legs.push(LegStatus {
                name: leg.to_owned(),
                deployment: deployment_name,
                weight: planned.leg.weight,
                resolved_version: Some(resolved_version),
                serving_version: serving,
                failed_version: failure.as_ref().map(|(version, _)| *version),
                failure_reason: failure.map(|(_, why)| why),
                replicas: planned.replicas,
                ready_replicas: counts.and_then(|s| s.ready_replicas).unwrap_or(0),
                updated_replicas: counts.and_then(|s| s.updated_replicas).unwrap_or(0),
            });
        }

        for service in &objects.services {
            apply_owned(&ctx.client, self, service, &())
                .await
                .map_err(apply_failure)?;
        }
        let route_resource = http_route_resource();
        if let Some(route) = &objects.http_route {
            apply_owned(&ctx.client, self, route, &route_resource)
                .await
                .map_err(apply_failure)?;
        }
        prune_owned::<_, Deployment>(&ctx.client, self, &names(&objects.deployments), &())
            .await
            .map_err(apply_failure)?;
        prune_owned::<_, Service>(&ctx.client, self, &names(&objects.services), &())
            .await
            .map_err(apply_failure)?;
        if with_route {
            let keep = objects
                .http_route
                .iter()
                .map(ResourceExt::name_any)
                .collect();
            prune_owned::<_, DynamicObject>(&ctx.client, self, &keep, &route_resource)
                .await
                .map_err(apply_failure)?;
        }

        self.record_tags(ctx, &model, &status.legs, &legs).await;
        let first = legs.first();
        status.resolved_version = first.and_then(|leg| leg.resolved_version);
        status.serving_version = first.and_then(|leg| leg.serving_version);
        status.model_uri = first
            .and_then(|leg| targets.get(&leg.name))
            .map(|version| format!("models:/{model}/{version}"));
        status.replicas = Some(legs.iter().map(|leg| leg.replicas).sum());
        status.ready_replicas = Some(legs.iter().map(|leg| leg.ready_replicas).sum());
        status.updated_replicas = Some(legs.iter().map(|leg| leg.updated_replicas).sum());
        let url = format!(
            "http://{}.{namespace}.svc:{}",
            self.name_any(),
            self.spec.port
        );
        status.url = Some(url.clone());
        status.legs = legs;

        Ok(if !rolled_back.is_empty() {
            Outcome::not_ready(Reason::RolledBack, rolled_back.join("; "))
        } else if !stuck.is_empty() {
            Outcome::not_ready(Reason::RolloutStuck, stuck.join("; "))
        } else if !rolling.is_empty() {
            Outcome::progressing(Reason::RollingOut, rolling.join("; "))
        } else {
            let versions: Vec<String> = status
                .legs
                .iter()
                .filter_map(|leg| {
                    leg.serving_version
                        .map(|v| format!("{} → version {v}", leg.name))
                })
                .collect();
            Outcome::ready(format!(
                "serving model '{model}' ({}) at {url}",
                versions.join(", ")
            ))
        })
    }
}

/// The condition message of a rolled-back leg: the same from the rollback on, so the Warning
/// event is published once.
fn rolled_back_message(model: &str, leg: &str, failed: i64, why: &str, to: i64) -> String {
    format!(
        "version {failed} of model '{model}' failed to roll out on leg {leg} ({why}); rolled back to version {to}, \
         which keeps serving; version {failed} is not tried again until the alias moves or the spec changes"
    )
}

/// The version a Deployment's Pod template carries.
fn template_version(deployment: &Deployment) -> Option<i64> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(VERSION_ANNOTATION)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    fn rolled(generation: i64, observed: i64, counts: serde_json::Value) -> Deployment {
        let mut status = json!({"observedGeneration": observed});
        status
            .as_object_mut()
            .unwrap()
            .extend(counts.as_object().unwrap().clone());
        deployment(json!({
            "metadata": {"name": "fraud-champion", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
    }

    #[test]
    fn rollout_state_follows_the_deployment_status() {
        assert_eq!(
            rollout_state(&rolled(
                3,
                2,
                json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
            )),
            Rollout::InProgress(
                "waiting for the Deployment controller to see the new template".to_owned()
            )
        );
        assert_eq!(
            rollout_state(&rolled(
                3,
                3,
                json!({"replicas": 3, "updatedReplicas": 1, "availableReplicas": 2})
            )),
            Rollout::InProgress("1 of 2 replicas updated".to_owned())
        );
        assert_eq!(
            rollout_state(&rolled(
                3,
                3,
                json!({"replicas": 3, "updatedReplicas": 2, "availableReplicas": 2})
            )),
            Rollout::InProgress("1 old replicas pending termination".to_owned())
        );
        assert_eq!(
            rollout_state(&rolled(
                3,
                3,
                json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 1})
            )),
            Rollout::InProgress("1 of 2 updated replicas available".to_owned())
        );
        assert_eq!(
            rollout_state(&rolled(
                3,
                3,
                json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2})
            )),
            Rollout::Complete
        );
        let failed = rolled(
            3,
            3,
            json!({
                "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
                "conditions": [{
                    "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet \"fraud-champion-7c9\" has timed out progressing.",
                }],
            }),
        );
        assert_eq!(
            rollout_state(&failed),
            Rollout::Failed(
                "ReplicaSet \"fraud-champion-7c9\" has timed out progressing.".to_owned()
            )
        );
        assert!(matches!(
            rollout_state(&deployment(json!({"metadata": {"name": "x"}}))),
            Rollout::InProgress(_)
        ));
    }

    #[test]
    fn a_failed_version_is_held_back_until_the_alias_moves() {
        // Not failed: the resolved version runs.
        assert_eq!(target_version(4, Some(3), None), 4);
        // Failed before: the last good version keeps running.
        assert_eq!(target_version(4, Some(3), Some(4)), 3);
        // The alias moved past the failure.
        assert_eq!(target_version(5, Some(3), Some(4)), 5);
        // Nothing to go back to: the failed version stays.
        assert_eq!(target_version(4, None, Some(4)), 4);
    }

    #[test]
    fn a_failed_rollout_rolls_back_to_the_serving_version() {
        let failed = Rollout::Failed("timed out".to_owned());
        assert_eq!(
            decide(4, 4, Some(3), &failed),
            LegDecision::RollBack {
                failed: 4,
                to: 3,
                why: "timed out".to_owned()
            }
        );
        // First rollout, or the serving version itself failing (e.g. a scale-up): no rollback.
        assert_eq!(
            decide(4, 4, None, &failed),
            LegDecision::Stuck("timed out".to_owned())
        );
        assert_eq!(
            decide(3, 3, Some(3), &failed),
            LegDecision::Stuck("timed out".to_owned())
        );
        assert_eq!(
            decide(4, 3, Some(3), &Rollout::Complete),
            LegDecision::HeldBack { failed: 4 }
        );
        assert_eq!(
            decide(4, 4, Some(3), &Rollout::Complete),
            LegDecision::Serving
        );
        assert_eq!(
            decide(4, 4, Some(3), &Rollout::InProgress("1 of 2".to_owned())),
            LegDecision::RollingOut("1 of 2".to_owned())
        );
    }

    /// A Pod of `version` started at second 1000, with these container statuses.
    fn pod(version: i64, ready: bool, containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("fraud-champion-{version}"),
                         "annotations": {VERSION_ANNOTATION: version.to_string()}},
            "status": {
                "phase": "Running",
                "startTime": "1970-01-01T00:16:40Z",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": containers,
            },
        }))
        .unwrap()
    }

    fn server(
        restarts: i32,
        state: serde_json::Value,
        last: serde_json::Value,
    ) -> serde_json::Value {
        json!([{
            "name": "server", "image": "i", "imageID": "", "ready": false,
            "restartCount": restarts, "state": state, "lastState": last,
        }])
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn pods_that_crash_or_never_come_up_make_their_version_unservable() {
        let traceback = json!({"terminated": {
            "exitCode": 1, "reason": "Error",
            "message": "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'churn_features'\n",
        }});
        let backing_off =
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}});
        // Crashed, restarted once, crashed again: waiting for the next restart.
        let crashing = pod(2, false, server(1, backing_off.clone(), traceback.clone()));
        assert_eq!(
            unservable(std::slice::from_ref(&crashing), 2, at(1030), 660).as_deref(),
            Some(
                "Pod fraud-champion-2: container server crashed 2 times, CrashLoopBackOff; \
                 last exit code 1: ModuleNotFoundError: No module named 'churn_features'"
            )
        );
        // Only the Pods of the version asked about count (the old ones serve on).
        assert_eq!(
            unservable(std::slice::from_ref(&crashing), 1, at(1030), 660),
            None
        );
        // One crash may be bad luck: the kubelet's restart gets its chance.
        let once = pod(2, false, server(0, backing_off, traceback.clone()));
        assert_eq!(unservable(&[once], 2, at(1030), 660), None);
        let restarted = pod(
            2,
            false,
            server(1, json!({"running": {}}), traceback.clone()),
        );
        assert_eq!(unservable(&[restarted], 2, at(1030), 660), None);
        // Ended a second time, before the kubelet says it backs off.
        let ended = pod(2, false, server(1, traceback, json!({})));
        assert_eq!(
            unservable(&[ended], 2, at(1030), 660).as_deref(),
            Some(
                "Pod fraud-champion-2: container server crashed 2 times; \
                 last exit code 1: ModuleNotFoundError: No module named 'churn_features'"
            )
        );
        // An image that is not there never starts.
        let missing = pod(
            2,
            false,
            server(
                0,
                json!({"waiting": {"reason": "ErrImageNeverPull", "message": "image \"x\" is not present"}}),
                json!({}),
            ),
        );
        assert_eq!(
            unservable(&[missing], 2, at(1001), 660).as_deref(),
            Some(
                "Pod fraud-champion-2: container server cannot start (ErrImageNeverPull: image \"x\" is not present)"
            )
        );
        // Still loading within the allowance; too long past it.
        let loading = pod(2, false, server(0, json!({"running": {}}), json!({})));
        assert_eq!(
            unservable(std::slice::from_ref(&loading), 2, at(1600), 660),
            None
        );
        assert_eq!(
            unservable(&[loading], 2, at(1661), 660).as_deref(),
            Some("Pod fraud-champion-2: not ready 661s after it started")
        );
        let serving = pod(2, true, server(0, json!({"running": {}}), json!({})));
        assert_eq!(unservable(&[serving], 2, at(5000), 660), None);
        // A failed Pod, and a Pod being deleted (it no longer counts).
        let mut failed = pod(2, false, json!([]));
        let status = failed.status.as_mut().unwrap();
        status.phase = Some("Failed".to_owned());
        status.reason = Some("Evicted".to_owned());
        assert_eq!(
            unservable(std::slice::from_ref(&failed), 2, at(1001), 660).as_deref(),
            Some("Pod fraud-champion-2: failed (Evicted)")
        );
        failed.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(1001)),
        );
        assert_eq!(unservable(&[failed], 2, at(1001), 660), None);
    }

    fn leg(name: &str, serving: Option<i64>, failed: Option<i64>) -> LegStatus {
        LegStatus {
            name: name.to_owned(),
            serving_version: serving,
            failed_version: failed,
            ..LegStatus::default()
        }
    }

    #[test]
    fn tags_name_serving_and_rolled_back_versions() {
        assert_eq!(
            deployment_tags(&[
                leg("champion", Some(3), Some(4)),
                leg("challenger", Some(4), None)
            ]),
            BTreeMap::from([(3, TAG_SERVING), (4, TAG_SERVING)])
        );
        assert_eq!(
            deployment_tags(&[leg("champion", Some(3), Some(4))]),
            BTreeMap::from([(3, TAG_SERVING), (4, TAG_ROLLED_BACK)])
        );
        assert!(deployment_tags(&[leg("champion", None, None)]).is_empty());
    }

    #[test]
    fn promotions_are_looked_up_for_versions_served_through_an_alias() {
        assert_eq!(
            serving_aliases(&[
                leg("champion", Some(3), Some(4)),
                leg(PINNED_LEG, Some(1), None),
                leg("challenger", None, None),
            ]),
            BTreeMap::from([(3, "champion")])
        );
    }

    #[test]
    fn the_version_comes_from_the_template_annotation() {
        let running = deployment(json!({
            "metadata": {"name": "x"},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {VERSION_ANNOTATION: "7"}}}},
        }));
        assert_eq!(template_version(&running), Some(7));
        assert_eq!(
            template_version(&deployment(json!({"metadata": {"name": "x"}}))),
            None
        );
    }

    #[test]
    fn dropping_a_leg_leaves_its_objects_out_of_what_is_kept() {
        let resource: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "ferroflow.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u-1"},
            "spec": {"modelName": "fraud", "traffic": [{"alias": "champion", "weight": 100}]},
        }))
        .unwrap();
        let settings = ServingSettings {
            runtime_image: "serving".to_owned(),
            ferroflow_image: "downloader".to_owned(),
            tracking_uri: "http://tracking:5000".to_owned(),
            gateway: None,
        };
        let targets = BTreeMap::from([("champion".to_owned(), 3)]);
        let objects = builder::build(&resource, "fraud", &targets, &settings, true).unwrap();
        // The challenger's Deployment and Service are not kept, so prune_owned deletes them.
        assert_eq!(
            names(&objects.deployments),
            BTreeSet::from(["fraud-champion".to_owned()])
        );
        assert_eq!(
            names(&objects.services),
            BTreeSet::from(["fraud".to_owned()])
        );
    }
}
