//! `ferroflow operator`: while holding the leader Lease, one kube-runtime Controller per kind
//! reconciles ferroflow.dev resources into the metadata store. Registry changes made through
//! the REST API reach the controllers through the store's LISTEN/NOTIFY stream (`wake`), so a
//! resource that depends on them is reconciled within a second instead of at the next resync.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};

use crate::cli::OperatorArgs;
use k8s_openapi::api::apps::v1::Deployment;

use crate::crd::{
    Experiment, ModelDeployment, ModelVersion, ProjectRun, PromotionPolicy, RegisteredModel,
};
use crate::store::Store;

pub mod apply;
pub mod build;
pub mod config;
pub mod context;
pub mod error;
pub mod guard;
pub mod lease;
pub mod metrics;
pub mod reconcile;
#[cfg(test)]
mod test_support;

mod experiment;
mod model_deployment;
mod model_version;
mod project_run;
mod promotion_policy;
mod registered_model;
pub mod shared;
pub mod wake;

use context::Context;
use guard::Guarded;
use lease::LeaderElection;
use reconcile::{Reconciler, error_policy, reconcile};
use wake::WakeRouter;

/// Runs the operator until `shutdown` resolves or the Lease is lost.
pub async fn run(
    args: OperatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("failed to configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let store = Store::open_migrated(&args.backend_store_uri)
        .await
        .with_context(|| {
            format!(
                "failed to open and migrate the store {}",
                crate::server::redact(&args.backend_store_uri)
            )
        })?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("ferroflow-operator-{}", uuid::Uuid::new_v4()));
    let ctx = Arc::new(Context::new(
        client.clone(),
        store.clone(),
        &identity,
        args.config(),
    ));
    let shutdown = shutdown.boxed().shared();

    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .with_context(|| format!("failed to listen on {}", args.metrics_address))?;
    let address: SocketAddr = listener.local_addr()?;
    if let Some(path) = &args.address_file {
        std::fs::write(path, address.to_string())
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    tracing::info!(%address, %identity, "operator metrics listening");
    let probes = Router::new()
        .route(
            "/metrics",
            get(|State(ctx): State<Arc<Context>>| async move { ctx.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/leader",
            get(|State(ctx): State<Arc<Context>>| async move {
                if ctx.metrics.is_leader() {
                    (StatusCode::OK, "leader")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "follower")
                }
            }),
        )
        .with_state(ctx.clone());
    let server_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, probes)
            .with_graceful_shutdown(server_shutdown)
            .await
        {
            tracing::error!(%error, "metrics server failed");
        }
    });

    let election = LeaderElection::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
    );
    tokio::select! {
        acquired = election.acquire() => acquired?,
        () = shutdown.clone() => return Ok(()),
    }
    tracing::info!(lease = %args.lease_name, namespace = %args.lease_namespace, "leading: starting controllers");
    ctx.metrics.set_leader(true);
    let result = tokio::select! {
        () = run_controllers(client, ctx.clone(), shutdown) => Ok(()),
        lost = election.hold() => Err(lost),
    };
    ctx.metrics.set_leader(false);
    match result {
        Ok(()) => {
            if let Err(error) = election.release().await {
                tracing::warn!(%error, "could not release the lease; another replica takes over when it expires");
            }
            store.close().await;
            tracing::info!("operator stopped");
            Ok(())
        }
        Err(lost) => Err(lost).context("stopped leading"),
    }
}

async fn run_controllers(
    client: Client,
    ctx: Arc<Context>,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) {
    let config = watcher::Config::default();
    let models = Controller::new(
        Api::<Guarded<RegisteredModel>>::all(client.clone()),
        config.clone(),
    );
    let model_cache = models.store();
    let versions = Controller::new(
        Api::<Guarded<ModelVersion>>::all(client.clone()),
        config.clone(),
    );
    let version_cache = versions.store();
    let deployments = Controller::new(
        Api::<Guarded<ModelDeployment>>::all(client.clone()),
        config.clone(),
    );
    let deployment_cache = deployments.store();

    // Kinds that depend on registry rows the REST API can change register here.
    let mut router = WakeRouter::default();
    let model_rx = router.register(model_cache);
    let version_rx = router.register(version_cache.clone());
    let deployment_rx = router.register(deployment_cache.clone());
    let notifications = router.run(ctx.unscoped_store().clone());

    let experiments = Controller::new(
        Api::<Guarded<Experiment>>::all(client.clone()),
        config.clone(),
    )
    .graceful_shutdown_on(shutdown.clone())
    .run(
        reconcile::<Experiment>,
        error_policy::<Experiment>,
        ctx.clone(),
    )
    .for_each(log_result::<Experiment>);
    let policies = Controller::new(
        Api::<Guarded<PromotionPolicy>>::all(client.clone()),
        config.clone(),
    )
    .graceful_shutdown_on(shutdown.clone())
    .run(
        reconcile::<PromotionPolicy>,
        error_policy::<PromotionPolicy>,
        ctx.clone(),
    )
    .for_each(log_result::<PromotionPolicy>);
    let models = models
        .reconcile_on(model_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            reconcile::<RegisteredModel>,
            error_policy::<RegisteredModel>,
            ctx.clone(),
        )
        .for_each(log_result::<RegisteredModel>);
    // Rollout progress of the Deployments it owns wakes a ModelDeployment, and so does a
    // change of the RegisteredModel it serves (e.g. an alias moved in git).
    let owned_deployments = watcher::Config::default().labels(&format!(
        "{}={}",
        build::LABEL_OWNER_KIND,
        ModelDeployment::KIND
    ));
    let deployments = deployments
        .owns(Api::<Deployment>::all(client.clone()), owned_deployments)
        .watches(
            Api::<Guarded<RegisteredModel>>::all(client.clone()),
            config.clone(),
            move |model| {
                referencing(&deployment_cache, &model, |deployment| {
                    deployment.spec.model_ref.as_ref().map(|r| r.name.as_str())
                })
            },
        )
        .reconcile_on(deployment_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            reconcile::<ModelDeployment>,
            error_policy::<ModelDeployment>,
            ctx.clone(),
        )
        .for_each(log_result::<ModelDeployment>);
    // A run follows the phase of the Pod it owns.
    let project_runs = project_run_controller(client.clone(), ctx.clone(), shutdown.clone());
    // A version waits for its RegisteredModel resource: wake it when that changes.
    let versions = versions
        .watches(
            Api::<Guarded<RegisteredModel>>::all(client),
            config,
            move |model| {
                referencing(&version_cache, &model, |version| {
                    Some(version.spec.model_ref.name.as_str())
                })
            },
        )
        .reconcile_on(version_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<ModelVersion>, error_policy::<ModelVersion>, ctx)
        .for_each(log_result::<ModelVersion>);
    // The notification listener holds a pooled connection: it must end with the controllers,
    // or closing the store would wait for that connection forever. It may also end early
    // (no listener possible), which must not stop the controllers.
    let controllers = async {
        futures::join!(
            experiments,
            models,
            versions,
            deployments,
            project_runs,
            policies
        );
    };
    tokio::select! {
        () = controllers => {}
        never = notifications.then(|()| std::future::pending::<std::convert::Infallible>()) => match never {},
    }
}

/// The resources of `K` in `cache` whose `model_ref` names the RegisteredModel `model` (same
/// namespace): what a change of that RegisteredModel wakes.
fn referencing<K: Reconciler>(
    cache: &kube::runtime::reflector::Store<Guarded<K>>,
    model: &Guarded<RegisteredModel>,
    model_ref: impl Fn(&K) -> Option<&str>,
) -> Vec<ObjectRef<Guarded<K>>> {
    let namespace = model.namespace();
    let name = model.name_any();
    cache
        .state()
        .iter()
        .filter(|guarded| {
            guarded.0.as_ref().is_ok_and(|obj| {
                obj.namespace() == namespace && model_ref(obj) == Some(name.as_str())
            })
        })
        .map(|guarded| ObjectRef::from_obj(guarded.as_ref()))
        .collect()
}

fn project_run_controller(
    client: Client,
    ctx: Arc<Context>,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) -> impl Future<Output = ()> {
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        build::LABEL_OWNER_KIND,
        ProjectRun::KIND
    ));
    Controller::new(
        Api::<Guarded<ProjectRun>>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client.clone()), owned.clone())
    // With retries, the Job's status (attempts, the final condition) says where it is.
    .owns(Api::<Job>::all(client), owned)
    .graceful_shutdown_on(shutdown)
    .run(reconcile::<ProjectRun>, error_policy::<ProjectRun>, ctx)
    .for_each(log_result::<ProjectRun>)
}

/// What a controller's stream yields for one reconcile of a `K`.
type ReconcileResult<K> = Result<
    (ObjectRef<Guarded<K>>, kube::runtime::controller::Action),
    kube::runtime::controller::Error<error::Error, watcher::Error>,
>;

async fn log_result<K: Reconciler>(result: ReconcileResult<K>) {
    match result {
        Ok((object, _)) => tracing::debug!(kind = K::KIND, %object, "reconciled"),
        Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
            tracing::warn!(kind = K::KIND, %object, error = %error, "reconcile failed")
        }
        Err(error) => tracing::warn!(kind = K::KIND, error = %error, "controller error"),
    }
}
