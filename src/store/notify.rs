//! Registry change notifications: Postgres `LISTEN`/`NOTIFY`, so that the operator reacts to a
//! moved alias, a stage change or a new version within a second instead of polling.
//!
//! **Channel** [`CHANNEL`] = `ferroflow_registry`. **Payload** (JSON, one change per notification):
//!
//! | field | when |
//! |---|---|
//! | `kind` | always: `version_created`, `version_deleted`, `stage_changed`, `alias_set`, `alias_deleted`, `model_renamed`, `model_deleted` |
//! | `workspace` | always (from this release): the model's workspace; a payload without it (an older server) is about a model of any workspace |
//! | `name` | always: the registered model's name (the new name for `model_renamed`) |
//! | `version` | number; `version_*`, `stage_changed`, `alias_set` |
//! | `alias` | `alias_set`, `alias_deleted` (a deleted version sends one `alias_deleted` per alias it had) |
//! | `stage` | canonical stage; `stage_changed` (one per version archived by `archive_existing_versions` too), `version_created` (`None`) |
//! | `previous_name` | `model_renamed` (the same name when a model moved into `workspace` from `default`: [`crate::store::Store::move_owned_into_workspace`]) |
//!
//! e.g. `{"kind":"alias_set","workspace":"team-a","name":"churn","version":4,"alias":"champion"}`.
//! Readers ignore fields they do not know, so an older operator reads a newer payload.
//!
//! [`crate::store::registry`] sends them with `pg_notify` inside the transaction that makes the
//! change, so a notification arrives exactly when the change is visible, and never for a
//! rolled-back one. Postgres drops notifications sent while a listener is disconnected:
//! [`listen`] reports a reconnect as [`RegistryEvent::Resync`], after which a consumer should
//! re-read what it follows. On SQLite (single process, no NOTIFY) nothing is sent and
//! [`listen`] yields nothing.

use std::future::Future;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;

use super::{Error, Result, Store};

/// The Postgres channel registry changes are announced on.
pub const CHANNEL: &str = "ferroflow_registry";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    VersionCreated,
    VersionDeleted,
    StageChanged,
    AliasSet,
    AliasDeleted,
    ModelRenamed,
    ModelDeleted,
    /// A promotion policy refused moving an alias or a stage (nothing changed; the refusal is
    /// in the history).
    PromotionDenied,
}

/// One notification's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryChange {
    pub kind: ChangeKind,
    /// The model's workspace; `None` only in a payload from a server older than workspaces,
    /// which a reader takes as "any workspace" (waking too much is harmless, too little is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The registered model's name (after the change, for a rename).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_name: Option<String>,
}

impl RegistryChange {
    /// A change of `kind` to model `name` of `workspace`, the optional fields empty.
    pub fn new(kind: ChangeKind, workspace: &str, name: &str) -> Self {
        Self {
            kind,
            workspace: Some(workspace.to_owned()),
            name: name.to_owned(),
            version: None,
            alias: None,
            stage: None,
            previous_name: None,
        }
    }
}

/// An item of the [`listen`] stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A committed change.
    Change(RegistryChange),
    /// The connection to Postgres was lost and re-established: changes made meanwhile were not
    /// delivered, so re-read everything followed.
    Resync,
}

/// Sends changes from inside a write transaction; a no-op where the backend has no NOTIFY.
pub(crate) trait Publish {
    fn publish<'a>(
        &'a mut self,
        changes: &'a [RegistryChange],
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

impl Publish for sqlx::PgConnection {
    async fn publish(&mut self, changes: &[RegistryChange]) -> Result<()> {
        for change in changes {
            let payload = serde_json::to_string(change)
                .map_err(|error| Error::Invalid(format!("unencodable change: {error}")))?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

impl Publish for sqlx::SqliteConnection {
    fn publish<'a>(
        &'a mut self,
        _changes: &'a [RegistryChange],
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        // One process owns a SQLite store; there is no one to tell.
        std::future::ready(Ok(()))
    }
}

/// Listens on [`CHANNEL`] with a connection of its own (taken from the store's pool) and
/// yields the parsed changes. A payload that does not parse is an `Err` item; the stream goes
/// on. On SQLite the stream never yields.
pub async fn listen(store: &Store) -> Result<BoxStream<'static, Result<RegistryEvent>>> {
    let Some(pool) = store.postgres_pool() else {
        return Ok(stream::pending().boxed());
    };
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    let events = stream::unfold(listener, |mut listener| async move {
        let event = match listener.try_recv().await {
            Ok(Some(notification)) => {
                serde_json::from_str::<RegistryChange>(notification.payload())
                    .map(RegistryEvent::Change)
                    .map_err(|error| {
                        Error::Invalid(format!(
                            "unreadable registry notification {:?}: {error}",
                            notification.payload()
                        ))
                    })
            }
            // try_recv reconnects (and re-LISTENs) before answering None.
            Ok(None) => Ok(RegistryEvent::Resync),
            Err(error) => Err(Error::Database(error)),
        };
        Some((event, listener))
    });
    Ok(events.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_compact_json_without_empty_fields() {
        let change = RegistryChange {
            version: Some(4),
            alias: Some("champion".into()),
            ..RegistryChange::new(ChangeKind::AliasSet, "team-a", "churn")
        };
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"alias_set","workspace":"team-a","name":"churn","version":4,"alias":"champion"}"#
        );
        assert_eq!(
            serde_json::from_str::<RegistryChange>(&json).unwrap(),
            change
        );
    }

    #[test]
    fn payloads_of_older_and_newer_servers_still_parse() {
        // An older server: no workspace, so any workspace's followers of `churn` are concerned.
        let older: RegistryChange = serde_json::from_str(
            r#"{"kind":"alias_set","name":"churn","version":4,"alias":"champion"}"#,
        )
        .unwrap();
        assert_eq!(older.workspace, None);
        assert_eq!(older.name, "churn");
        // A newer server may add fields: they are skipped, not a parse failure.
        let newer: RegistryChange = serde_json::from_str(
            r#"{"kind":"version_created","workspace":"team-b","name":"churn","version":1,"actor":"x"}"#,
        )
        .unwrap();
        assert_eq!(newer.workspace.as_deref(), Some("team-b"));
    }
}
