//! The one client of a tracking server's REST API (ferroflow or MLflow): the HTTP layer (auth,
//! retries, MLflow's error answers) here; resolving and downloading model and artifact URIs
//! through the proxied artifact API in `download` (`ferroflow model download`, the path
//! parameters of `ferroflow run`, `ferroflow project-init`); experiments and runs in `runs`;
//! the promotion history in `promotions`.

use std::time::Duration;

use serde_json::Value;
use url::Url;

pub mod download;
pub mod promotions;
pub mod runs;

pub use runs::RunInfo;

/// Attempts per call when the server is unreachable or answers 429/502/503/504, as MLflow's
/// client retries them.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A call (not a download) that takes longer is given up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What went wrong talking to the tracking server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tracking URI '{0}' is not an http(s) URL: ferroflow talks to a tracking server")]
    UnsupportedUri(String),
    #[error("cannot reach the tracking server at {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An error answer; `code` and `message` are MLflow's when the body carries them.
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
}

impl ClientError {
    /// MLflow's `RESOURCE_DOES_NOT_EXIST`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { code, .. } if code == "RESOURCE_DOES_NOT_EXIST")
    }
}

/// Client of one tracking server.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    base: Url,
    http: reqwest::Client,
    auth: Auth,
    /// Sent as `X-MLFLOW-WORKSPACE` when set.
    workspace: Option<String>,
}

/// The environment variable MLflow's client reads the workspace from.
pub const WORKSPACE_ENV: &str = "MLFLOW_WORKSPACE";

/// A file holding the bearer token, read when `MLFLOW_TRACKING_TOKEN` is unset: a projected
/// service-account token is a file (it cannot be an environment variable) and is renewed in
/// place, so the operator's init containers name where theirs is mounted.
pub const TOKEN_FILE_ENV: &str = "FERROFLOW_TRACKING_TOKEN_FILE";

/// The bearer token: the one given, else `MLFLOW_TRACKING_TOKEN`, else the contents of the
/// file `FERROFLOW_TRACKING_TOKEN_FILE` names (trimmed; an empty or unreadable file is none).
pub fn bearer_token(given: Option<String>) -> Option<String> {
    given
        .or_else(|| std::env::var("MLFLOW_TRACKING_TOKEN").ok())
        .or_else(|| token_from_file(std::env::var_os(TOKEN_FILE_ENV)?))
}

/// A token file's contents, trimmed (the kubelet writes a projected token with no newline, a
/// person often with one); an empty or unreadable file is no token.
pub fn token_from_file(path: impl AsRef<std::path::Path>) -> Option<String> {
    let token = std::fs::read_to_string(path).ok()?;
    Some(token.trim().to_owned()).filter(|token| !token.is_empty())
}

/// What a request carries.
#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    Json(&'a Value),
    /// A file's bytes (an artifact upload).
    Bytes(&'a [u8]),
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl MlflowClient {
    /// A client of the server at `uri` (`http://…` or `https://…`). Authentication as MLflow's
    /// client does it: the bearer `token` (else `MLFLOW_TRACKING_TOKEN`, else the file
    /// `FERROFLOW_TRACKING_TOKEN_FILE` names) when there is one,
    /// else basic auth from `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`. The
    /// workspace, also as MLflow's client does it: `MLFLOW_WORKSPACE` (trimmed; unset or empty:
    /// none, the server's default).
    pub fn new(uri: &str, token: Option<String>) -> Result<Self, ClientError> {
        let unsupported = || ClientError::UnsupportedUri(uri.to_owned());
        let mut base = Url::parse(uri).map_err(|_| unsupported())?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(unsupported());
        }
        // Paths go below the base path, not beside its last segment.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ferroflow/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        if base.scheme() == "http" {
            // Plain http needs no CA certificates, and ferroflow's image has none: without
            // this the client refuses to start for want of the system's.
            builder = builder.tls_certs_only([]);
        }
        let http = builder.build().map_err(|source| ClientError::Http {
            url: uri.to_owned(),
            source,
        })?;
        let auth = match (
            bearer_token(token),
            std::env::var("MLFLOW_TRACKING_USERNAME"),
            std::env::var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(token), _, _) => Auth::Bearer(token),
            (None, Ok(user), Ok(password)) => Auth::Basic(user, password),
            _ => Auth::None,
        };
        let workspace = std::env::var(WORKSPACE_ENV)
            .ok()
            .map(|workspace| workspace.trim().to_owned())
            .filter(|workspace| !workspace.is_empty());
        Ok(Self {
            base,
            http,
            auth,
            workspace,
        })
    }

    /// The same client, talking to `workspace` (whatever `MLFLOW_WORKSPACE` says).
    pub fn in_workspace(mut self, workspace: &str) -> Self {
        self.workspace = Some(workspace.to_owned());
        self
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path()));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request, retrying what MLflow's client retries; an error answer becomes
    /// [`ClientError::Api`].
    async fn send(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<Body<'_>>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            if let Some(workspace) = &self.workspace {
                request = request.header(crate::api::auth::WORKSPACE_HEADER, workspace);
            }
            request = match &self.auth {
                Auth::None => request,
                Auth::Bearer(token) => request.bearer_auth(token),
                Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            };
            request = match body {
                Some(Body::Json(json)) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json.to_string()),
                Some(Body::Bytes(bytes)) => request.body(bytes.to_vec()),
                None => request,
            };
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response)
                    if attempt < ATTEMPTS
                        && matches!(response.status().as_u16(), 429 | 502..=504) => {}
                Ok(response) => return Err(api_error(url.as_str(), response).await),
                Err(error) if attempt < ATTEMPTS && (error.is_connect() || error.is_timeout()) => {}
                Err(source) => {
                    return Err(ClientError::Http {
                        url: url.to_string(),
                        source,
                    });
                }
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// One API call; its JSON answer (`null` when empty).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path, query);
        let response = self
            .send(
                method,
                url.clone(),
                body.as_ref().map(Body::Json),
                Some(REQUEST_TIMEOUT),
            )
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

    /// A GET call's answer.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    /// A POST call's answer.
    async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    /// Reads one field of `path`'s answer as `T`.
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
