//! Wakes resources when the registry changes behind the operator's back (through the REST
//! API): one router reads the store's LISTEN/NOTIFY stream and asks each registered kind's
//! cached resources whether a change concerns them ([`Reconciler::wakes_on`]), so a resource
//! that depends on the change is reconciled within a second instead of at the next resync.
//! Changes carry their workspace, so only the followers in that namespace wake. A lost
//! connection (Resync) wakes every resource of every registered kind.

use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store as Cache};

use super::context::workspace_of;
use super::guard::Guarded;
use super::reconcile::Reconciler;
use crate::store::Store;
use crate::store::notify::{self, RegistryChange, RegistryEvent};

/// Pause before listening again after the notification connection failed, doubling up to the max.
const NOTIFY_BACKOFF_MIN: Duration = Duration::from_millis(500);
const NOTIFY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Wakes the resources of one kind that a change (or, for `None`, a resync) concerns.
type Route = Box<dyn Fn(Option<&RegistryChange>) + Send + Sync>;

/// Routes registry changes to the controllers of every kind registered with it.
#[derive(Default)]
pub struct WakeRouter {
    routes: Vec<Route>,
}

impl WakeRouter {
    /// Routes changes to the resources of `K` in `cache`; the returned stream goes to that
    /// kind's `Controller::reconcile_on`.
    pub fn register<K: Reconciler>(
        &mut self,
        cache: Cache<Guarded<K>>,
    ) -> mpsc::UnboundedReceiver<ObjectRef<Guarded<K>>> {
        let (sender, receiver) = mpsc::unbounded();
        self.routes.push(Box::new(move |change| {
            for guarded in cache.state() {
                let concerned = guarded
                    .0
                    .as_ref()
                    .is_ok_and(|obj| change.is_none_or(|change| obj.wakes_on(change)));
                if concerned {
                    // Closed: the controller has stopped, and so will this router.
                    let _closed = sender.unbounded_send(ObjectRef::from_obj(guarded.as_ref()));
                }
            }
        }));
        receiver
    }

    /// Wakes what `change` concerns, or everything for a resync (`None`).
    fn route(&self, change: Option<&RegistryChange>) {
        for route in &self.routes {
            route(change);
        }
    }

    /// Listens to the store's notifications until the stream ends. Returns at once when the
    /// backend cannot listen (SQLite): periodic resyncs are all there is then.
    pub async fn run(self, store: Store) {
        let mut events = match notify::listen(&store).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for registry changes; relying on periodic resyncs");
                return;
            }
        };
        let mut backoff = NOTIFY_BACKOFF_MIN;
        while let Some(event) = events.next().await {
            match event {
                Ok(RegistryEvent::Change(change)) => self.route(Some(&change)),
                Ok(RegistryEvent::Resync) => self.route(None),
                Err(error @ crate::store::Error::Database(_)) => {
                    // The listener reconnects on the next poll; a database that stays away would
                    // otherwise make this a hot loop.
                    tracing::warn!(%error, source = ?std::error::Error::source(&error), retry_in = ?backoff,
                        "lost the registry notification connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(NOTIFY_BACKOFF_MAX);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "skipping an unreadable registry notification");
                    continue;
                }
            }
            backoff = NOTIFY_BACKOFF_MIN;
        }
    }
}

/// Whether `change` is about the registered model `name` (under its new or its old name) in
/// the workspace of `follower`, its namespace: team-b's `churn` is not team-a's. A change
/// without a workspace (from a server older than workspaces) may be about any of them.
pub fn concerns_model<K: Resource>(change: &RegistryChange, follower: &K, name: &str) -> bool {
    change
        .workspace
        .as_deref()
        .is_none_or(|changed| changed == workspace_of(follower))
        && (change.name == name || change.previous_name.as_deref() == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ModelVersion, RegisteredModel};
    use crate::operator::test_support::from_yaml;
    use crate::store::notify::ChangeKind;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    fn cache_of<K: Reconciler>(objects: Vec<K>) -> Cache<Guarded<K>> {
        let (cache, mut writer) = reflector::store();
        for obj in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(Guarded(Ok(obj))));
        }
        cache
    }

    fn model(name: &str, model_name: &str) -> RegisteredModel {
        model_in("ml", name, model_name)
    }

    fn model_in(namespace: &str, name: &str, model_name: &str) -> RegisteredModel {
        from_yaml(&format!(
            "
apiVersion: ferroflow.dev/v1alpha1
kind: RegisteredModel
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{modelName: {model_name}}}
"
        ))
    }

    fn version(name: &str, model_name: Option<&str>) -> ModelVersion {
        version_in("ml", name, model_name)
    }

    fn version_in(namespace: &str, name: &str, model_name: Option<&str>) -> ModelVersion {
        let status = model_name
            .map(|model| format!("status: {{modelName: {model}}}"))
            .unwrap_or_default();
        from_yaml(&format!(
            "
apiVersion: ferroflow.dev/v1alpha1
kind: ModelVersion
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{modelRef: {{name: whatever}}, version: 1}}
{status}
"
        ))
    }

    fn woken<K: Reconciler>(
        receiver: &mut mpsc::UnboundedReceiver<ObjectRef<Guarded<K>>>,
    ) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(reference) = receiver.try_recv() {
            names.push(reference.name);
        }
        names.sort();
        names
    }

    #[test]
    fn changes_wake_the_resources_they_concern_and_resync_wakes_all() {
        let mut router = WakeRouter::default();
        let mut models = router.register(cache_of(vec![
            model("churn", "churn-model"),
            model("fraud", "fraud-model"),
        ]));
        let mut versions = router.register(cache_of(vec![
            version("churn-v1", Some("churn-model")),
            version("fraud-v1", Some("fraud-model")),
            // Never reconciled yet: no model known, nothing routes to it but a resync.
            version("new", None),
        ]));

        router.route(Some(&RegistryChange::new(
            ChangeKind::AliasSet,
            "ml",
            "churn-model",
        )));
        assert_eq!(woken(&mut models), ["churn"]);
        assert_eq!(woken(&mut versions), ["churn-v1"]);

        let mut renamed = RegistryChange::new(ChangeKind::ModelRenamed, "ml", "fraud-2");
        renamed.previous_name = Some("fraud-model".to_owned());
        router.route(Some(&renamed));
        assert_eq!(woken(&mut models), ["fraud"]);
        assert_eq!(woken(&mut versions), ["fraud-v1"]);

        router.route(Some(&RegistryChange::new(
            ChangeKind::ModelDeleted,
            "ml",
            "other",
        )));
        assert!(woken(&mut models).is_empty());
        assert!(woken(&mut versions).is_empty());

        router.route(None);
        assert_eq!(woken(&mut models), ["churn", "fraud"]);
        assert_eq!(woken(&mut versions), ["churn-v1", "fraud-v1", "new"]);
    }

    #[test]
    fn changes_wake_only_the_followers_in_their_workspace() {
        let mut router = WakeRouter::default();
        let mut models = router.register(cache_of(vec![
            model_in("team-a", "a-churn", "churn"),
            model_in("team-b", "b-churn", "churn"),
        ]));
        let mut versions = router.register(cache_of(vec![
            version_in("team-a", "a-churn-v1", Some("churn")),
            version_in("team-b", "b-churn-v1", Some("churn")),
        ]));
        router.route(Some(&RegistryChange::new(
            ChangeKind::AliasSet,
            "team-a",
            "churn",
        )));
        assert_eq!(woken(&mut models), ["a-churn"]);
        assert_eq!(woken(&mut versions), ["a-churn-v1"]);

        router.route(Some(&RegistryChange::new(
            ChangeKind::VersionCreated,
            "team-c",
            "churn",
        )));
        assert!(woken(&mut models).is_empty());
        assert!(woken(&mut versions).is_empty());

        // From a server older than workspaces: no workspace, so every `churn` may be concerned.
        let mut unknown = RegistryChange::new(ChangeKind::AliasSet, "any", "churn");
        unknown.workspace = None;
        router.route(Some(&unknown));
        assert_eq!(woken(&mut models), ["a-churn", "b-churn"]);
        assert_eq!(woken(&mut versions), ["a-churn-v1", "b-churn-v1"]);
    }
}
