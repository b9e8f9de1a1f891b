//! The shape every reconciler shares: the finalizer that applies `deletionPolicy`, one sync of
//! the store, the outcome recorded in status (server-side apply, written only when it
//! changed), Warning events for new failures, metrics, and the requeue policy.
//!
//! A kind plugs in by implementing [`Reconciler`]: `sync` makes the store match the spec and
//! fills its status fields; `cleanup` applies the deletion policy.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::config::OperatorConfig;
use super::context::{Context, FIELD_MANAGER, FINALIZER};
use super::error::Error;
use super::guard::Guarded;
use crate::crd::{Outcome, Progress, Reason, ReconcileState};
use crate::store;
use crate::store::notify::RegistryChange;

/// How soon a resource with something under way (a rollout, a run) is looked at again;
/// watches on the objects it owns usually wake it sooner.
const PROGRESSING_RECHECK: Duration = Duration::from_secs(3);
/// How soon a resource that is not ready for a reason that passes by itself is retried.
const WAITING_RETRY: Duration = Duration::from_secs(5);
/// Backoff after a transient error.
const ERROR_RETRY: Duration = Duration::from_secs(5);

/// Why a sync stopped short, split by what the operator does about it.
#[derive(Debug)]
pub enum Failure {
    /// The spec cannot be applied as it stands: report it in status, wait for a change.
    Report(Outcome),
    /// The store failed in a way worth retrying with backoff.
    Store(store::Error),
    /// Reading another resource failed.
    Kube { object: String, source: kube::Error },
    /// Writing or pruning an owned object failed; retried with backoff.
    Operator(Error),
}

impl From<store::Error> for Failure {
    /// Store refusals become conditions with the reason [`refusal_reason`] gives; database
    /// failures are retried.
    fn from(error: store::Error) -> Self {
        match refusal_reason(&error) {
            Some(reason) => Failure::Report(Outcome::not_ready(reason, error.to_string())),
            None => Failure::Store(error),
        }
    }
}

/// The condition reason for a store refusal, read from the error's case (never its text);
/// `None` for failures worth retrying. Written without a wildcard: a new store error cannot
/// compile until someone decides its reason.
pub fn refusal_reason(error: &store::Error) -> Option<Reason> {
    use store::{Entity, Error as E};
    match error {
        E::NotFound { entity, .. } => Some(match entity {
            Entity::Experiment => Reason::ExperimentNotFound,
            Entity::Run => Reason::RunNotFound,
            Entity::RegisteredModel => Reason::ModelNotFound,
            Entity::ModelVersion => Reason::VersionNotFound,
            Entity::LoggedModel => Reason::LoggedModelNotFound,
            // A tag deleted by someone else between our read and our write: the next
            // reconcile reads the row again.
            Entity::Tag => Reason::Reconciling,
        }),
        E::AliasNotFound { .. } => Some(Reason::AliasNotFound),
        E::OwnedElsewhere { .. } => Some(Reason::OwnedElsewhere),
        E::PolicyDenied(_) => Some(Reason::PolicyDenied),
        E::AlreadyExists(_) | E::Invalid(_) | E::BadRequest(_) | E::InvalidState(_) => {
            Some(Reason::InvalidSpec)
        }
        E::UnsupportedUri(_) | E::Database(_) | E::Migrate(_) | E::BrokenReferences(_) => None,
    }
}

/// A ferroflow kind the generic reconcile loop can drive.
pub trait Reconciler:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Status: Clone + Default + PartialEq + Serialize + Debug + Send + Sync;
    /// The kind's name, for metrics and logs.
    const KIND: &'static str;

    fn status(&self) -> Option<&Self::Status>;
    fn state(status: &Self::Status) -> &ReconcileState;
    fn state_mut(status: &mut Self::Status) -> &mut ReconcileState;

    /// Makes the store match the spec; fills `status` with what it found and did.
    fn sync(
        &self,
        ctx: &Context,
        status: &mut Self::Status,
    ) -> impl Future<Output = Result<Outcome, Failure>> + Send;

    /// Whether this resource depends on what `change` changed in the registry, so the change
    /// (made through the REST API) wakes it at once. Only kinds registered with the
    /// `wake::WakeRouter` are asked.
    fn wakes_on(&self, _change: &RegistryChange) -> bool {
        false
    }

    /// Whether deleting a resource must wait for [`Reconciler::cleanup`], through the
    /// operator's finalizer: kinds that apply a deletion policy to store rows. A kind whose
    /// owned objects all go with it through owner references (the garbage collector) needs
    /// none, so its deletion never hangs while the operator is down.
    const NEEDS_FINALIZER: bool;

    /// Applies the deletion policy before the resource goes away; called only for kinds that
    /// need the finalizer.
    fn cleanup(&self, _ctx: &Context) -> impl Future<Output = Result<(), Failure>> + Send {
        std::future::ready(Ok(()))
    }
}

/// `namespace/name` with the kind, for messages.
pub fn describe<K: Reconciler>(obj: &K) -> String {
    describe_meta::<K>(obj.meta())
}

fn describe_meta<K: Reconciler>(meta: &ObjectMeta) -> String {
    format!(
        "{} {}/{}",
        K::KIND,
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The current time as Kubernetes writes it.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Entry point handed to `Controller::run`. Controllers watch through [`Guarded`], so
/// one stored object that our types cannot read is reported on itself instead of stalling the
/// watch of its whole kind.
pub async fn reconcile<K: Reconciler>(
    guarded: Arc<Guarded<K>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let obj = match &guarded.0 {
        Ok(obj) => Arc::new(obj.clone()),
        Err(invalid) => {
            report_unreadable::<K>(invalid, &ctx).await;
            return Ok(Action::await_change());
        }
    };
    // `resource`, not `name`: the JSON log format already uses `name` for the span's own name.
    let span = tracing::info_span!(
        "reconcile",
        kind = K::KIND,
        namespace = obj.namespace().unwrap_or_default(),
        resource = obj.name_any()
    );
    let started = Instant::now();
    let result = if K::NEEDS_FINALIZER {
        run_finalizer(obj, &ctx).instrument(span).await
    } else {
        run_without_finalizer(obj, &ctx).instrument(span).await
    };
    ctx.metrics.observe(
        K::KIND,
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    result
}

/// An object the API server holds but our types cannot read (stored under an older schema, or
/// written around validation): a Warning event on it says why, the store is left alone, and
/// the next edit of the object brings it back here.
async fn report_unreadable<K: Reconciler>(invalid: &InvalidObject, ctx: &Context) {
    let object = describe_meta::<K>(&invalid.metadata);
    tracing::warn!(%object, error = %invalid.error, "cannot read the object; waiting for it to change");
    ctx.metrics
        .observe(K::KIND, Duration::ZERO, Some(Reason::InvalidSpec.as_str()));
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: invalid.metadata.namespace.clone(),
        name: invalid.metadata.name.clone(),
        uid: invalid.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let note = format!(
        "the operator cannot read this object, so it is not reconciled: {}",
        invalid.error
    );
    publish_to(
        ctx,
        &reference,
        &object,
        EventType::Warning,
        Reason::InvalidSpec.as_str(),
        "Reconcile",
        &note,
    )
    .await;
}

/// Handed to `Controller::run`: retry transient failures after a pause.
pub fn error_policy<K: Reconciler>(
    guarded: Arc<Guarded<K>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let object = match &guarded.0 {
        Ok(obj) => describe(obj),
        Err(invalid) => describe_meta::<K>(&invalid.metadata),
    };
    tracing::warn!(%object, error = %error, source = ?std::error::Error::source(error),
        "reconcile failed; retrying");
    if error.waits_on_others() {
        Action::requeue(ctx.config.stalled_resync)
    } else {
        Action::requeue(ERROR_RETRY)
    }
}

async fn run_finalizer<K: Reconciler>(obj: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    let object = describe(obj.as_ref());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, obj, |event| async move {
        match event {
            finalizer::Event::Apply(obj) => apply(obj.as_ref(), ctx).await,
            finalizer::Event::Cleanup(obj) => cleanup(obj.as_ref(), ctx).await,
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        object,
        source: Box::new(source),
    })
}

/// A kind without a finalizer: reconcile while it lives, nothing to do once it is being
/// deleted. One that still carries our finalizer (added when the kind needed it) is released,
/// or its deletion would wait for a cleanup that no longer runs.
async fn run_without_finalizer<K: Reconciler>(obj: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    remove_finalizer(&api, obj.as_ref())
        .await
        .map_err(|source| Error::RemoveFinalizer {
            object: describe(obj.as_ref()),
            source,
        })?;
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    apply(obj.as_ref(), ctx).await
}

/// Removes the operator's finalizer from `obj` if it carries it; true if it did. The patch
/// names the resourceVersion read, so a concurrent change of the finalizer list fails with a
/// conflict (and is retried) instead of being overwritten.
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(false);
    }
    let remaining: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": remaining,
            "resourceVersion": obj.resource_version(),
        }
    });
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        // Gone meanwhile: nothing holds it any more.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

async fn apply<K: Reconciler>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    // Start from the status as stored, not as cached: the watch may not have delivered our
    // previous patch yet, and building on a stale status would drop what it recorded (e.g.
    // stageChangedTime) when the next apply patch omits it.
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let stored = api
        .get_opt(&obj.name_any())
        .await
        .map_err(|source| Error::ReadResource {
            object: describe(obj),
            source,
        })?;
    let old = match &stored {
        Some(stored) => stored.status().cloned(),
        None => obj.status().cloned(),
    };
    let mut status = old.clone().unwrap_or_default();
    let (outcome, transient) = match obj.sync(ctx, &mut status).await {
        Ok(outcome) | Err(Failure::Report(outcome)) => (outcome, None),
        Err(Failure::Store(source)) => {
            let message = format!("the metadata store failed: {}", error_chain(&source));
            (
                Outcome::not_ready(Reason::StoreUnavailable, message),
                Some(Error::StoreUnavailable {
                    object: describe(obj),
                    source,
                }),
            )
        }
        Err(Failure::Kube { object, source }) => {
            let message = format!("cannot read {object}: {source}");
            (
                Outcome::not_ready(Reason::Reconciling, message),
                Some(Error::ReadResource { object, source }),
            )
        }
        Err(Failure::Operator(error)) => {
            let message = error_chain(&error);
            (
                Outcome::not_ready(Reason::Reconciling, message),
                Some(error),
            )
        }
    };
    K::state_mut(&mut status).record(obj.meta().generation, &outcome, &now());
    if old.as_ref() != Some(&status) {
        patch_status(ctx, obj, &status).await?;
        let old_failure = old.as_ref().and_then(|s| K::state(s).last_failure.as_ref());
        if let Some(failure) = &K::state(&status).last_failure
            && old_failure != Some(failure)
        {
            publish(
                ctx,
                obj,
                EventType::Warning,
                &failure.reason,
                "Reconcile",
                &failure.message,
            )
            .await;
        }
    }
    if let Some(error) = transient {
        return Err(error);
    }
    Ok(Action::requeue(requeue_after(&outcome, &ctx.config)))
}

/// When to look at a resource again after `outcome`, if nothing wakes it before.
fn requeue_after(outcome: &Outcome, config: &OperatorConfig) -> Duration {
    match outcome.progress {
        Progress::Ready | Progress::Ended => config.resync,
        Progress::Progressing => PROGRESSING_RECHECK,
        Progress::NotReady if outcome.is_stalled() => config.stalled_resync,
        Progress::NotReady => WAITING_RETRY,
    }
}

async fn cleanup<K: Reconciler>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    match obj.cleanup(ctx).await {
        Ok(()) => Ok(Action::await_change()),
        Err(Failure::Store(source)) => Err(Error::StoreUnavailable {
            object: describe(obj),
            source,
        }),
        Err(Failure::Kube { object, source }) => Err(Error::ReadResource { object, source }),
        Err(Failure::Operator(error)) => Err(error),
        // The store refuses until another resource changes (e.g. the version is an alias a
        // RegisteredModel declares): keep the finalizer, say why, and retry when the store
        // changes. Letting the resource go would silently break the deletion policy.
        Err(Failure::Report(outcome)) => {
            let note = format!("deletion policy waits: {}", outcome.message);
            publish(
                ctx,
                obj,
                EventType::Warning,
                "CleanupBlocked",
                "Cleanup",
                &note,
            )
            .await;
            Err(Error::CleanupBlocked {
                object: describe(obj),
                message: outcome.message,
            })
        }
    }
}

async fn patch_status<K: Reconciler>(
    ctx: &Context,
    obj: &K,
    status: &K::Status,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| Error::PatchStatus {
        object: describe(obj),
        source,
    })
}

/// The store of `obj`'s workspace, after moving into it what `obj` declared in `default`
/// before namespaces were workspaces (see [`store::Store::move_owned_into_workspace`]); a
/// Normal event `MovedToWorkspace` tells what moved.
pub async fn owned_store<K: Reconciler>(ctx: &Context, obj: &K) -> Result<store::Store, Failure> {
    let store = ctx.store_for(obj);
    let moved = store
        .move_owned_into_workspace(obj.uid().as_deref().unwrap_or_default())
        .await?;
    if !moved.is_empty() {
        let names = moved
            .experiments
            .iter()
            .map(|name| format!("experiment '{name}'"))
            .chain(
                moved
                    .registered_models
                    .iter()
                    .map(|name| format!("registered model '{name}'")),
            )
            .collect::<Vec<_>>()
            .join(", ");
        let note = format!(
            "moved {names} from workspace '{}' to workspace '{}', the namespace's",
            store::DEFAULT_WORKSPACE,
            store.workspace()
        );
        publish(
            ctx,
            obj,
            EventType::Normal,
            "MovedToWorkspace",
            "Adopt",
            &note,
        )
        .await;
    }
    Ok(store)
}

/// Publishes a Kubernetes Event about `obj`. Events are for people: failing to publish one is
/// logged, never fatal.
pub async fn publish<K: Reconciler>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let reference = obj.object_ref(&());
    publish_to(ctx, &reference, &describe(obj), type_, reason, action, note).await;
}

async fn publish_to(
    ctx: &Context,
    reference: &ObjectReference,
    object: &str,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1024).collect()),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder().publish(&event, reference).await {
        tracing::warn!(%object, %error, reason, "could not publish an event");
    }
}

/// An error with its sources, for condition messages (conditions are read by people).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_is_short_while_progressing_and_long_when_stalled_or_ready() {
        let config = OperatorConfig {
            default_artifact_root: "mlflow-artifacts:".to_owned(),
            serving_image: "serving".to_owned(),
            ferroflow_image: "ferroflow".to_owned(),
            tracking_url: url::Url::parse("http://tracking:5000").unwrap(),
            tracking_api_url: url::Url::parse("http://tracking:5000").unwrap(),
            gateway: None,
            resync: Duration::from_secs(600),
            stalled_resync: Duration::from_secs(60),
        };
        let cases = [
            (Outcome::ready("done"), config.resync),
            (
                Outcome::progressing(Reason::Reconciling, "rolling out"),
                PROGRESSING_RECHECK,
            ),
            (
                Outcome::not_ready(Reason::StoreUnavailable, "down"),
                WAITING_RETRY,
            ),
            // A run that failed: nothing to wait for.
            (Outcome::ended(Reason::Failed, "run FAILED"), config.resync),
            (
                Outcome::not_ready(Reason::ModelNotFound, "no model"),
                config.stalled_resync,
            ),
        ];
        for (outcome, expected) in cases {
            assert_eq!(requeue_after(&outcome, &config), expected, "{outcome:?}");
        }
        assert!(PROGRESSING_RECHECK <= Duration::from_secs(5));
    }

    #[test]
    fn each_store_error_has_its_own_reason_and_database_failures_are_retried() {
        use store::{Entity, Error as E};
        let owner = store::registry::Owner {
            namespace: "ml".into(),
            kind: "RegisteredModel".into(),
            name: "churn".into(),
            uid: "uid-1".into(),
        };
        // One row per variant (and per entity of NotFound); `refusal_reason` has no wildcard,
        // so a new variant fails to compile until it is mapped, and then belongs here.
        let cases = [
            (
                E::not_found(Entity::Experiment, "no experiment"),
                Some(Reason::ExperimentNotFound),
            ),
            (
                E::not_found(Entity::Run, "no run"),
                Some(Reason::RunNotFound),
            ),
            (
                E::not_found(Entity::RegisteredModel, "no model"),
                Some(Reason::ModelNotFound),
            ),
            (
                E::not_found(Entity::ModelVersion, "no version 7"),
                Some(Reason::VersionNotFound),
            ),
            (
                E::not_found(Entity::LoggedModel, "no logged model"),
                Some(Reason::LoggedModelNotFound),
            ),
            (
                E::not_found(Entity::Tag, "no tag"),
                Some(Reason::Reconciling),
            ),
            (
                E::AliasNotFound {
                    model: "churn".into(),
                    alias: "champion".into(),
                },
                Some(Reason::AliasNotFound),
            ),
            (
                E::OwnedElsewhere {
                    object: "registered model 'churn'".into(),
                    field: Some("aliases".into()),
                    owner: Box::new(owner),
                },
                Some(Reason::OwnedElsewhere),
            ),
            (E::AlreadyExists("exists".into()), Some(Reason::InvalidSpec)),
            (E::Invalid("bad name".into()), Some(Reason::InvalidSpec)),
            (E::BadRequest("taken".into()), Some(Reason::InvalidSpec)),
            (E::InvalidState("deleted".into()), Some(Reason::InvalidSpec)),
            (
                E::PolicyDenied("val_auc".into()),
                Some(Reason::PolicyDenied),
            ),
            (E::UnsupportedUri("mysql://x".into()), None),
            (E::Database(sqlx::Error::PoolTimedOut), None),
            (
                E::Migrate(sqlx::migrate::MigrateError::VersionMissing(1)),
                None,
            ),
        ];
        for (error, expected) in cases {
            let description = error.to_string();
            match (Failure::from(error), expected) {
                (Failure::Report(outcome), Some(reason)) => {
                    assert_eq!(outcome.reason, reason, "{description}");
                    assert_eq!(outcome.message, description);
                    assert!(!outcome.is_ready());
                }
                (Failure::Store(_), None) => {}
                (other, expected) => panic!("{description}: got {other:?}, expected {expected:?}"),
            }
        }
    }
}
