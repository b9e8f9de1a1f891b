//! The `ferroflow` binary: parse the command line, set up logging, run a subcommand until
//! SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use ferroflow::cli::{Cli, Command, DbCommand};
use ferroflow::store::Store;
use ferroflow::{server, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Server(args) => server::run(args, shutdown_signal()).await,
        Command::Db {
            command: DbCommand::Upgrade { url },
        } => upgrade(&url).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn upgrade(url: &str) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    store.close().await;
    eprintln!("database at {} is up to date", server::redact(url));
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops Pods with SIGTERM).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining requests");
}
