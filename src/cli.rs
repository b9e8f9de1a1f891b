//! Command line: one binary, one subcommand per face of ferroflow. Every flag can also be
//! set from the environment, which is how Kubernetes passes Secrets and ConfigMaps.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};

use crate::api::auth::AuthMode;
use crate::crd::model_deployment::GatewayRef;
use crate::operator::config::{self, OperatorConfig};
use crate::server::ConnectionLimits;

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
    /// Export traces over OTLP/HTTP to this collector (a base URL like
    /// `http://otel-collector:4318`; spans go to `<URL>/v1/traces`). Without it, the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` turn the export on;
    /// with none of them, nothing is exported. `server` and `operator` only; the service name
    /// is `OTEL_SERVICE_NAME`, else `ferroflow-server` / `ferroflow-operator`.
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
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
    /// Run an MLflow project's entry point as an MLflow run (what `mlflow run --env-manager
    /// local` does; the main container of a ProjectRun Pod).
    Run(RunArgs),
    /// The init container of a ProjectRun Pod: copy this binary, download the project.
    #[command(hide = true)]
    ProjectInit(ProjectInitArgs),
    /// Print the CustomResourceDefinitions as YAML (or write one file per kind).
    Crd(CrdArgs),
    /// Print the REST endpoints and the RBAC permissions each needs under `--auth
    /// kubernetes`, as JSON (one object a line).
    Endpoints,
    /// Work with registered models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Print a registered model's promotion history: every alias and stage move, who made it,
    /// through which path, allowed or refused.
    Promotions(PromotionsArgs),
    /// Move an alias back to the version that held it before (through the tracking server,
    /// recorded in the history as a rollback).
    Rollback(RollbackArgs),
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
    #[arg(long, env = "FERROFLOW_STORE_TIMEOUT",
        default_value_t = Seconds(crate::store::DEFAULT_ACQUIRE_TIMEOUT))]
    pub store_timeout: Seconds,
    /// Seconds a client may take to send a request's headers (then 408, or a silent close when
    /// it sent nothing).
    #[arg(long, env = "FERROFLOW_HEADER_READ_TIMEOUT",
        default_value_t = Seconds(ConnectionLimits::DEFAULT.header_read_timeout))]
    pub header_read_timeout: Seconds,
    /// Seconds a request body may take to arrive, plus one per `--body-min-rate` bytes received
    /// (then 408).
    #[arg(long, env = "FERROFLOW_BODY_READ_TIMEOUT",
        default_value_t = Seconds(ConnectionLimits::DEFAULT.body_read_timeout))]
    pub body_read_timeout: Seconds,
    /// Bytes per second a long request body must keep up to (0: `--body-read-timeout` bounds every body).
    #[arg(long, env = "FERROFLOW_BODY_MIN_RATE",
        default_value_t = ConnectionLimits::DEFAULT.body_min_rate)]
    pub body_min_rate: u64,
    /// Seconds an idle keep-alive connection is kept open for its next request.
    #[arg(long, env = "FERROFLOW_KEEP_ALIVE_TIMEOUT",
        default_value_t = Seconds(ConnectionLimits::DEFAULT.keep_alive_timeout))]
    pub keep_alive_timeout: Seconds,
    /// Connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "FERROFLOW_MAX_CONNECTIONS",
        default_value_t = ConnectionLimits::DEFAULT.max_connections,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_connections: usize,
    /// Folder holding MLflow's web UI bundle (`index.html`, `static/`), served at `/`; default:
    /// the folder `make ui` fills. Without one, `/` says how to get it.
    #[arg(long, env = "FERROFLOW_UI_DIR")]
    pub ui_dir: Option<PathBuf>,
    /// Serve everything (UI and API) under this path prefix, as `mlflow server --static-prefix`.
    #[arg(long, env = "FERROFLOW_STATIC_PREFIX", value_parser = parse_static_prefix)]
    pub static_prefix: Option<String>,
    /// Who may call the API: `none` (anyone who reaches the port) or `kubernetes` (bearer
    /// tokens checked with a TokenReview, each call with a SubjectAccessReview in the
    /// namespace of its workspace; needs ClusterRole `system:auth-delegator`).
    #[arg(long, env = "FERROFLOW_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,
    /// Audiences a token must be valid for, comma-separated (default: the API server's).
    #[arg(long, env = "FERROFLOW_AUTH_AUDIENCES", value_delimiter = ',')]
    pub auth_audiences: Vec<String>,
    /// Seconds a reviewed token's identity is reused (never past the token's expiry).
    #[arg(long, env = "FERROFLOW_AUTH_TOKEN_CACHE_TTL", default_value_t = Seconds(Duration::from_secs(60)))]
    pub auth_token_cache_ttl: Seconds,
    /// Seconds an access decision (allowed or denied) is reused.
    #[arg(long, env = "FERROFLOW_AUTH_DECISION_CACHE_TTL", default_value_t = Seconds(Duration::from_secs(30)))]
    pub auth_decision_cache_ttl: Seconds,
}

/// A static prefix starts with `/`, does not end with one and holds no `{`/`}` (`/mlflow`),
/// as MLflow requires.
fn parse_static_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') || text.ends_with('/') || text.contains(['{', '}']) {
        return Err(format!(
            "'{text}': the static prefix must start with '/', not end with '/' and hold no '{{' or '}}' (e.g. /mlflow)"
        ));
    }
    Ok(text.to_owned())
}

impl ServerArgs {
    /// The per-connection limits the flags set.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout.0,
            body_read_timeout: self.body_read_timeout.0,
            body_min_rate: self.body_min_rate,
            keep_alive_timeout: self.keep_alive_timeout.0,
            max_connections: self.max_connections,
        }
    }
}

/// A positive duration in seconds on the command line; fractions allowed (`0.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let seconds: f64 = text
            .parse()
            .map_err(|_| format!("'{text}' is not a number of seconds"))?;
        match Duration::try_from_secs_f64(seconds) {
            Ok(duration) if !duration.is_zero() => Ok(Seconds(duration)),
            _ => Err(format!("'{text}': expected a positive number of seconds")),
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
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

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a model's files through the tracking server (registry lookups and the
    /// proxied artifact API: no bucket credentials needed) into DIR, atomically.
    Download(DownloadArgs),
}

#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// `models:/NAME/VERSION`, `models:/NAME@ALIAS`, `runs:/RUN_ID/PATH` (files in the run's
    /// artifact folder; a model MLflow 3 logged with `log_model(name=…)` is a logged model:
    /// use its `models:/` URI) or `mlflow-artifacts:/PATH`.
    pub model_uri: String,
    /// Where the files go; must not exist or be empty. Written in a sibling temporary folder
    /// and renamed into place when complete.
    pub dir: PathBuf,
    #[command(flatten)]
    pub server: TrackingServerArgs,
}

/// The tracking server a client command talks to.
#[derive(Debug, clap::Args)]
pub struct TrackingServerArgs {
    /// The tracking server.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub tracking_uri: String,
    /// Bearer token sent with every request.
    #[arg(long, env = "MLFLOW_TRACKING_TOKEN", hide_env_values = true)]
    pub tracking_token: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PromotionsArgs {
    #[command(subcommand)]
    pub command: Option<PromotionsCommand>,
    /// The registered model (its current name; a deleted model's last name).
    #[arg(required = true)]
    pub model: Option<String>,
    /// Only this alias (or, with --stage, this stage).
    #[arg(long)]
    pub target: Option<String>,
    /// --target names a stage (None, Staging, Production, Archived), not an alias.
    #[arg(long, requires = "target")]
    pub stage: bool,
    #[command(flatten)]
    pub server: TrackingServerArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum PromotionsCommand {
    /// Ask the promotion policies whether TARGET of MODEL may move to VERSION, without moving
    /// anything (exit status 0: allowed, 3: refused).
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    pub model: String,
    /// The alias (or, with --stage, the stage).
    pub target: String,
    pub version: i64,
    /// TARGET names a stage (None, Staging, Production, Archived), not an alias.
    #[arg(long)]
    pub stage: bool,
    #[command(flatten)]
    pub server: TrackingServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The registered model.
    pub model: String,
    /// The alias to move back (e.g. champion).
    pub alias: String,
    #[command(flatten)]
    pub server: TrackingServerArgs,
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
    /// Image that serves models when a ModelDeployment names none.
    #[arg(long, env = "FERROFLOW_SERVING_IMAGE", default_value = config::DEFAULT_SERVING_IMAGE)]
    pub serving_image: String,
    /// ferroflow's own image: a ProjectRun's Pod copies the `ferroflow` binary from it.
    #[arg(long, env = "FERROFLOW_IMAGE", default_value = config::DEFAULT_FERROFLOW_IMAGE)]
    pub ferroflow_image: String,
    /// URL of `ferroflow server` as Pods in the cluster reach it (their `MLFLOW_TRACKING_URI`).
    #[arg(long, env = "FERROFLOW_TRACKING_URL", default_value = config::DEFAULT_TRACKING_URL)]
    pub tracking_url: url::Url,
    /// URL of `ferroflow server` as the operator itself reaches it, when not `--tracking-url`
    /// (an operator running outside the cluster). Calls carry `MLFLOW_TRACKING_TOKEN` as a
    /// bearer token when it is set, else the Pod's service-account token.
    #[arg(long, env = "FERROFLOW_TRACKING_API_URL")]
    pub tracking_api_url: Option<url::Url>,
    /// The Gateway (`[NAMESPACE/]NAME`) ModelDeployments' HTTPRoutes attach to when they name
    /// none in `spec.gateway`.
    #[arg(long, env = "FERROFLOW_GATEWAY")]
    pub gateway: Option<GatewayRef>,
    /// Seconds between checks of a Ready resource for drift nobody notified the operator of.
    #[arg(long, env = "FERROFLOW_RESYNC_PERIOD", default_value = config::DEFAULT_RESYNC_SECONDS)]
    pub resync_period: Seconds,
    /// Seconds between looks at a Stalled resource (edits and registry changes wake it sooner).
    #[arg(
        long,
        env = "FERROFLOW_STALLED_RESYNC_PERIOD",
        default_value = config::DEFAULT_STALLED_RESYNC_SECONDS
    )]
    pub stalled_resync_period: Seconds,
}

impl OperatorArgs {
    /// The per-kind settings reconcilers read.
    pub fn config(&self) -> OperatorConfig {
        OperatorConfig {
            default_artifact_root: self.default_artifact_root.clone(),
            serving_image: self.serving_image.clone(),
            ferroflow_image: self.ferroflow_image.clone(),
            tracking_url: self.tracking_url.clone(),
            tracking_api_url: self
                .tracking_api_url
                .clone()
                .unwrap_or_else(|| self.tracking_url.clone()),
            gateway: self.gateway.clone(),
            resync: self.resync_period.0,
            stalled_resync: self.stalled_resync_period.0,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write `<plural>.<group>.yaml` per kind into this folder instead of printing one stream.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Also write the Argo CD health checks (`health/<group>/<Kind>/health.lua`, `reasons.json`)
    /// into this folder (the repo's `config/argocd`), from the Lua of its `lua/` as built into
    /// this binary and the condition reasons. For `make generate`.
    #[arg(long, hide = true)]
    pub argocd_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The project folder: an MLproject file, or scripts run by name (`-e train.py`).
    pub project: PathBuf,
    /// The entry point: declared in the MLproject, or a `.py`/`.sh` file in the folder.
    #[arg(short = 'e', long, default_value = "main")]
    pub entry_point: String,
    /// A parameter, `name=value`; repeat for more. Undeclared ones are passed as `--name value`.
    #[arg(short = 'P', long = "param-list", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// The experiment to create the run in (created when missing).
    #[arg(long, env = "MLFLOW_EXPERIMENT_NAME")]
    pub experiment_name: Option<String>,
    /// The experiment to create the run in, by id (default: `0`).
    #[arg(long, env = "MLFLOW_EXPERIMENT_ID")]
    pub experiment_id: Option<String>,
    /// Run in this existing run instead of creating one (a ProjectRun's Pod gets it).
    #[arg(long)]
    pub run_id: Option<String>,
    /// The name of the created run.
    #[arg(long)]
    pub run_name: Option<String>,
    /// The tracking server (`http://host:port`).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// Where remote `path` parameters are downloaded (default: a temporary folder, removed
    /// when the run ends).
    #[arg(long)]
    pub storage_dir: Option<PathBuf>,
    /// `local` runs the command here; `kubernetes` creates a ProjectRun (PROJECT is then a
    /// folder in `--image`, or a `runs:/…`/`mlflow-artifacts:/…` source) and follows it.
    #[arg(short = 'b', long, value_enum, default_value = "local")]
    pub backend: RunBackend,
    /// With `--backend kubernetes`: the image the project runs in.
    #[arg(long)]
    pub image: Option<String>,
    /// With `--backend kubernetes`: the namespace of the ProjectRun (default: the kubeconfig's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// Where `ferroflow run` runs the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunBackend {
    Local,
    Kubernetes,
}

#[derive(Debug, clap::Args)]
pub struct ProjectInitArgs {
    /// Where to copy this binary (a volume the run's container mounts).
    #[arg(long)]
    pub binary_to: PathBuf,
    /// The project to download: `runs:/<run id>/<path>` or `mlflow-artifacts:/…`.
    #[arg(long, requires = "into")]
    pub source: Option<String>,
    /// The folder the project's files are downloaded into.
    #[arg(long)]
    pub into: Option<PathBuf>,
    /// The tracking server to download through.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub tracking_uri: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator_config(args: &[&str]) -> Result<OperatorConfig, clap::Error> {
        let cli = Cli::try_parse_from(["ferroflow", "operator"].iter().chain(args))?;
        match cli.command {
            Command::Operator(args) => Ok(args.config()),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn operator_settings_come_from_flags_with_pinned_defaults() {
        let defaults = operator_config(&[]).unwrap();
        assert_eq!(defaults.serving_image, config::DEFAULT_SERVING_IMAGE);
        assert_eq!(
            defaults.tracking_url.as_str(),
            "http://ferroflow.ferroflow-system.svc:5000/"
        );
        assert_eq!(defaults.tracking_api_url, defaults.tracking_url);
        assert_eq!(defaults.resync, Duration::from_secs(600));
        assert_eq!(defaults.stalled_resync, Duration::from_secs(60));
        assert_eq!(defaults.gateway, None);

        let set = operator_config(&[
            "--serving-image",
            "registry.example/serving:1",
            "--tracking-url",
            "http://tracking.ml.svc:80",
            "--tracking-api-url",
            "http://127.0.0.1:5000",
            "--resync-period",
            "30",
            "--stalled-resync-period",
            "0.5",
            "--gateway",
            "gateways/models",
        ])
        .unwrap();
        assert_eq!(set.serving_image, "registry.example/serving:1");
        assert_eq!(set.tracking_url.as_str(), "http://tracking.ml.svc/");
        assert_eq!(set.tracking_api_url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(set.resync, Duration::from_secs(30));
        assert_eq!(set.stalled_resync, Duration::from_millis(500));
        assert_eq!(
            set.gateway.map(|g| (g.namespace, g.name)),
            Some((Some("gateways".to_owned()), "models".to_owned()))
        );
    }

    #[test]
    fn a_tracking_url_that_is_no_url_is_refused() {
        let error = operator_config(&["--tracking-url", "ferroflow-server"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        let error = operator_config(&["--resync-period", "0"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        let error = operator_config(&["--gateway", "Gateways/"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
