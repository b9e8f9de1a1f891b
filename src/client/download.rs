//! `ferroflow model download URI DIR`: resolve a model URI through the registry and copy its
//! files through the proxied artifact API into `DIR`, atomically: everything lands in a
//! sibling temporary folder first, which is renamed to `DIR` once complete, so a serving
//! container never sees half a model.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::{ClientError, MlflowClient};

/// Files fetched at once: enough to hide latency, few enough for a small init container.
const PARALLEL_DOWNLOADS: usize = 4;
/// The proxied artifact route inside an `http(s)://` artifact URI.
const PROXY_ROUTE: &str = "/api/2.0/mlflow-artifacts/artifacts/";

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "unsupported model URI {0:?}: expected models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH or mlflow-artifacts:/PATH"
    )]
    UnsupportedUri(String),
    #[error(
        "artifact URI {0:?} is not served through the tracking server's artifact proxy (mlflow-artifacts:); ferroflow model download fetches through the proxy only"
    )]
    NotProxied(String),
    #[error("the server listed an unsafe file name {0:?}")]
    UnsafeName(String),
    #[error("no artifacts at {0}")]
    NotFound(String),
    #[error("{0} exists and is not empty")]
    DestinationNotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A model URI as `ferroflow model download` accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelUri {
    /// `models:/NAME/VERSION`
    Version { name: String, version: String },
    /// `models:/NAME@ALIAS`
    Alias { name: String, alias: String },
    /// `runs:/RUN_ID/PATH` (PATH may be empty: the run's whole artifact root)
    Run { run_id: String, path: String },
    /// An artifact URI, already resolved.
    Artifacts(String),
}

impl ModelUri {
    pub fn parse(uri: &str) -> Result<Self, DownloadError> {
        let unsupported = || DownloadError::UnsupportedUri(uri.to_owned());
        if let Some(rest) = uri.strip_prefix("models:/") {
            let rest = rest.trim_start_matches('/');
            if let Some((name, alias)) = rest.split_once('@') {
                if name.is_empty() || alias.is_empty() || alias.contains('/') {
                    return Err(unsupported());
                }
                return Ok(ModelUri::Alias {
                    name: name.to_owned(),
                    alias: alias.to_owned(),
                });
            }
            let (name, version) = rest.split_once('/').ok_or_else(unsupported)?;
            let version = version.trim_end_matches('/');
            if name.is_empty() || version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit())
            {
                // Stages and `latest` need the deprecated stage API; serving pins a version.
                return Err(unsupported());
            }
            return Ok(ModelUri::Version {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        if let Some(rest) = uri.strip_prefix("runs:/") {
            let rest = rest.trim_start_matches('/');
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            if run_id.is_empty() {
                return Err(unsupported());
            }
            return Ok(ModelUri::Run {
                run_id: run_id.to_owned(),
                path: path.trim_matches('/').to_owned(),
            });
        }
        if uri.starts_with("mlflow-artifacts:") || uri.contains(PROXY_ROUTE) {
            return Ok(ModelUri::Artifacts(uri.to_owned()));
        }
        Err(unsupported())
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
pub struct RegistryVersion {
    pub model_name: String,
    pub model_version: String,
}

/// Where a model URI's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The path below the proxied artifact root.
    pub path: String,
    /// For `models:/` URIs, the version they name.
    pub registered: Option<RegistryVersion>,
}

/// Resolves `uri` through the registry (or the run) to its files.
pub async fn resolve(client: &MlflowClient, uri: &ModelUri) -> Result<Resolved, DownloadError> {
    let (artifact_uri, registered) = match uri {
        ModelUri::Version { name, version } => {
            // As the mlflow client does first: a missing model is reported as such, not as a
            // missing version.
            client.check_registered_model(name).await?;
            (
                client.model_version_download_uri(name, version).await?,
                Some((name.clone(), version.clone())),
            )
        }
        ModelUri::Alias { name, alias } => {
            let version = client.version_by_alias(name, alias).await?;
            let artifact_uri = client.model_version_download_uri(name, &version).await?;
            (artifact_uri, Some((name.clone(), version)))
        }
        ModelUri::Run { run_id, path } => {
            let root = client.run_artifact_uri(run_id).await?;
            let uri = if path.is_empty() {
                root
            } else {
                format!("{}/{path}", root.trim_end_matches('/'))
            };
            (uri, None)
        }
        ModelUri::Artifacts(artifact_uri) => (artifact_uri.clone(), None),
    };
    Ok(Resolved {
        path: proxied_path(&artifact_uri)?,
        registered: registered.map(|(model_name, model_version)| RegistryVersion {
            model_name,
            model_version,
        }),
    })
}

/// What a download brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    pub files: usize,
    pub bytes: u64,
}

/// Downloads everything `uri` names into `dir` (which must not exist, or be empty).
pub async fn download(
    client: &MlflowClient,
    uri: &str,
    dir: &Path,
) -> Result<Downloaded, DownloadError> {
    let model_uri = ModelUri::parse(uri)?;
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
    tokio::fs::create_dir(staging).await.map_err(io(staging))?;
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
                    ClientError::Status { status: 404, .. } if relative.is_none() => {
                        DownloadError::NotFound(format!("mlflow-artifacts:/{root}"))
                    }
                    other => other.into(),
                })?;
            let mut file = tokio::fs::File::create(&local).await.map_err(io(&local))?;
            let mut written = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(|source| ClientError::Http {
                method: "GET",
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
    fn model_uris_parse_as_mlflow_writes_them() {
        assert_eq!(
            ModelUri::parse("models:/churn/3").unwrap(),
            ModelUri::Version {
                name: "churn".to_owned(),
                version: "3".to_owned()
            }
        );
        assert_eq!(
            ModelUri::parse("models:/churn model@champion").unwrap(),
            ModelUri::Alias {
                name: "churn model".to_owned(),
                alias: "champion".to_owned()
            }
        );
        assert_eq!(
            ModelUri::parse("runs:/abc123/model").unwrap(),
            ModelUri::Run {
                run_id: "abc123".to_owned(),
                path: "model".to_owned()
            }
        );
        assert_eq!(
            ModelUri::parse("runs:/abc123").unwrap(),
            ModelUri::Run {
                run_id: "abc123".to_owned(),
                path: String::new()
            }
        );
        for unsupported in [
            "models:/churn/Production",
            "models:/churn/latest",
            "models:/churn",
            "models:/@champion",
            "runs:/",
            "s3://bucket/model",
            "/tmp/model",
        ] {
            assert!(
                matches!(
                    ModelUri::parse(unsupported),
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
