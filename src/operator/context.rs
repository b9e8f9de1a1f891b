//! What every reconciler shares: the kube client, the store, the event recorder, metrics and
//! the operator's settings.

use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::OnceCell;

use super::config::OperatorConfig;
use super::metrics::Metrics;
use crate::client::{ClientError, MlflowClient, token_from_file};
use crate::store::{DEFAULT_WORKSPACE, Store};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ferroflow-operator";
/// Finalizer that applies `deletionPolicy` before a resource goes away.
pub const FINALIZER: &str = "ferroflow.dev/cleanup";

/// Where Kubernetes mounts a Pod's service-account token (rotated: read for each use).
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The workspace of a resource: its namespace (namespaces are workspaces).
pub fn workspace_of<K: Resource>(resource: &K) -> &str {
    resource
        .meta()
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_WORKSPACE)
}

pub struct Context {
    pub client: Client,
    /// The store in workspace `default`; reconcilers use [`Context::store_for`] instead.
    store: Store,
    reporter: Reporter,
    pub metrics: Metrics,
    pub config: OperatorConfig,
    /// Whether the Gateway API's HTTPRoute kind is installed, discovered on first need.
    pub http_routes: OnceCell<bool>,
}

impl Context {
    pub fn new(client: Client, store: Store, identity: &str, config: OperatorConfig) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity.to_owned()),
        };
        Context {
            reporter,
            client,
            store,
            metrics: Metrics::default(),
            config,
            http_routes: OnceCell::new(),
        }
    }

    /// The store scoped to the workspace of `resource`: its namespace. Every read and write a
    /// reconciler makes for a resource goes through this, so that a resource in namespace
    /// `team-a` declares objects in workspace `team-a` and never sees another team's.
    pub fn store_for<K: Resource>(&self, resource: &K) -> Store {
        self.store.in_workspace(workspace_of(resource))
    }

    /// The store as opened, for what spans workspaces (the registry's notifications).
    pub fn unscoped_store(&self) -> &Store {
        &self.store
    }

    /// A client of the tracking server as the operator reaches it (`tracking_api_url`), in
    /// `workspace`, signed in with the operator's own service-account token when it runs in a
    /// Pod and `MLFLOW_TRACKING_TOKEN` (which the client sends otherwise) is not set: what
    /// `ferroflow server --auth kubernetes` reviews (a server without auth ignores it).
    pub fn tracking_client(&self, workspace: &str) -> Result<MlflowClient, ClientError> {
        let token = match std::env::var_os("MLFLOW_TRACKING_TOKEN") {
            Some(_) => None,
            None => token_from_file(SERVICE_ACCOUNT_TOKEN),
        };
        Ok(
            MlflowClient::new(self.config.tracking_api_url.as_str(), token)?
                .in_workspace(workspace),
        )
    }

    /// A recorder for one event. kube's Recorder folds events with the same reason and action
    /// into one series that keeps the first note, so "None to Staging" would hide a later
    /// "Staging to Production"; a fresh recorder publishes each transition as its own event.
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }
}
