//! Reusable pieces for e2e tests against the loopback control plane that
//! `e2e/cluster/up.sh` starts: connecting (or skipping when it is not up),
//! installing CRDs, a throw-away namespace per test and waiting on conditions
//! with deadlines.
//!
//! Every wait here watches the object and has a deadline; nothing sleeps.

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Field manager for everything the tests apply server-side.
pub const FIELD_MANAGER: &str = "ferroflow-e2e";

/// Label put on every test namespace, so leftovers can be found and removed
/// with one selector.
pub const TEST_NAMESPACE_LABEL: &str = "e2e.ferroflow.dev/test";

/// How long connecting may take before the cluster counts as not up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a fresh namespace may take to get its `default` ServiceAccount
/// (the controller manager creates it; Pods are rejected until then).
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for the e2e cluster.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
}

/// Where the kubeconfig is: `FERROFLOW_KUBECONFIG` when set, else the path
/// up.sh writes with its default state folder.
fn kubeconfig_path() -> PathBuf {
    if let Some(path) = std::env::var_os("FERROFLOW_KUBECONFIG") {
        return PathBuf::from(path);
    }
    let state = std::env::var_os("FERROFLOW_E2E_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ferroflow-e2e"));
    state.join("cluster").join("kubeconfig")
}

fn running_in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|value| !value.is_empty())
}

/// The crate's dependency graph enables both of rustls' crypto providers
/// (kube: ring, object_store: aws-lc-rs), so rustls cannot pick one by itself;
/// choose ring, the one kube-client is built and tested with.
fn install_crypto_provider() {
    // Err only means another test in this process installed it already.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

async fn try_connect(path: &PathBuf) -> anyhow::Result<Cluster> {
    install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    let client = Client::try_from(config).context("building client")?;
    tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version())
        .await
        .map_err(|_| anyhow!("no answer from the API server within {CONNECT_TIMEOUT:?}"))?
        .context("asking the API server for its version")?;
    Ok(Cluster { client })
}

/// Connects to the e2e cluster. `Ok(None)` means "skip this test": the cluster
/// is not reachable and `CI` is unset (a message says so). In CI an unreachable
/// cluster is an error, so a broken setup can never pass as skipped tests.
pub async fn connect(test_name: &str) -> anyhow::Result<Option<Cluster>> {
    let path = kubeconfig_path();
    match try_connect(&path).await {
        Ok(cluster) => Ok(Some(cluster)),
        Err(error) if running_in_ci() => Err(error.context(format!(
            "e2e cluster not reachable via {} (CI is set, so this fails instead of skipping; \
             start it with `eval \"$(bash e2e/cluster/up.sh)\"`)",
            path.display()
        ))),
        Err(error) => {
            eprintln!(
                "SKIP {test_name}: e2e cluster not reachable via {} ({error:#}). \
                 Start it with `eval \"$(bash e2e/cluster/up.sh)\"`.",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Waits until `condition` holds for the object `name`, watching it, for at
/// most `deadline`. On timeout the error shows the object as last seen.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    condition: impl Condition<K>,
    deadline: Duration,
    what: &str,
) -> anyhow::Result<Option<K>>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + serde::Serialize + 'static,
{
    match tokio::time::timeout(deadline, await_condition(api.clone(), name, condition)).await {
        Ok(result) => result.with_context(|| format!("watching {name} until {what}")),
        Err(_) => {
            let last_seen = match api.get_opt(name).await {
                Ok(Some(mut object)) => {
                    // Field ownership bookkeeping only buries the interesting part.
                    object.meta_mut().managed_fields = None;
                    serde_json::to_string_pretty(&object)
                        .unwrap_or_else(|error| format!("<unprintable: {error}>"))
                }
                Ok(None) => "<absent>".to_owned(),
                Err(error) => format!("<could not read it: {error}>"),
            };
            bail!(
                "timed out after {deadline:?} waiting until {what} for {name}; last seen:\n{last_seen}"
            )
        }
    }
}

/// Waits until the object is gone (or replaced by one with another uid).
pub async fn wait_deleted<K>(api: &Api<K>, object: &K, deadline: Duration) -> anyhow::Result<()>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + serde::Serialize + 'static,
{
    let name = object.name_any();
    let uid = object
        .uid()
        .with_context(|| format!("{name} has no uid (was it read from the server?)"))?;
    wait_for(
        api,
        &name,
        conditions::is_deleted(&uid),
        deadline,
        "it is deleted",
    )
    .await?;
    Ok(())
}

/// Applies a CRD server-side and waits until the API server serves it.
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    deadline: Duration,
) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    wait_for(
        &crds,
        &name,
        conditions::is_crd_established(),
        deadline,
        "it is Established",
    )
    .await?;
    Ok(())
}

/// True once a Deployment's latest spec is fully rolled out: the controller
/// has seen the current generation, every replica runs the new template and is
/// available, and no old replica is left. (kube's `is_deployment_completed`
/// alone can still match the previous rollout right after a template change.)
pub fn rollout_complete() -> impl Condition<Deployment> {
    |deployment: Option<&Deployment>| {
        let Some(deployment) = deployment else {
            return false;
        };
        let (Some(spec), Some(status)) = (&deployment.spec, &deployment.status) else {
            return false;
        };
        let wanted = spec.replicas.unwrap_or(1);
        status.observed_generation >= deployment.metadata.generation
            && status.updated_replicas.unwrap_or(0) == wanted
            && status.ready_replicas.unwrap_or(0) == wanted
            && status.available_replicas.unwrap_or(0) == wanted
            && status.replicas.unwrap_or(0) == wanted
            && conditions::is_deployment_completed().matches_object(Some(deployment))
    }
}

/// True once a Pod reached the given phase.
pub fn pod_in_phase(phase: &'static str) -> impl Condition<Pod> {
    move |pod: Option<&Pod>| {
        pod.and_then(|pod| pod.status.as_ref())
            .and_then(|status| status.phase.as_deref())
            == Some(phase)
    }
}

/// True once a Pod is Running and its Ready condition is True.
pub fn pod_running_and_ready() -> impl Condition<Pod> {
    |pod: Option<&Pod>| {
        let Some(status) = pod.and_then(|pod| pod.status.as_ref()) else {
            return false;
        };
        status.phase.as_deref() == Some("Running")
            && status
                .conditions
                .iter()
                .flatten()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
    }
}

/// A namespace that exists for one test.
#[derive(Clone)]
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Prints the namespace's Pods and Events to stderr: what one wants to see
    /// when a test in it failed.
    pub async fn dump(&self) {
        eprintln!("----- e2e namespace {} -----", self.name);
        match self.api::<Pod>().list(&ListParams::default()).await {
            Ok(pods) => {
                for pod in pods {
                    let status = pod.status.clone().unwrap_or_default();
                    let conditions: Vec<String> = status
                        .conditions
                        .iter()
                        .flatten()
                        .map(|condition| format!("{}={}", condition.type_, condition.status))
                        .collect();
                    eprintln!(
                        "pod {} phase={} node={} conditions=[{}] deleting={}",
                        pod.name_any(),
                        status.phase.as_deref().unwrap_or("?"),
                        pod.spec
                            .as_ref()
                            .and_then(|spec| spec.node_name.as_deref())
                            .unwrap_or("<unscheduled>"),
                        conditions.join(" "),
                        pod.metadata.deletion_timestamp.is_some(),
                    );
                }
            }
            Err(error) => eprintln!("(could not list pods: {error})"),
        }
        match self.api::<Event>().list(&ListParams::default()).await {
            Ok(events) => {
                let mut events = events.items;
                events.sort_by_key(|event| event.metadata.creation_timestamp.clone());
                for event in events {
                    eprintln!(
                        "event {} {} {}/{}: {}",
                        event.type_.as_deref().unwrap_or("?"),
                        event.reason.as_deref().unwrap_or("?"),
                        event.involved_object.kind.as_deref().unwrap_or("?"),
                        event.involved_object.name.as_deref().unwrap_or("?"),
                        event.message.as_deref().unwrap_or(""),
                    );
                }
            }
            Err(error) => eprintln!("(could not list events: {error})"),
        }
        eprintln!("----- end of namespace {} -----", self.name);
    }
}

impl Cluster {
    /// Runs `body` in a fresh namespace (`<prefix>-<random>`, whose `default`
    /// ServiceAccount exists already). When `body` fails or panics, the
    /// namespace's Pods and Events are printed first; the namespace is deleted
    /// either way (without waiting for it to be gone).
    pub async fn in_namespace<F, Fut>(&self, prefix: &str, body: F) -> anyhow::Result<()>
    where
        F: FnOnce(TestNamespace) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.generate_name = Some(format!("{prefix}-"));
        namespace.metadata.labels =
            Some([(TEST_NAMESPACE_LABEL.to_owned(), prefix.to_owned())].into());
        let created = namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .context("creating the test namespace")?;
        let test_namespace = TestNamespace {
            name: created.name_any(),
            client: self.client.clone(),
        };

        let outcome = AssertUnwindSafe(async {
            wait_for(
                &test_namespace.api::<ServiceAccount>(),
                "default",
                conditions::is_created(),
                SERVICE_ACCOUNT_TIMEOUT,
                "the controller manager created it",
            )
            .await?;
            body(test_namespace.clone()).await
        })
        .catch_unwind()
        .await;

        if !matches!(outcome, Ok(Ok(()))) {
            test_namespace.dump().await;
        }
        if let Err(error) = namespaces
            .delete(&test_namespace.name, &DeleteParams::background())
            .await
        {
            eprintln!(
                "could not delete namespace {}: {error}",
                test_namespace.name
            );
        }
        match outcome {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
