//! Artifact storage: paths and bytes. The only module that touches `object_store`.
//!
//! Every path a client sends goes through [`ArtifactPath::parse`], which refuses anything
//! that could leave the artifact root (`..`, absolute paths, backslashes, NUL and control
//! characters, still-encoded escapes), and names longer than the store can hold. On the local
//! filesystem, no operation passes through or follows a symbolic link: paths through one are
//! refused, listings leave links out and deletes remove the link, not what it points to, so a
//! link planted inside the root cannot lead outside it. Uploads and downloads stream: memory
//! stays flat whatever the file size.
//!
//! Local uploads are written in `.ferroflow-staging/<server id>/` under the root, then renamed
//! into place, so a reader never sees a partial file, a 255-byte name needs no longer temporary
//! name beside it, and the uploads a killed server left behind sit in one place that the next
//! server to start removes (each server holds a lock on `<server id>.lock` while it runs, so a
//! server sharing the folder never loses its uploads in progress to another's start-up).

mod local;
mod path;

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, ObjectStoreScheme, WriteMultipart,
};

use local::{
    LocalRoot, OnDisk, RemoveOnDrop, STAGING_DIR, claim_staging, delete_local, list_local_folder,
    local_file_stream,
};
pub use path::{ArtifactPath, PROXY_SCHEME, WORKSPACES_FOLDER, path_from_proxy_uri};

/// Size of the parts a streamed upload is cut into (S3's minimum is 5 MiB).
const UPLOAD_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload; bounds memory to about `UPLOAD_PART_SIZE * (this + 1)`.
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

/// An artifact-storage failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's path is not a safe relative path.
    #[error("Invalid artifact path: '{path}'. {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// Nothing is stored at the path.
    #[error("No artifact found at '{0}'")]
    NotFound(String),
    /// The destination URL could not be opened.
    #[error("invalid artifacts destination '{destination}'")]
    Destination {
        destination: String,
        #[source]
        source: object_store::Error,
    },
    /// The body of an upload could not be read.
    #[error("failed to read the upload body")]
    Body(#[source] std::io::Error),
    /// The backing store failed.
    #[error("artifact store failure")]
    Store(#[source] object_store::Error),
    /// A local filesystem check failed.
    #[error("artifact filesystem failure")]
    Io(#[source] std::io::Error),
}

impl From<object_store::Error> for Error {
    fn from(error: object_store::Error) -> Self {
        Error::Store(error)
    }
}

/// Maps an object_store failure on `path`: its NotFound names the full local path or key,
/// which a client must not see, so it becomes a NotFound naming `path` as the client sent it.
fn failure_at(path: &ArtifactPath) -> impl Fn(object_store::Error) -> Error + '_ {
    move |error| match error {
        object_store::Error::NotFound { .. } => Error::NotFound(path.to_string()),
        other => Error::Store(other),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One entry of a listing: the path relative to the listed directory's parent root, as the caller wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: ArtifactPath,
    pub is_dir: bool,
    pub file_size: Option<u64>,
}

/// A streamed download: its size and its bytes.
pub struct Download {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes>>,
}

/// Where artifacts live: a local folder or an object store bucket (with an optional prefix).
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// The local root, when the destination is the filesystem.
    local: Option<Arc<LocalRoot>>,
    /// Bytes of every object key taken by the destination's prefix (remote stores).
    key_prefix_len: usize,
    destination: String,
}

/// The configuration a remote destination takes from the environment: only its provider's
/// variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), since object_store also reads bare names such as
/// `ENDPOINT`, `REGION` or `TOKEN`, which other software in a pod may set. For S3 the variables
/// MLflow's users already have work too: `MLFLOW_S3_ENDPOINT_URL` names the endpoint when no
/// `AWS_ENDPOINT_URL`/`AWS_ENDPOINT` does, and a plain-`http://` endpoint (MinIO in a cluster)
/// is allowed, as boto3 allows it, unless `AWS_ALLOW_HTTP` says otherwise.
fn store_options(
    scheme: ObjectStoreScheme,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let prefix = match scheme {
        ObjectStoreScheme::AmazonS3 => "aws_",
        ObjectStoreScheme::GoogleCloudStorage => "google_",
        ObjectStoreScheme::MicrosoftAzure => "azure_",
        _ => return Vec::new(),
    };
    let mut mlflow_endpoint = None;
    let mut options: Vec<(String, String)> = Vec::new();
    for (name, value) in environment {
        let name = name.to_ascii_lowercase();
        if name == "mlflow_s3_endpoint_url" {
            mlflow_endpoint = Some(value);
        } else if name.starts_with(prefix) {
            options.push((name, value));
        }
    }
    if scheme != ObjectStoreScheme::AmazonS3 {
        return options;
    }
    let has = |options: &[(String, String)], names: &[&str]| {
        options
            .iter()
            .any(|(name, _)| names.contains(&name.as_str()))
    };
    if let Some(endpoint) = mlflow_endpoint
        && !has(&options, &["aws_endpoint_url", "aws_endpoint"])
    {
        options.push(("aws_endpoint".into(), endpoint));
    }
    let plain_http = options.iter().any(|(name, value)| {
        matches!(name.as_str(), "aws_endpoint_url" | "aws_endpoint") && value.starts_with("http://")
    });
    if plain_http && !has(&options, &["aws_allow_http"]) {
        options.push(("aws_allow_http".into(), "true".into()));
    }
    options
}

impl ArtifactStore {
    /// Opens `--artifacts-destination`: a local path (created when missing) or an
    /// `s3://`, `gs://`, `az://`/`abfss://` URL, with credentials from the usual environment variables.
    pub fn open(destination: &str) -> Result<Self> {
        let wrap = |source| Error::Destination {
            destination: destination.to_owned(),
            source,
        };
        let local = destination
            .strip_prefix("file://")
            .or_else(|| (!destination.contains("://")).then_some(destination));
        if let Some(path) = local {
            std::fs::create_dir_all(path).map_err(Error::Io)?;
            let root = std::fs::canonicalize(path).map_err(Error::Io)?;
            let store = LocalFileSystem::new_with_prefix(&root)
                .map_err(wrap)?
                .with_automatic_cleanup(true);
            let (server_id, staging_lock) = claim_staging(&root.join(STAGING_DIR))?;
            let staging = StorePath::from_iter([STAGING_DIR, server_id.as_str()]);
            return Ok(Self {
                store: Arc::new(store),
                local: Some(Arc::new(LocalRoot {
                    root,
                    staging,
                    _staging_lock: staging_lock,
                    staged_uploads: AtomicU64::new(0),
                })),
                key_prefix_len: 0,
                destination: destination.to_owned(),
            });
        }
        let url = url::Url::parse(destination).map_err(|error| {
            wrap(object_store::Error::Generic {
                store: "url",
                source: Box::new(error),
            })
        })?;
        let (scheme, _) = ObjectStoreScheme::parse(&url).map_err(|error| wrap(error.into()))?;
        let (store, prefix) =
            object_store::parse_url_opts(&url, store_options(scheme, std::env::vars()))
                .map_err(wrap)?;
        let key_prefix_len = match prefix.as_ref().len() {
            0 => 0,
            len => len + 1,
        };
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::from(store)
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(Self {
            store,
            local: None,
            key_prefix_len,
            destination: destination.to_owned(),
        })
    }

    /// The destination this store was opened on (for logs).
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// Streams `body` into `path` (replacing it), in parts, without buffering the whole file.
    /// On any failure the partial upload is aborted and nothing is left at `path`; readers
    /// see the previous file or the whole new one, never a part.
    pub async fn put_stream<S, E>(&self, path: &ArtifactPath, body: S) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if path.is_root() {
            return Err(Error::InvalidPath {
                path: String::new(),
                reason: "A file path is required.",
            });
        }
        let refuse = |reason| {
            Err(Error::InvalidPath {
                path: path.to_string(),
                reason,
            })
        };
        match self.check(path)? {
            OnDisk::Dir => return refuse("A folder exists at this path."),
            OnDisk::BehindFile => return refuse("A folder in this path is a file."),
            OnDisk::Nothing | OnDisk::File(_) => {}
        }
        let location = path.to_store_path()?;
        let Some(local) = &self.local else {
            return self.upload(&location, body).await;
        };
        let number = local.staged_uploads.fetch_add(1, Ordering::Relaxed);
        let staged = local.staging.clone().join(number.to_string());
        let _cleanup = RemoveOnDrop(local.root.join(staged.as_ref()));
        let written = self.upload(&staged, body).await?;
        self.store
            .rename(&staged, &location)
            .await
            .map_err(failure_at(path))?;
        Ok(written)
    }

    /// Streams `body` into `location` as a multipart upload, aborted on any failure.
    async fn upload<S, E>(&self, location: &StorePath, body: S) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let upload = self.store.put_multipart(location).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_SIZE);
        let mut body = std::pin::pin!(body);
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(Error::Body(std::io::Error::other(error)));
                }
            };
            if let Err(error) = writer.wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(error.into());
            }
            written += chunk.len() as u64;
            writer.put(chunk);
        }
        writer.finish().await?;
        Ok(written)
    }

    /// Opens `path` for a streamed download.
    pub async fn get(&self, path: &ArtifactPath) -> Result<Download> {
        let on_disk = self.check(path)?;
        if path.is_root() {
            return Err(Error::NotFound(String::new()));
        }
        if let Some(local) = &self.local {
            if !matches!(on_disk, OnDisk::File(_)) {
                return Err(Error::NotFound(path.to_string()));
            }
            let file =
                File::open(local.root.join(path.to_string())).map_err(|error| {
                    match error.kind() {
                        std::io::ErrorKind::NotFound => Error::NotFound(path.to_string()),
                        _ => Error::Io(error),
                    }
                })?;
            let size = file.metadata().map_err(Error::Io)?.len();
            return Ok(Download {
                size,
                stream: local_file_stream(file, 0..size),
            });
        }
        let result = self
            .store
            .get(&path.to_store_path()?)
            .await
            .map_err(failure_at(path))?;
        let size = result.meta.size;
        let stream = match result.payload {
            GetResultPayload::File(file, _) => local_file_stream(file, result.range),
            GetResultPayload::Stream(stream) => stream.map_err(Error::from).boxed(),
        };
        Ok(Download { size, stream })
    }

    /// The size of the file at `path`, or `None` when no file is there (a directory or nothing).
    pub async fn file_size(&self, path: &ArtifactPath) -> Result<Option<u64>> {
        let on_disk = self.check(path)?;
        if path.is_root() {
            return Ok(None);
        }
        if self.local.is_some() {
            return Ok(match on_disk {
                OnDisk::File(size) => Some(size),
                _ => None,
            });
        }
        match self.store.head(&path.to_store_path()?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Lists the direct children of `dir`; `path` of each entry is relative to `dir`.
    /// A file lists as itself (by its name); a missing directory as nothing.
    pub async fn list(&self, dir: &ArtifactPath) -> Result<Vec<FileInfo>> {
        let itself = |size| {
            let name = dir.file_name().unwrap_or_default();
            vec![FileInfo {
                path: ArtifactPath {
                    segments: vec![name.to_owned()],
                },
                is_dir: false,
                file_size: Some(size),
            }]
        };
        let on_disk = self.check(dir)?;
        if let Some(local) = &self.local {
            let folder = local.root.join(dir.to_string());
            let at_root = dir.is_root();
            return match on_disk {
                OnDisk::File(size) => Ok(itself(size)),
                OnDisk::Dir => {
                    tokio::task::spawn_blocking(move || list_local_folder(&folder, at_root))
                        .await
                        .map_err(|error| Error::Io(std::io::Error::other(error)))?
                        .map_err(Error::Io)
                }
                OnDisk::Nothing | OnDisk::BehindFile => Ok(Vec::new()),
            };
        }
        if let Some(size) = self.file_size(dir).await? {
            return Ok(itself(size));
        }
        let prefix = (!dir.is_root()).then(|| dir.to_store_path()).transpose()?;
        let listing = match self.store.list_with_delimiter(prefix.as_ref()).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let relative = |path: &StorePath| {
            ArtifactPath::from_store_path(path)
                .strip_prefix(dir)
                .unwrap_or_default()
        };
        let mut files: Vec<FileInfo> = listing
            .common_prefixes
            .iter()
            .map(|prefix| FileInfo {
                path: relative(prefix),
                is_dir: true,
                file_size: None,
            })
            .chain(listing.objects.iter().map(|object| FileInfo {
                path: relative(&object.location),
                is_dir: false,
                file_size: Some(object.size),
            }))
            .filter(|info| !info.path.is_root())
            .collect();
        files.sort_by(|a, b| a.path.segments.cmp(&b.path.segments));
        Ok(files)
    }

    /// Deletes the file at `path`, or everything under it when it is a directory. On a local
    /// root, links inside a deleted folder are removed themselves, never followed.
    pub async fn delete(&self, path: &ArtifactPath) -> Result<()> {
        if path.is_root() {
            return Err(Error::InvalidPath {
                path: String::new(),
                reason: "Refusing to delete the artifact root.",
            });
        }
        let on_disk = self.check(path)?;
        if let Some(local) = &self.local {
            let root = local.root.clone();
            let target = root.join(path.to_string());
            return tokio::task::spawn_blocking(move || {
                delete_local(&root, &target, on_disk).map_err(Error::Io)
            })
            .await
            .map_err(|error| Error::Io(std::io::Error::other(error)))?;
        }
        let location = path.to_store_path()?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let nested: Vec<StorePath> = self
            .store
            .list(Some(&location))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for location in nested {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn remote_stores_take_only_their_providers_variables() {
        let env = environment(&[
            ("AWS_ACCESS_KEY_ID", "key"),
            ("GOOGLE_SERVICE_ACCOUNT", "sa.json"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("ENDPOINT", "http://elsewhere"),
            ("REGION", "mars-1"),
            ("TOKEN", "not-ours"),
        ]);
        assert_eq!(
            store_options(ObjectStoreScheme::AmazonS3, env.clone()),
            environment(&[("aws_access_key_id", "key")])
        );
        assert_eq!(
            store_options(ObjectStoreScheme::GoogleCloudStorage, env.clone()),
            environment(&[("google_service_account", "sa.json")])
        );
        assert_eq!(
            store_options(ObjectStoreScheme::MicrosoftAzure, env.clone()),
            environment(&[("azure_storage_account_name", "acct")])
        );
        assert!(store_options(ObjectStoreScheme::Http, env).is_empty());
    }

    #[test]
    fn s3_follows_mlflows_endpoint_variable_and_allows_plain_http_endpoints() {
        let options = |pairs: &[(&str, &str)]| {
            let mut options = store_options(ObjectStoreScheme::AmazonS3, environment(pairs));
            options.sort();
            options
        };
        assert_eq!(
            options(&[("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")]),
            environment(&[
                ("aws_allow_http", "true"),
                ("aws_endpoint", "http://minio:9000")
            ])
        );
        assert_eq!(
            options(&[
                ("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000"),
                ("AWS_ENDPOINT_URL", "https://s3.example"),
            ]),
            environment(&[("aws_endpoint_url", "https://s3.example")])
        );
        assert_eq!(
            options(&[
                ("AWS_ENDPOINT", "http://minio:9000"),
                ("AWS_ALLOW_HTTP", "false")
            ]),
            environment(&[
                ("aws_allow_http", "false"),
                ("aws_endpoint", "http://minio:9000")
            ])
        );
        assert!(options(&[]).is_empty());
    }
}
