//! The few MLflow REST calls `ferroflow run` makes against a tracking server (ferroflow or
//! MLflow): experiments by name, create/get/update a run, log params and tags, download
//! artifacts behind `runs:/`, `models:/` and `mlflow-artifacts:` URIs. Authentication comes from MLflow's
//! variables (`MLFLOW_TRACKING_TOKEN`, `MLFLOW_TRACKING_USERNAME`/`_PASSWORD`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use super::python::url_scheme;
use crate::artifacts::path_from_proxy_uri;
use crate::store::registry::{ModelsSelector, ModelsUri, parse_models_uri};

/// Attempts per call when the server is unreachable or answers 429/502/503/504, as MLflow's
/// client retries them.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A call (not a download) that takes longer is given up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// MLflow's limit on params (and on tags) in one log-batch request.
const BATCH_LIMIT: usize = 100;

/// What went wrong talking to the tracking server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tracking URI '{0}' is not an http(s) URL: ferroflow run talks to a tracking server")]
    UnsupportedUri(String),
    #[error("cannot reach the tracking server at {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {code}: {message}")]
    Api {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{url} answered something that is not the expected JSON")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{0}' cannot be downloaded: {1}")]
    Download(String, String),
}

impl ClientError {
    /// MLflow's `RESOURCE_DOES_NOT_EXIST`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { code, .. } if code == "RESOURCE_DOES_NOT_EXIST")
    }
}

/// A run as the server reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub status: String,
}

/// Client of one tracking server.
#[derive(Debug, Clone)]
pub struct TrackingClient {
    base: url::Url,
    http: reqwest::Client,
    auth: Auth,
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl TrackingClient {
    /// A client of the server at `uri` (`http://…` or `https://…`).
    pub fn new(uri: &str) -> Result<Self, ClientError> {
        let unsupported = || ClientError::UnsupportedUri(uri.to_owned());
        let mut base = url::Url::parse(uri).map_err(|_| unsupported())?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(unsupported());
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| ClientError::Http {
                url: uri.to_owned(),
                source,
            })?;
        let auth = match (
            std::env::var("MLFLOW_TRACKING_TOKEN"),
            std::env::var("MLFLOW_TRACKING_USERNAME"),
            std::env::var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Ok(token), _, _) => Auth::Bearer(token),
            (_, Ok(user), Ok(password)) => Auth::Basic(user, password),
            _ => Auth::None,
        };
        Ok(Self { base, http, auth })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path()));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request, retrying what MLflow's client retries; the answer's bytes on success.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            request = match &self.auth {
                Auth::None => request,
                Auth::Bearer(token) => request.bearer_auth(token),
                Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            };
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let retryable = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response)
                    if attempt < ATTEMPTS
                        && matches!(response.status().as_u16(), 429 | 502..=504) =>
                {
                    true
                }
                Ok(response) => return Err(api_error(url.as_str(), response).await),
                Err(error) if attempt < ATTEMPTS && (error.is_connect() || error.is_timeout()) => {
                    true
                }
                Err(source) => {
                    return Err(ClientError::Http {
                        url: url.to_string(),
                        source,
                    });
                }
            };
            debug_assert!(retryable);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path, query);
        let response = self
            .send(method, url.clone(), body.as_ref(), Some(REQUEST_TIMEOUT))
            .await?;
        let bytes = response.bytes().await.map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Json {
            url: url.to_string(),
            source,
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        value: Value,
    ) -> Result<T, ClientError> {
        serde_json::from_value(value).map_err(|source| ClientError::Json {
            url: self.url(path, &[]).to_string(),
            source,
        })
    }

    /// The id of the experiment with this name, if there is one.
    pub async fn experiment_id_by_name(&self, name: &str) -> Result<Option<String>, ClientError> {
        let path = "api/2.0/mlflow/experiments/get-by-name";
        match self
            .call(
                reqwest::Method::GET,
                path,
                &[("experiment_name", name)],
                None,
            )
            .await
        {
            Ok(answer) => Ok(answer["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_owned)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates an experiment; its id.
    pub async fn create_experiment(&self, name: &str) -> Result<String, ClientError> {
        let path = "api/2.0/mlflow/experiments/create";
        let answer = self
            .call(
                reqwest::Method::POST,
                path,
                &[],
                Some(json!({ "name": name })),
            )
            .await?;
        self.decode(path, answer["experiment_id"].clone())
    }

    /// Creates a run with these tags, started now.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<RunInfo, ClientError> {
        let path = "api/2.0/mlflow/runs/create";
        let mut body = json!({
            "experiment_id": experiment_id,
            "start_time": now_millis(),
            "tags": tags.iter().map(|(key, value)| json!({"key": key, "value": value})).collect::<Vec<_>>(),
        });
        if let Some(name) = run_name {
            body["run_name"] = json!(name);
        }
        let answer = self
            .call(reqwest::Method::POST, path, &[], Some(body))
            .await?;
        self.decode(path, answer["run"]["info"].clone())
    }

    /// A run's info.
    pub async fn get_run(&self, run_id: &str) -> Result<RunInfo, ClientError> {
        let path = "api/2.0/mlflow/runs/get";
        let answer = self
            .call(reqwest::Method::GET, path, &[("run_id", run_id)], None)
            .await?;
        self.decode(path, answer["run"]["info"].clone())
    }

    /// Logs params and tags in one request (MLflow's limits: 100 params, 100 tags).
    pub async fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), ClientError> {
        let pairs = |items: &[(String, String)]| {
            items
                .iter()
                .map(|(key, value)| json!({"key": key, "value": value}))
                .collect::<Vec<_>>()
        };
        let requests = params.len().max(tags.len()).div_ceil(BATCH_LIMIT).max(1);
        for index in 0..requests {
            let body = json!({
                "run_id": run_id,
                "params": pairs(chunk(params, index, BATCH_LIMIT)),
                "tags": pairs(chunk(tags, index, BATCH_LIMIT)),
            });
            self.call(
                reqwest::Method::POST,
                "api/2.0/mlflow/runs/log-batch",
                &[],
                Some(body),
            )
            .await?;
        }
        Ok(())
    }

    /// Sets a run's status (`RUNNING`, `FINISHED`, `FAILED`, `KILLED`); ends it unless RUNNING.
    pub async fn set_status(&self, run_id: &str, status: &str) -> Result<(), ClientError> {
        let mut body = json!({"run_id": run_id, "status": status});
        if status != "RUNNING" {
            body["end_time"] = json!(now_millis());
        }
        self.call(
            reqwest::Method::POST,
            "api/2.0/mlflow/runs/update",
            &[],
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// Downloads the files behind `uri` (`runs:/<run id>/<path>`, `models:/…` or
    /// `mlflow-artifacts:…`) into `folder`; the local path of what was downloaded, as MLflow's
    /// `_download_artifact_from_uri` answers: `folder/<last path segment>`, or `folder` itself
    /// for a model or a run's whole artifact folder.
    pub async fn download(&self, uri: &str, folder: &Path) -> Result<PathBuf, ClientError> {
        let (path, name) = self.proxied_path(uri).await?;
        let target = match name {
            Some(name) => folder.join(name),
            None => folder.to_owned(),
        };
        self.download_tree(&path, &target).await?;
        Ok(target)
    }

    /// Downloads the folder behind `uri` so that its files land directly in `folder`.
    pub async fn download_contents(&self, uri: &str, folder: &Path) -> Result<(), ClientError> {
        let (path, _) = self.proxied_path(uri).await?;
        self.download_tree(&path, folder).await
    }

    /// The artifact path behind the tracking server's proxy that `uri` names, and the name
    /// MLflow gives its download (none for a model or a run's root).
    async fn proxied_path(&self, uri: &str) -> Result<(String, Option<String>), ClientError> {
        let last_segment = |path: &str| {
            let name = path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default();
            (!name.is_empty()).then(|| name.to_owned())
        };
        let (proxy_uri, name) = if let Some(rest) = uri.strip_prefix("runs:/") {
            let rest = rest.trim_start_matches('/');
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            let run = self.get_run(run_id).await?;
            let root = run.artifact_uri.trim_end_matches('/');
            (format!("{root}/{path}"), last_segment(path))
        } else if url_scheme(uri) == "models" {
            (self.model_artifact_uri(uri).await?, None)
        } else {
            (uri.to_owned(), last_segment(uri))
        };
        let Some(path) = path_from_proxy_uri(&proxy_uri) else {
            return Err(ClientError::Download(
                uri.to_owned(),
                format!(
                    "its files are at '{proxy_uri}', not behind the tracking server (mlflow-artifacts:)"
                ),
            ));
        };
        Ok((path.to_string().trim_end_matches('/').to_owned(), name))
    }

    /// Where the files of a `models:/` URI are: a logged model's artifact location, or what
    /// the registry's get-download-uri answers for the version the URI selects.
    async fn model_artifact_uri(&self, uri: &str) -> Result<String, ClientError> {
        let parsed = parse_models_uri(uri)
            .map_err(|error| ClientError::Download(uri.to_owned(), error.to_string()))?;
        let (name, selector) = match parsed {
            ModelsUri::LoggedModel(id) => {
                let path = format!("api/2.0/mlflow/logged-models/{id}");
                let answer = self.call(reqwest::Method::GET, &path, &[], None).await?;
                return self.decode(&path, answer["model"]["info"]["artifact_uri"].clone());
            }
            ModelsUri::Registered(name, selector) => (name, selector),
        };
        let version = match selector {
            ModelsSelector::Version(version) => version.to_string(),
            ModelsSelector::Alias(alias) => {
                let path = "api/2.0/mlflow/registered-models/alias";
                let answer = self
                    .call(
                        reqwest::Method::GET,
                        path,
                        &[("name", name), ("alias", alias)],
                        None,
                    )
                    .await?;
                self.decode(path, answer["model_version"]["version"].clone())?
            }
            ModelsSelector::Latest | ModelsSelector::Stage(_) => {
                let path = "api/2.0/mlflow/registered-models/get-latest-versions";
                let mut body = json!({ "name": name });
                if let ModelsSelector::Stage(stage) = selector {
                    body["stages"] = json!([stage]);
                }
                let answer = self
                    .call(reqwest::Method::POST, path, &[], Some(body))
                    .await?;
                let newest = answer["model_versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["version"].as_str()?.parse::<i64>().ok())
                    .max();
                match newest {
                    Some(version) => version.to_string(),
                    None => {
                        return Err(ClientError::Download(
                            uri.to_owned(),
                            format!("registered model '{name}' has no such version"),
                        ));
                    }
                }
            }
        };
        let path = "api/2.0/mlflow/model-versions/get-download-uri";
        let answer = self
            .call(
                reqwest::Method::GET,
                path,
                &[("name", name), ("version", &version)],
                None,
            )
            .await?;
        self.decode(path, answer["artifact_uri"].clone())
    }

    /// A folder recursively, or one file when `path` lists as empty (as MLflow decides).
    async fn download_tree(&self, path: &str, target: &Path) -> Result<(), ClientError> {
        let mut pending = vec![(path.to_owned(), target.to_owned(), true)];
        while let Some((path, target, top)) = pending.pop() {
            let listing = self
                .call(
                    reqwest::Method::GET,
                    "api/2.0/mlflow-artifacts/artifacts",
                    &[("path", &path)],
                    None,
                )
                .await?;
            let files = listing["files"].as_array().cloned().unwrap_or_default();
            if files.is_empty() && top {
                self.download_file(&path, &target).await?;
                continue;
            }
            create_dir(&target).await?;
            for file in files {
                let name = file["path"].as_str().unwrap_or_default();
                let name = name.rsplit('/').next().unwrap_or(name);
                if name.is_empty() || name == "." || name == ".." {
                    continue;
                }
                let child = if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}/{name}")
                };
                if file["is_dir"].as_bool() == Some(true) {
                    pending.push((child, target.join(name), false));
                } else {
                    self.download_file(&child, &target.join(name)).await?;
                }
            }
        }
        Ok(())
    }

    async fn download_file(&self, path: &str, target: &Path) -> Result<(), ClientError> {
        let encoded: String = path
            .split('/')
            .map(|segment| {
                url::form_urlencoded::byte_serialize(segment.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20")
            })
            .collect::<Vec<_>>()
            .join("/");
        let url = self.url(
            &format!("api/2.0/mlflow-artifacts/artifacts/{encoded}"),
            &[],
        );
        let mut response = self
            .send(reqwest::Method::GET, url.clone(), None, None)
            .await?;
        if let Some(parent) = target.parent() {
            create_dir(parent).await?;
        }
        let write_error = |source| ClientError::Write {
            path: target.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::create(target).await.map_err(write_error)?;
        while let Some(chunk) = response.chunk().await.map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })? {
            file.write_all(&chunk).await.map_err(write_error)?;
        }
        file.flush().await.map_err(write_error)?;
        Ok(())
    }
}

async fn create_dir(path: &Path) -> Result<(), ClientError> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|source| ClientError::Write {
            path: path.to_owned(),
            source,
        })
}

/// The error MLflow's JSON body names, or the status line when there is none.
async fn api_error(url: &str, response: reqwest::Response) -> ClientError {
    let status = response.status();
    let body: Value = response
        .bytes()
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    ClientError::Api {
        url: url.to_owned(),
        status: status.as_u16(),
        code: body["error_code"].as_str().unwrap_or("UNKNOWN").to_owned(),
        message: body["message"]
            .as_str()
            .unwrap_or(status.canonical_reason().unwrap_or(""))
            .to_owned(),
    }
}

/// The `index`th slice of at most `size` items (empty past the end).
fn chunk(items: &[(String, String)], index: usize, size: usize) -> &[(String, String)] {
    let start = (index * size).min(items.len());
    &items[start..(start + size).min(items.len())]
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
