//! Per-kind settings of the operator, set once at start-up from flags and environment
//! (`cli::OperatorArgs::config`). A new kind adds the settings it needs here, so reconcilers
//! read them from the context instead of from the command line or the environment.

use std::time::Duration;

use url::Url;

use crate::crd::model_deployment::GatewayRef;

/// The MLflow image that serves models when a ModelDeployment names none: pinned to the MLflow
/// release the client tests run against, so a serving Pod never changes under a user.
pub const DEFAULT_SERVING_IMAGE: &str = "ghcr.io/mlflow/mlflow:v3.17.2";
/// ferroflow's own image, whose binary the init container of a ProjectRun's Pod copies into
/// the user's image: the release of the running operator.
pub const DEFAULT_FERROFLOW_IMAGE: &str =
    concat!("ghcr.io/ferroflow/ferroflow:", env!("CARGO_PKG_VERSION"));
/// Where Pods reach `ferroflow server` inside the cluster, unless configured.
pub const DEFAULT_TRACKING_URL: &str = "http://ferroflow.ferroflow-system.svc:5000";
/// Default of [`OperatorConfig::resync`], in seconds.
pub const DEFAULT_RESYNC_SECONDS: &str = "600";
/// Default of [`OperatorConfig::stalled_resync`], in seconds.
pub const DEFAULT_STALLED_RESYNC_SECONDS: &str = "60";

#[derive(Debug, Clone, PartialEq)]
pub struct OperatorConfig {
    /// Artifact root recorded on experiments the operator creates (as `server`'s flag).
    pub default_artifact_root: String,
    /// Runtime image of serving Pods when the resource names none.
    pub serving_image: String,
    /// ferroflow's image, for the init container of a ProjectRun's Pod.
    pub ferroflow_image: String,
    /// The tracking server's URL as Pods the operator creates see it (`MLFLOW_TRACKING_URI`).
    pub tracking_url: Url,
    /// The tracking server's URL as the operator itself reaches it (to read the `MLmodel` of a
    /// version it registers); `tracking_url` unless the operator runs elsewhere.
    pub tracking_api_url: Url,
    /// The Gateway a ModelDeployment's HTTPRoute attaches to when the resource names none.
    pub gateway: Option<GatewayRef>,
    /// How often a Ready resource is checked again for drift nobody notified the operator of.
    pub resync: Duration,
    /// How often a Stalled resource is looked at again (edits and store changes also wake it).
    pub stalled_resync: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubectl apply -k config/default` installs the server's Service in its namespace: the
    /// default tracking URL must be where that Service answers.
    #[test]
    fn the_default_tracking_url_is_the_service_the_kustomize_install_creates() {
        let service: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../config/server/service.yaml")).unwrap();
        let kustomization: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../config/default/kustomization.yaml")).unwrap();
        let name = service["metadata"]["name"].as_str().unwrap();
        let namespace = kustomization["namespace"].as_str().unwrap();
        let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
        assert_eq!(
            DEFAULT_TRACKING_URL,
            format!("http://{name}.{namespace}.svc:{port}")
        );
    }
}
