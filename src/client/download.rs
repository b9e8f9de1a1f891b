//! Model and artifact URIs (`models:/…`, `runs:/…`, `mlflow-artifacts:…`) resolved through the
//! registry or the run, and their files copied through the tracking server's proxied artifact
//! API, so a Pod needs the tracking URL and no bucket credentials; one file is uploaded the same
//! way (the operator stores a ProjectRun Pod's log). `ferroflow model download` lands
//! atomically: everything goes to a sibling temporary folder first, renamed to `DIR` once
//! complete, so a serving container never sees half a model.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{Body, ClientError, MlflowClient};
use crate::store::registry::{ModelsSelector, ModelsUri, parse_models_uri};

/// Files fetched at once: enough to hide latency, few enough for a small init container.
const PARALLEL_DOWNLOADS: usize = 4;
/// The proxied artifact API (`mlflow server --serve-artifacts`): lists and file bytes.
const ARTIFACTS_PREFIX: &str = "api/2.0/mlflow-artifacts/artifacts";
/// The proxied artifact route inside an `http(s)://` artifact URI.
const PROXY_ROUTE: &str = "/api/2.0/mlflow-artifacts/artifacts/";

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "unsupported model URI {0:?}: expected models:/NAME/VERSION, models:/NAME/STAGE, models:/NAME@ALIAS, models:/MODEL_ID, runs:/RUN_ID/PATH or mlflow-artifacts:/PATH"
    )]
    UnsupportedUri(String),
    #[error(
        "artifact URI {0:?} is not served through the tracking server's artifact proxy (mlflow-artifacts:); ferroflow downloads through the proxy only"
    )]
    NotProxied(String),
    #[error("registered model '{0}' has no such version")]
    NoVersion(String),
    #[error("the server listed an unsafe file name {0:?}")]
    UnsafeName(String),
    #[error("no artifacts at {0}")]
    NotFound(String),
    #[error("{uri} is larger than {max_bytes} bytes")]
    TooLarge { uri: String, max_bytes: u64 },
    #[error("{0} exists and is not empty")]
    DestinationNotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An artifact URI the client can download.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ArtifactUri {
    /// `models:/NAME/VERSION`, `models:/NAME/STAGE`, `models:/NAME/latest`,
    /// `models:/NAME@ALIAS` or `models:/MODEL_ID` (checked by [`parse_models_uri`]).
    Models(String),
    /// `runs:/RUN_ID/PATH` (PATH may be empty: the run's whole artifact root)
    Run { run_id: String, path: String },
    /// An artifact URI, already resolved.
    Artifacts(String),
}

impl ArtifactUri {
    fn parse(uri: &str) -> Result<Self, DownloadError> {
        let unsupported = || DownloadError::UnsupportedUri(uri.to_owned());
        if uri.starts_with("models:") {
            parse_models_uri(uri).map_err(|_| unsupported())?;
            return Ok(ArtifactUri::Models(uri.to_owned()));
        }
        if let Some(rest) = uri.strip_prefix("runs:/") {
            let rest = rest.trim_start_matches('/');
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            if run_id.is_empty() {
                return Err(unsupported());
            }
            return Ok(ArtifactUri::Run {
                run_id: run_id.to_owned(),
                path: path.trim_matches('/').to_owned(),
            });
        }
        if uri.starts_with("mlflow-artifacts:") || uri.contains(PROXY_ROUTE) {
            return Ok(ArtifactUri::Artifacts(uri.to_owned()));
        }
        Err(unsupported())
    }

    /// The name MLflow's `_download_artifact_from_uri` gives the download: the URI's last path
    /// segment; none for a model or a run's whole artifact folder.
    fn download_name(&self) -> Option<&str> {
        let path = match self {
            ArtifactUri::Models(_) => return None,
            ArtifactUri::Run { path, .. } => path,
            ArtifactUri::Artifacts(uri) => uri,
        };
        let name = path.trim_end_matches('/').rsplit('/').next()?;
        (!name.is_empty()).then_some(name)
    }
}

/// The path below the proxied artifact root that an artifact URI names.
fn proxied_path(artifact_uri: &str) -> Result<String, DownloadError> {
    let path = if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
        // `mlflow-artifacts:/path` or `mlflow-artifacts://authority/path`.
        match rest.strip_prefix("//") {
            Some(with_authority) => with_authority.split_once('/').map_or("", |(_, path)| path),
            None => rest,
        }
    } else if let Some((_, path)) = artifact_uri.split_once(PROXY_ROUTE) {
        path
    } else {
        return Err(DownloadError::NotProxied(artifact_uri.to_owned()));
    };
    let path = crate::percent::decode(path.trim_matches('/'));
    if path.split('/').any(|segment| segment == "..") {
        return Err(DownloadError::UnsafeName(path));
    }
    Ok(path)
}

/// A registry version a `models:/` URI resolved to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct RegistryVersion {
    model_name: String,
    model_version: String,
}

/// Where a URI's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    /// The path below the proxied artifact root.
    path: String,
    /// For registered `models:/` URIs, the version they name.
    registered: Option<RegistryVersion>,
}

/// Resolves `uri` through the registry (or the run) to its files.
async fn resolve(client: &MlflowClient, uri: &ArtifactUri) -> Result<Resolved, DownloadError> {
    let (artifact_uri, registered) = match uri {
        ArtifactUri::Models(uri) => model_artifact_uri(client, uri).await?,
        ArtifactUri::Run { run_id, path } => {
            let root = client.get_run(run_id).await?.artifact_uri;
            let uri = if path.is_empty() {
                root
            } else {
                format!("{}/{path}", root.trim_end_matches('/'))
            };
            (uri, None)
        }
        ArtifactUri::Artifacts(artifact_uri) => (artifact_uri.clone(), None),
    };
    Ok(Resolved {
        path: proxied_path(&artifact_uri)?,
        registered,
    })
}

/// Where the files of a `models:/` URI are: a logged model's artifact location, or what the
/// registry's get-download-uri answers for the version the URI selects.
async fn model_artifact_uri(
    client: &MlflowClient,
    uri: &str,
) -> Result<(String, Option<RegistryVersion>), DownloadError> {
    let parsed =
        parse_models_uri(uri).map_err(|_| DownloadError::UnsupportedUri(uri.to_owned()))?;
    let (name, selector) = match parsed {
        ModelsUri::LoggedModel(id) => {
            let path = format!("api/2.0/mlflow/logged-models/{id}");
            let answer = client.get(&path, &[]).await?;
            let artifact_uri =
                client.decode(&path, answer["model"]["info"]["artifact_uri"].clone())?;
            return Ok((artifact_uri, None));
        }
        ModelsUri::Registered(name, selector) => (name, selector),
    };
    let version = match selector {
        ModelsSelector::Version(version) => {
            // As the mlflow client does first: a missing model is reported as such, not as a
            // missing version.
            client
                .get("api/2.0/mlflow/registered-models/get", &[("name", name)])
                .await?;
            version.to_string()
        }
        ModelsSelector::Alias(alias) => {
            let path = "api/2.0/mlflow/registered-models/alias";
            let answer = client
                .get(path, &[("name", name), ("alias", alias)])
                .await?;
            client.decode(path, answer["model_version"]["version"].clone())?
        }
        ModelsSelector::Latest | ModelsSelector::Stage(_) => {
            let mut body = json!({ "name": name });
            if let ModelsSelector::Stage(stage) = selector {
                body["stages"] = json!([stage]);
            }
            let answer = client
                .post("api/2.0/mlflow/registered-models/get-latest-versions", body)
                .await?;
            answer["model_versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["version"].as_str()?.parse::<i64>().ok())
                .max()
                .ok_or_else(|| DownloadError::NoVersion(name.to_owned()))?
                .to_string()
        }
    };
    let path = "api/2.0/mlflow/model-versions/get-download-uri";
    let answer = client
        .get(path, &[("name", name), ("version", &version)])
        .await?;
    let artifact_uri = client.decode(path, answer["artifact_uri"].clone())?;
    Ok((
        artifact_uri,
        Some(RegistryVersion {
            model_name: name.to_owned(),
            model_version: version,
        }),
    ))
}

/// One entry of a proxied listing: a basename, as MLflow answers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
struct FileInfo {
    path: String,
    #[serde(default)]
    is_dir: bool,
}

impl MlflowClient {
    /// Lists one folder of the proxied artifact store (`path` relative to its root).
    async fn list_artifacts(&self, path: &str) -> Result<Vec<FileInfo>, ClientError> {
        let answer = self.get(ARTIFACTS_PREFIX, &[("path", path)]).await?;
        if answer["files"].is_null() {
            return Ok(Vec::new());
        }
        self.decode(ARTIFACTS_PREFIX, answer["files"].clone())
    }

    /// Starts downloading one file of the proxied artifact store; the body streams (no
    /// timeout: a model's file may be large).
    async fn artifact(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let url = self.artifact_url(path)?;
        self.send(reqwest::Method::GET, url, None, None).await
    }

    /// The URL of one file of the proxied artifact store.
    fn artifact_url(&self, path: &str) -> Result<url::Url, ClientError> {
        let mut url = self.url(ARTIFACTS_PREFIX, &[]);
        url.path_segments_mut()
            .map_err(|()| ClientError::UnsupportedUri(self.base.to_string()))?
            .extend(path.split('/').filter(|segment| !segment.is_empty()));
        Ok(url)
    }
}

/// Whether the artifact folder `artifact_uri` holds a model (an `MLmodel` file), as
/// `mlflow.register_model` checks a `runs:/` URI before looking for a logged model.
pub async fn has_mlmodel(client: &MlflowClient, artifact_uri: &str) -> Result<bool, DownloadError> {
    let folder = proxied_path(artifact_uri)?;
    let listed = client.list_artifacts(&folder).await?;
    Ok(listed
        .iter()
        .any(|file| !file.is_dir && file.path.rsplit('/').next() == Some("MLmodel")))
}

/// A file read whole (an `MLmodel`) that takes longer is given up.
const SMALL_FILE_TIMEOUT: Duration = Duration::from_secs(30);

/// The bytes of the one file `artifact_uri` names, read whole through the proxied artifact API;
/// `None` when the server has no such file. A file larger than `max_bytes` is refused.
pub async fn read_file(
    client: &MlflowClient,
    artifact_uri: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, DownloadError> {
    let url = client.artifact_url(&proxied_path(artifact_uri)?)?;
    let mut response = match client
        .send(
            reqwest::Method::GET,
            url.clone(),
            None,
            Some(SMALL_FILE_TIMEOUT),
        )
        .await
    {
        Ok(response) => response,
        Err(ClientError::Api { status: 404, .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let too_large = || DownloadError::TooLarge {
        uri: artifact_uri.to_owned(),
        max_bytes,
    };
    if response
        .content_length()
        .is_some_and(|size| size > max_bytes)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|source| ClientError::Http {
        url: url.to_string(),
        source,
    })? {
        if (bytes.len() + chunk.len()) as u64 > max_bytes {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// Writes `contents` as the file `artifact_uri` (inside a run's artifact folder) through the
/// proxied artifact API, as `mlflow.log_text` does; an existing file is replaced.
pub async fn upload_artifact(
    client: &MlflowClient,
    artifact_uri: &str,
    contents: &[u8],
) -> Result<(), DownloadError> {
    let path = proxied_path(artifact_uri)?;
    let url = client.artifact_url(&path)?;
    client
        .send(reqwest::Method::PUT, url, Some(Body::Bytes(contents)), None)
        .await?;
    Ok(())
}

/// Downloads the files behind `uri` into `folder`, as MLflow's `_download_artifact_from_uri`
/// does for `mlflow run`'s path parameters; the local path of what was downloaded:
/// `folder/<last path segment>`, or `folder` itself for a model or a run's whole artifact
/// folder.
pub async fn download_artifact(
    client: &MlflowClient,
    uri: &str,
    folder: &Path,
) -> Result<PathBuf, DownloadError> {
    let parsed = ArtifactUri::parse(uri)?;
    let root = resolve(client, &parsed).await?.path;
    let target = match parsed.download_name() {
        Some(name) => folder.join(name),
        None => folder.to_owned(),
    };
    let files = list_files(client, &root).await?;
    // One file lands in `folder` under its own name, which is the download's name.
    let into = if files == [None] { folder } else { &target };
    fetch_into(client, &root, files, into).await?;
    Ok(target)
}

/// Downloads the one file `uri` names into `folder`, under its own name; its local path. (A
/// listing of a file's path names the file itself, so [`download_artifact`] would look for it
/// below itself.)
pub async fn download_file(
    client: &MlflowClient,
    uri: &str,
    folder: &Path,
) -> Result<PathBuf, DownloadError> {
    let root = resolve(client, &ArtifactUri::parse(uri)?).await?.path;
    fetch_into(client, &root, vec![None], folder).await?;
    Ok(folder.join(root.rsplit('/').next().unwrap_or("artifact")))
}

/// Downloads the folder behind `uri` so that its files land directly in `folder`.
pub async fn download_contents(
    client: &MlflowClient,
    uri: &str,
    folder: &Path,
) -> Result<Downloaded, DownloadError> {
    let root = resolve(client, &ArtifactUri::parse(uri)?).await?.path;
    let files = list_files(client, &root).await?;
    fetch_into(client, &root, files, folder).await
}

/// What a download brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    pub files: usize,
    pub bytes: u64,
}

/// Downloads everything `uri` names into `dir` (which must not exist, or be empty).
pub async fn download_model(
    client: &MlflowClient,
    uri: &str,
    dir: &Path,
) -> Result<Downloaded, DownloadError> {
    let model_uri = ArtifactUri::parse(uri)?;
    ensure_free(dir).await?;
    let resolved = resolve(client, &model_uri).await?;
    let root = resolved.path;
    let files = list_files(client, &root).await?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let leaf = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_owned());
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|source| DownloadError::Io {
            path: parent.clone(),
            source,
        })?;
    let staging = parent.join(format!(".{leaf}.partial-{}", uuid::Uuid::new_v4().simple()));
    let mut result = fetch_into(client, &root, files, &staging).await;
    if let (Ok(_), Some(meta)) = (
        &result,
        resolved.registered.as_ref().and_then(registered_model_meta),
    ) {
        let path = staging.join(REGISTERED_MODEL_META);
        if let Err(source) = tokio::fs::write(&path, meta).await {
            result = Err(DownloadError::Io { path, source });
        }
    }
    let outcome = match result {
        Ok(downloaded) => tokio::fs::rename(&staging, dir)
            .await
            .map(|()| downloaded)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::DirectoryNotEmpty => {
                    DownloadError::DestinationNotEmpty(dir.to_owned())
                }
                _ => DownloadError::Io {
                    path: dir.to_owned(),
                    source,
                },
            }),
        Err(error) => Err(error),
    };
    if outcome.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ignored = tokio::fs::remove_dir_all(&staging).await;
    }
    outcome
}

/// The file MLflow's `models:/` downloads add beside the model's own files, naming the
/// registered model and version they came from.
const REGISTERED_MODEL_META: &str = "registered_model_meta";

/// `registered_model_meta`'s YAML, as MLflow writes it (`model_version` a string).
fn registered_model_meta(version: &RegistryVersion) -> Option<String> {
    serde_yaml::to_string(version).ok()
}

/// Fails early when `dir` holds something: a download never mixes with older files.
async fn ensure_free(dir: &Path) -> Result<(), DownloadError> {
    match tokio::fs::read_dir(dir).await {
        Ok(mut entries) => match entries.next_entry().await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(DownloadError::DestinationNotEmpty(dir.to_owned())),
            Err(source) => Err(DownloadError::Io {
                path: dir.to_owned(),
                source,
            }),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DownloadError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// One file to fetch: its path below the resolved root, `None` when the root is the file.
type Relative = Option<String>;

/// Every file below `root`, walking folders; a root that lists nothing is taken as one file.
async fn list_files(client: &MlflowClient, root: &str) -> Result<Vec<Relative>, DownloadError> {
    let mut files = Vec::new();
    let mut folders = vec![String::new()];
    while let Some(folder) = folders.pop() {
        let listed = client.list_artifacts(&join(root, &folder)).await?;
        for entry in listed {
            let name = entry.path.rsplit('/').next().unwrap_or_default();
            if name.is_empty() || name == "." || name == ".." || name.contains('\\') {
                return Err(DownloadError::UnsafeName(entry.path));
            }
            let relative = join(&folder, name);
            if entry.is_dir {
                folders.push(relative);
            } else {
                files.push(Some(relative));
            }
        }
    }
    if files.is_empty() {
        files.push(None);
    }
    files.sort();
    Ok(files)
}

fn join(base: &str, name: &str) -> String {
    match (base.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}/{name}"),
    }
}

async fn fetch_into(
    client: &MlflowClient,
    root: &str,
    files: Vec<Relative>,
    staging: &Path,
) -> Result<Downloaded, DownloadError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DownloadError::Io { path, source }
    };
    tokio::fs::create_dir_all(staging)
        .await
        .map_err(io(staging))?;
    let count = files.len();
    let bytes = futures::stream::iter(files)
        .map(|relative| async move {
            let (remote, local) = match &relative {
                Some(relative) => (join(root, relative), staging.join(relative)),
                None => {
                    let name = root.rsplit('/').next().unwrap_or("artifact");
                    (root.to_owned(), staging.join(name))
                }
            };
            if let Some(parent) = local.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(io(parent))?;
            }
            let mut response = client
                .artifact(&remote)
                .await
                .map_err(|error| match error {
                    ClientError::Api { status: 404, .. } if relative.is_none() => {
                        DownloadError::NotFound(format!("mlflow-artifacts:/{root}"))
                    }
                    other => other.into(),
                })?;
            let mut file = tokio::fs::File::create(&local).await.map_err(io(&local))?;
            let mut written = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(|source| ClientError::Http {
                url: remote.clone(),
                source,
            })? {
                file.write_all(&chunk).await.map_err(io(&local))?;
                written += chunk.len() as u64;
            }
            file.sync_all().await.map_err(io(&local))?;
            Ok::<u64, DownloadError>(written)
        })
        .buffer_unordered(PARALLEL_DOWNLOADS)
        .try_fold(0u64, |total, written| async move { Ok(total + written) })
        .await?;
    Ok(Downloaded {
        files: count,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uris_parse_as_mlflow_writes_them() {
        for models in [
            "models:/churn/3",
            "models:/churn model@champion",
            "models:/churn/Production",
            "models:/churn/latest",
            "models:/m-0123456789abcdef",
        ] {
            assert_eq!(
                ArtifactUri::parse(models).unwrap(),
                ArtifactUri::Models(models.to_owned())
            );
        }
        assert_eq!(
            ArtifactUri::parse("runs:/abc123/model").unwrap(),
            ArtifactUri::Run {
                run_id: "abc123".to_owned(),
                path: "model".to_owned()
            }
        );
        assert_eq!(
            ArtifactUri::parse("runs:/abc123").unwrap(),
            ArtifactUri::Run {
                run_id: "abc123".to_owned(),
                path: String::new()
            }
        );
        for unsupported in [
            "models:/",
            "models:/churn/3/extra",
            "models:/churn@",
            "runs:/",
            "s3://bucket/model",
            "/tmp/model",
        ] {
            assert!(
                matches!(
                    ArtifactUri::parse(unsupported),
                    Err(DownloadError::UnsupportedUri(_))
                ),
                "{unsupported}"
            );
        }
    }

    #[test]
    fn artifact_uris_map_to_proxied_paths() {
        assert_eq!(
            proxied_path("mlflow-artifacts:/1/abc/artifacts/model").unwrap(),
            "1/abc/artifacts/model"
        );
        assert_eq!(
            proxied_path("mlflow-artifacts://tracking:5000/1/abc/artifacts/model/").unwrap(),
            "1/abc/artifacts/model"
        );
        assert_eq!(
            proxied_path("http://tracking:5000/api/2.0/mlflow-artifacts/artifacts/1/a%20b")
                .unwrap(),
            "1/a b"
        );
        assert!(matches!(
            proxied_path("s3://bucket/1/abc/artifacts/model"),
            Err(DownloadError::NotProxied(_))
        ));
        assert!(matches!(
            proxied_path("mlflow-artifacts:/1/../../etc"),
            Err(DownloadError::UnsafeName(_))
        ));
    }
}
