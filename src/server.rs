//! `ferroflow server`: connects the store, applies migrations, serves the API until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::auth::{Auth, AuthMode, AuthSettings, Authorizer, KubeReviewer};
use crate::api::{self, AppState, ServerConfig};
use crate::artifacts::ArtifactStore;
use crate::cli::ServerArgs;
use crate::store::{Store, StoreOptions};

mod connection;

pub use connection::{ConnectionLimits, serve};

/// Runs the tracking server until `shutdown` resolves.
pub async fn run(
    args: ServerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store_options = StoreOptions {
        acquire_timeout: args.store_timeout.0,
    };
    let store = Store::open_migrated_with(&args.backend_store_uri, store_options)
        .await
        .with_context(|| {
            format!(
                "failed to open and migrate the backend store {}",
                redact(&args.backend_store_uri)
            )
        })?;
    let artifacts = ArtifactStore::open(&args.artifacts_destination).with_context(|| {
        format!(
            "failed to open the artifacts destination {}",
            args.artifacts_destination
        )
    })?;
    let state = AppState {
        store: store.clone(),
        artifacts,
        config: Arc::new(ServerConfig {
            default_artifact_root: args.default_artifact_root.clone(),
            ui_dir: api::ui::resolve_dir(args.ui_dir.clone()),
        }),
        auth: auth(&args).await?,
    };
    // Postgres: re-analyze searched tables soon after a bulk load (see store::statistics).
    let statistics = tokio::spawn(store.clone().keep_statistics_fresh());
    let listener = TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("failed to listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    if let Some(path) = &args.address_file {
        std::fs::write(path, address.to_string())
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let ui = state
        .config
        .ui_dir
        .as_ref()
        .map(|dir| dir.display().to_string());
    tracing::info!(%address, backend = ?store.backend(), artifacts = %args.artifacts_destination, ui = ui.as_deref().unwrap_or("not installed (make ui)"), "ferroflow server listening");
    serve(
        listener,
        api::ui::with_static_prefix(api::router(state), args.static_prefix.as_deref()),
        args.connection_limits(),
        shutdown,
    )
    .await
    .context("server failed")?;
    statistics.abort();
    store.close().await;
    tracing::info!("ferroflow server stopped");
    Ok(())
}

/// `--auth`: with `kubernetes`, reviews go to the API server of the in-cluster config or
/// `KUBECONFIG`.
async fn auth(args: &ServerArgs) -> anyhow::Result<Auth> {
    match args.auth {
        AuthMode::None => Ok(Auth::None),
        AuthMode::Kubernetes => {
            let client = kube::Client::try_default().await.context(
                "--auth kubernetes: failed to load a Kubernetes config (in-cluster or KUBECONFIG)",
            )?;
            let settings = AuthSettings {
                audiences: args.auth_audiences.clone(),
                identity_ttl: args.auth_token_cache_ttl.0,
                decision_ttl: args.auth_decision_cache_ttl.0,
            };
            Ok(Auth::Kubernetes(Arc::new(Authorizer::new(
                Box::new(KubeReviewer::new(client)),
                settings,
            ))))
        }
    }
}

/// The URI without its password, for logs and errors.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &uri[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => {
                    format!("{}://{user}:***@{}", &uri[..scheme_end], &uri[at + 1..])
                }
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
