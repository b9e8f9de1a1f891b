//! What every reconciler shares: the kube client, the store, the event recorder, metrics and
//! the operator's settings.

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::config::OperatorConfig;
use super::metrics::Metrics;
use crate::store::Store;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ferroflow-operator";
/// Finalizer that applies `deletionPolicy` before a resource goes away.
pub const FINALIZER: &str = "ferroflow.dev/cleanup";

pub struct Context {
    pub client: Client,
    pub store: Store,
    reporter: Reporter,
    pub metrics: Metrics,
    pub config: OperatorConfig,
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
        }
    }

    /// A recorder for one event. kube's Recorder folds events with the same reason and action
    /// into one series that keeps the first note, so "None to Staging" would hide a later
    /// "Staging to Production"; a fresh recorder publishes each transition as its own event.
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }
}
