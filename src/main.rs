//! The `ferroflow` binary: parse the command line, set up logging, run a subcommand until
//! SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferroflow::cli::{
    CheckArgs, Cli, Command, CrdArgs, DbCommand, DownloadArgs, ModelCommand, PromotionsArgs,
    PromotionsCommand, RollbackArgs, RunBackend,
};
use ferroflow::client::{MlflowClient, download, promotions};
use ferroflow::store::Store;
use ferroflow::store::registry::TargetType;
use ferroflow::telemetry::{self, TraceExport};
use ferroflow::{crd, mlproject, operator, server};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Both rustls crypto providers are compiled in (kube: ring, object_store: aws-lc-rs), so
    // rustls cannot choose; kube-client is built and tested with ring. Err: already installed.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    // The long-running processes export traces when an endpoint is configured.
    let traced_service = match cli.command {
        Command::Server(_) => Some("ferroflow-server"),
        Command::Operator(_) => Some("ferroflow-operator"),
        _ => None,
    };
    let traces = traced_service.and_then(|service| {
        TraceExport::configured(cli.otlp_endpoint.as_deref(), service, |name| {
            std::env::var(name).ok()
        })
    });
    let telemetry = telemetry::init(cli.log_format, traces);
    let result = match cli.command {
        Command::Server(args) => server::run(args, shutdown_signal()).await,
        Command::Operator(args) => operator::run(args, shutdown_signal()).await,
        Command::Run(args) if args.backend == RunBackend::Kubernetes => {
            mlproject::kubernetes::run(args).await
        }
        Command::Run(args) => mlproject::run::run(args, shutdown_signal()).await,
        Command::ProjectInit(args) => mlproject::init::run(args).await,
        Command::Crd(args) => print_crds(&args),
        Command::Endpoints => print_endpoints(),
        Command::Model {
            command: ModelCommand::Download(args),
        } => download_model(args).await,
        Command::Promotions(PromotionsArgs {
            command: Some(PromotionsCommand::Check(args)),
            ..
        }) => return check_promotion(args).await,
        Command::Promotions(args) => print_promotions(args).await,
        Command::Rollback(args) => rollback(args).await,
        Command::Db {
            command: DbCommand::Upgrade { url },
        } => upgrade(&url).await,
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn upgrade(url: &str) -> anyhow::Result<()> {
    let store = Store::open_migrated(url).await?;
    store.close().await;
    eprintln!("database at {} is up to date", server::redact(url));
    Ok(())
}

async fn download_model(args: DownloadArgs) -> anyhow::Result<()> {
    let client = MlflowClient::new(&args.server.tracking_uri, args.server.tracking_token)?;
    let downloaded = download::download_model(&client, &args.model_uri, &args.dir).await?;
    eprintln!(
        "downloaded {} ({} files, {} bytes) to {}",
        args.model_uri,
        downloaded.files,
        downloaded.bytes,
        args.dir.display()
    );
    Ok(())
}

async fn print_promotions(args: PromotionsArgs) -> anyhow::Result<()> {
    let model = args.model.context("MODEL is required")?;
    let client = MlflowClient::new(&args.server.tracking_uri, args.server.tracking_token)?;
    let target_type = if args.stage {
        TargetType::Stage
    } else {
        TargetType::Alias
    };
    let entries = client
        .promotions(
            &model,
            args.target.as_deref().map(|target| (target_type, target)),
        )
        .await?;
    print!("{}", promotions::table(&entries));
    Ok(())
}

/// Exit status of `ferroflow promotions check` when a policy refuses (1 is any other error).
const REFUSED: u8 = 3;

/// `ferroflow promotions check`: prints each verdict; exits 0 when allowed, 3 when refused.
async fn check_promotion(args: CheckArgs) -> ExitCode {
    let outcome = async {
        let client = MlflowClient::new(&args.server.tracking_uri, args.server.tracking_token)?;
        let target_type = if args.stage {
            TargetType::Stage
        } else {
            TargetType::Alias
        };
        client
            .check_promotion(&args.model, (target_type, &args.target), args.version)
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    match outcome {
        Ok(answer) => {
            for result in &answer.results {
                let verdict = if result.passed { "pass" } else { "FAIL" };
                println!(
                    "{verdict}  [{}] {}: {}",
                    result.policy, result.rule, result.observed
                );
            }
            let guarded = if answer.results.is_empty() {
                " (no policy guards it)"
            } else {
                ""
            };
            if answer.allowed {
                println!("allowed{guarded}");
                ExitCode::SUCCESS
            } else {
                println!("refused");
                ExitCode::from(REFUSED)
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let client = MlflowClient::new(&args.server.tracking_uri, args.server.tracking_token)?;
    let entry = client.rollback_alias(&args.model, &args.alias).await?;
    println!(
        "alias '{}' of model '{}' rolled back from version {} to {}",
        args.alias,
        args.model,
        entry.from_version.map_or("-".to_owned(), |v| v.to_string()),
        entry.to_version.map_or("-".to_owned(), |v| v.to_string()),
    );
    Ok(())
}

/// `ferroflow endpoints`: a closed pipe (`| head`) ends the output, not a panic.
fn print_endpoints() -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for line in ferroflow::api::endpoints::json_lines() {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn print_crds(args: &CrdArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.argocd_dir {
        write_files(dir, crd::argocd::files()?)?;
    }
    let crds = crd::all();
    let Some(dir) = &args.output_dir else {
        print!("{}", crd::to_yaml(&crds)?);
        return Ok(());
    };
    let files = crds
        .iter()
        .map(|one| {
            Ok((
                crd::file_name(one).into(),
                crd::to_yaml(std::slice::from_ref(one))?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    write_files(dir, files)
}

/// Writes each `(path relative to dir, content)`, creating the folders on the way.
fn write_files(dir: &Path, files: Vec<(PathBuf, String)>) -> anyhow::Result<()> {
    for (relative, content) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
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
