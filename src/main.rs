//! The `ferroflow` binary: parse the command line, set up logging, run a subcommand until
//! SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferroflow::cli::{Cli, Command, CrdArgs, DbCommand};
use ferroflow::store::Store;
use ferroflow::{crd, mlproject, operator, server, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Both rustls crypto providers are compiled in (kube: ring, object_store: aws-lc-rs), so
    // rustls cannot choose; kube-client is built and tested with ring. Err: already installed.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Server(args) => server::run(args, shutdown_signal()).await,
        Command::Operator(args) => operator::run(args, shutdown_signal()).await,
        Command::Run(args) => mlproject::run::run(args, shutdown_signal()).await,
        Command::ProjectInit(args) => mlproject::init::run(args).await,
        Command::Crd(args) => print_crds(&args),
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

fn print_crds(args: &CrdArgs) -> anyhow::Result<()> {
    let crds = crd::all();
    let Some(dir) = &args.output_dir else {
        print!("{}", crd::to_yaml(&crds)?);
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for one in &crds {
        let path = dir.join(crd::file_name(one));
        std::fs::write(&path, crd::to_yaml(std::slice::from_ref(one))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
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
