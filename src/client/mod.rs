//! A small client of MLflow's REST API: what `ferroflow model download` needs to resolve a
//! model URI (registry lookups, runs) and fetch files through the tracking server's proxied
//! artifact API, so a serving Pod needs the tracking URL and no bucket credentials.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

pub mod download;

/// The proxied artifact API (`mlflow server --serve-artifacts`): lists and file bytes.
const ARTIFACTS_PREFIX: &str = "api/2.0/mlflow-artifacts/artifacts";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid tracking URI {uri:?}: {reason}")]
    TrackingUri { uri: String, reason: String },
    #[error("{method} {url}: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// MLflow's error answer, as `mlflow` prints it (`RESOURCE_DOES_NOT_EXIST: …`).
    #[error("{error_code}: {message}")]
    Mlflow { error_code: String, message: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unexpected answer: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// MLflow's tracking server at one base URL.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: String,
    message: String,
}

#[derive(Deserialize)]
struct DownloadUri {
    artifact_uri: String,
}

#[derive(Deserialize)]
struct AliasAnswer {
    model_version: VersionNumber,
}

#[derive(Deserialize)]
struct VersionNumber {
    version: String,
}

#[derive(Deserialize)]
struct RunAnswer {
    run: Run,
}

#[derive(Deserialize)]
struct Run {
    info: RunInfo,
}

#[derive(Deserialize)]
struct RunInfo {
    artifact_uri: String,
}

#[derive(Deserialize, Default)]
struct ListAnswer {
    #[serde(default)]
    files: Vec<FileInfo>,
}

/// One entry of a proxied listing: a basename, as MLflow answers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default)]
    pub file_size: Option<u64>,
}

impl MlflowClient {
    /// A client of the server at `tracking_uri` (`http://` or `https://`). A bearer token,
    /// when given, goes with every request (`MLFLOW_TRACKING_TOKEN`).
    pub fn new(tracking_uri: &str, token: Option<String>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::TrackingUri {
            uri: tracking_uri.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(tracking_uri).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(
                "only http:// and https:// tracking servers serve artifacts",
            ));
        }
        // Joined paths go below the base path, not beside its last segment.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("ferroflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(MlflowClient { http, base, token })
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base.join(path).map_err(|e| ClientError::TrackingUri {
            uri: self.base.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET` `path` with `query`, answered with JSON.
    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let mut url = self.url(path)?;
        url.query_pairs_mut().extend_pairs(query);
        let response = self.send(url.clone()).await?;
        let bytes = response.bytes().await.map_err(|source| ClientError::Http {
            method: "GET",
            url: url.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            url: url.to_string(),
            source,
        })
    }

    /// Sends a GET; an error answer becomes MLflow's error (or the status and body).
    async fn send(&self, url: Url) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.get(url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|source| ClientError::Http {
            method: "GET",
            url: url.to_string(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&body) {
            Ok(error) => ClientError::Mlflow {
                error_code: error.error_code,
                message: error.message,
            },
            Err(_) => ClientError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            },
        })
    }

    /// Fails with MLflow's RESOURCE_DOES_NOT_EXIST when the registered model does not exist.
    pub async fn check_registered_model(&self, name: &str) -> Result<(), ClientError> {
        let _model: serde_json::Value = self
            .get_json("api/2.0/mlflow/registered-models/get", &[("name", name)])
            .await?;
        Ok(())
    }

    /// Where a model version's files are (`get-download-uri`).
    pub async fn model_version_download_uri(
        &self,
        name: &str,
        version: &str,
    ) -> Result<String, ClientError> {
        let answer: DownloadUri = self
            .get_json(
                "api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await?;
        Ok(answer.artifact_uri)
    }

    /// The version an alias points at.
    pub async fn version_by_alias(&self, name: &str, alias: &str) -> Result<String, ClientError> {
        let answer: AliasAnswer = self
            .get_json(
                "api/2.0/mlflow/registered-models/alias",
                &[("name", name), ("alias", alias)],
            )
            .await?;
        Ok(answer.model_version.version)
    }

    /// A run's artifact root.
    pub async fn run_artifact_uri(&self, run_id: &str) -> Result<String, ClientError> {
        let answer: RunAnswer = self
            .get_json("api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .await?;
        Ok(answer.run.info.artifact_uri)
    }

    /// Lists one folder of the proxied artifact store (`path` relative to its root).
    pub async fn list_artifacts(&self, path: &str) -> Result<Vec<FileInfo>, ClientError> {
        let answer: ListAnswer = self.get_json(ARTIFACTS_PREFIX, &[("path", path)]).await?;
        Ok(answer.files)
    }

    /// Starts downloading one file of the proxied artifact store; the body streams.
    pub async fn artifact(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let mut url = self.url(ARTIFACTS_PREFIX)?;
        url.path_segments_mut()
            .map_err(|()| ClientError::TrackingUri {
                uri: self.base.to_string(),
                reason: "cannot be a base URL".to_owned(),
            })?
            .extend(path.split('/').filter(|segment| !segment.is_empty()));
        self.send(url).await
    }
}
