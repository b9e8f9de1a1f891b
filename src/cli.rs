//! Command line: one binary, one subcommand per face of ferroflow. Every flag can also be
//! set from the environment, which is how Kubernetes passes Secrets and ConfigMaps.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Default store: a SQLite file in the working directory, like `mlflow server`.
pub const DEFAULT_BACKEND_STORE_URI: &str = "sqlite:///mlflow.db";
/// Default artifact destination: a local folder in the working directory.
pub const DEFAULT_ARTIFACTS_DESTINATION: &str = "./mlartifacts";

#[derive(Debug, Parser)]
#[command(
    name = "ferroflow",
    version,
    about = "MLflow-compatible ML lifecycle platform for Kubernetes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(
        long,
        env = "FERROFLOW_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the MLflow-compatible tracking server.
    Server(ServerArgs),
    /// Run the Kubernetes operator: reconcile ferroflow.dev resources into the store.
    Operator(OperatorArgs),
    /// Print the CustomResourceDefinitions as YAML (or write one file per kind).
    Crd(CrdArgs),
    /// Manage the metadata database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "FERROFLOW_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "FERROFLOW_PORT", default_value_t = 5000)]
    pub port: u16,
    /// Metadata store: `sqlite:///path.db` or `postgresql://user:pass@host:port/db`.
    #[arg(long, env = "MLFLOW_BACKEND_STORE_URI", default_value = DEFAULT_BACKEND_STORE_URI)]
    pub backend_store_uri: String,
    /// Where artifacts are stored: a local folder, or `s3://`, `gs://`, `az://` URLs.
    #[arg(long, env = "MLFLOW_ARTIFACTS_DESTINATION", default_value = DEFAULT_ARTIFACTS_DESTINATION)]
    pub artifacts_destination: String,
    /// Artifact root recorded on new experiments; the default makes clients upload through this server.
    #[arg(
        long,
        env = "MLFLOW_DEFAULT_ARTIFACT_ROOT",
        default_value = "mlflow-artifacts:"
    )]
    pub default_artifact_root: String,
    /// Write the chosen address to this file once listening (for tests and scripts using port 0).
    #[arg(long, env = "FERROFLOW_ADDRESS_FILE")]
    pub address_file: Option<PathBuf>,
    /// Seconds a request waits for a Postgres connection before it is answered 503
    /// TEMPORARILY_UNAVAILABLE (during an outage, instead of hanging).
    #[arg(long, env = "FERROFLOW_STORE_TIMEOUT", default_value_t = crate::store::DEFAULT_ACQUIRE_TIMEOUT.as_secs_f64())]
    pub store_timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending schema migrations and exit.
    Upgrade {
        /// Metadata store URI, as for `server`.
        #[arg(env = "MLFLOW_BACKEND_STORE_URI", default_value = DEFAULT_BACKEND_STORE_URI)]
        url: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// Metadata store shared with `ferroflow server` (Postgres in a cluster).
    #[arg(long, env = "MLFLOW_BACKEND_STORE_URI", default_value = DEFAULT_BACKEND_STORE_URI)]
    pub backend_store_uri: String,
    /// Artifact root recorded on experiments the operator creates (as `server`'s flag).
    #[arg(
        long,
        env = "MLFLOW_DEFAULT_ARTIFACT_ROOT",
        default_value = "mlflow-artifacts:"
    )]
    pub default_artifact_root: String,
    /// Address for `/metrics` (Prometheus), `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "FERROFLOW_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_address: std::net::SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease; replicas sharing it elect one leader.
    #[arg(
        long,
        env = "FERROFLOW_LEASE_NAME",
        default_value = "ferroflow-operator"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease (the Pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Write the chosen metrics address to this file once listening (tests use port 0).
    #[arg(long, env = "FERROFLOW_ADDRESS_FILE")]
    pub address_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write `<plural>.<group>.yaml` per kind into this folder instead of printing one stream.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}
