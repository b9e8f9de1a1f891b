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

use std::fs::File;
use std::path::{Path, PathBuf};
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

/// Size of the parts a streamed upload is cut into (S3's minimum is 5 MiB).
const UPLOAD_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload; bounds memory to about `UPLOAD_PART_SIZE * (this + 1)`.
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;
/// Size of the reads a download from the local filesystem is cut into. object_store reads
/// 8 KiB per blocking task, which held a 1 GiB download to ~120 MiB/s on a busy 2-core
/// machine; one task per 256 KiB leaves the disk and the socket as the limits.
const LOCAL_READ_CHUNK: u64 = 256 * 1024;
/// Scheme of the URIs that make clients upload and download through this server.
pub const PROXY_SCHEME: &str = "mlflow-artifacts:";
/// Folder under a local root where uploads are written before they are renamed into place;
/// never listed, never accepted as an artifact path.
const STAGING_DIR: &str = ".ferroflow-staging";
/// Longest file name a local filesystem stores (NAME_MAX), in bytes.
const LOCAL_NAME_MAX: usize = 255;
/// Longest path the OS accepts (PATH_MAX without its terminating NUL), in bytes.
const LOCAL_PATH_MAX: usize = 4095;
/// Longest object key S3, GCS and Azure Blob Storage accept, in bytes.
const REMOTE_KEY_MAX: usize = 1024;

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

/// A relative artifact path that stays inside the root it is joined to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtifactPath {
    segments: Vec<String>,
}

impl ArtifactPath {
    /// Parses an already percent-decoded path. Empty (or `/`-only) means the root.
    pub fn parse(raw: &str) -> Result<Self> {
        let refuse = |reason| {
            Err(Error::InvalidPath {
                path: raw.to_owned(),
                reason,
            })
        };
        if raw.contains('\0') || raw.chars().any(char::is_control) {
            return refuse("Control characters are not allowed.");
        }
        if raw.contains('\\') {
            return refuse("Backslashes are not allowed.");
        }
        if raw.starts_with('/') || raw.starts_with('~') || raw.as_bytes().get(1) == Some(&b':') {
            return refuse("Absolute paths are not allowed.");
        }
        if contains_percent_escape(raw) {
            return refuse("Percent-encoded sequences are not allowed after decoding.");
        }
        let mut segments = Vec::new();
        for segment in raw.split('/') {
            match segment {
                "" | "." => {}
                ".." => return refuse("Paths may not contain '..'."),
                other => segments.push(other.to_owned()),
            }
        }
        Ok(Self { segments })
    }

    /// Builds a path from trusted parts (ids generated by the server).
    pub fn from_trusted(parts: &[&str]) -> Result<Self> {
        Self::parse(&parts.join("/"))
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// `self/child`.
    pub fn join(&self, child: &ArtifactPath) -> ArtifactPath {
        ArtifactPath {
            segments: self
                .segments
                .iter()
                .chain(&child.segments)
                .cloned()
                .collect(),
        }
    }

    /// The path relative to `base`, when it lies under it.
    pub fn strip_prefix(&self, base: &ArtifactPath) -> Option<ArtifactPath> {
        self.segments
            .starts_with(&base.segments)
            .then(|| ArtifactPath {
                segments: self.segments[base.segments.len()..].to_vec(),
            })
    }

    pub fn file_name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// The object key, segments as they are: `ünïcode name.txt` is stored under that name, as
    /// MLflow's artifact repositories store it, so a bucket or folder shared with MLflow (or
    /// read with other tools) holds the names clients logged. `parse` already refused what
    /// object_store refuses in a raw path (empty, `.`, `..`, control characters).
    fn to_store_path(&self) -> Result<StorePath> {
        StorePath::parse(self.segments.join("/")).map_err(|_| Error::InvalidPath {
            path: self.to_string(),
            reason: "Not a valid object key.",
        })
    }

    fn from_store_path(path: &StorePath) -> Self {
        ArtifactPath {
            segments: path.parts().map(|part| part.as_ref().to_owned()).collect(),
        }
    }
}

impl std::fmt::Display for ArtifactPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

fn contains_percent_escape(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

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

/// A local artifact root and this server's staging folder in it.
#[derive(Debug)]
struct LocalRoot {
    root: PathBuf,
    /// `STAGING_DIR/<server id>`, as an object key.
    staging: StorePath,
    /// Locked for as long as this server runs: tells servers that start meanwhile that the
    /// staging folder is in use.
    _staging_lock: File,
    /// Numbers the uploads staged by this server.
    staged_uploads: AtomicU64,
}

/// What a local artifact path names on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisk {
    Nothing,
    /// A parent folder of the path is not a folder.
    BehindFile,
    /// A regular file, of this size.
    File(u64),
    Dir,
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

    /// Refuses what this store cannot hold (names or paths too long for the filesystem, keys
    /// too long for the object store) and, under a local root, the staging folder, names
    /// ending in `#` and digits (object_store's temporary names, left by older versions) and
    /// paths through a symbolic link. Answers what the path names on a local disk.
    fn check(&self, path: &ArtifactPath) -> Result<OnDisk> {
        let refuse = |reason| {
            Err(Error::InvalidPath {
                path: path.to_string(),
                reason,
            })
        };
        let key_len = path.segments.iter().map(|s| s.len() + 1).sum::<usize>();
        let Some(local) = &self.local else {
            if self.key_prefix_len + key_len > REMOTE_KEY_MAX + 1 {
                return refuse("Paths may be at most 1024 bytes long in this artifact store.");
            }
            return Ok(OnDisk::Nothing);
        };
        if path.segments.iter().any(|s| s.len() > LOCAL_NAME_MAX) {
            return refuse("Each name in a path may be at most 255 bytes long.");
        }
        if local.root.as_os_str().len() + key_len > LOCAL_PATH_MAX {
            return refuse("The path is too long for the artifact store's filesystem.");
        }
        if path.segments.first().map(String::as_str) == Some(STAGING_DIR) {
            return refuse("This name is reserved for uploads in progress.");
        }
        if path.file_name().is_some_and(is_object_store_temporary) {
            return refuse(
                "On a local artifact store, file names may not end in '#' followed by digits only.",
            );
        }
        let mut current = local.root.clone();
        for (index, segment) in path.segments.iter().enumerate() {
            current.push(segment);
            let meta = match std::fs::symlink_metadata(&current) {
                Ok(meta) => meta,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(OnDisk::Nothing);
                }
                Err(error) => return Err(Error::Io(error)),
            };
            let last = index + 1 == path.segments.len();
            if meta.file_type().is_symlink() {
                return refuse("Paths may not pass through symbolic links.");
            } else if meta.is_dir() {
                if last {
                    return Ok(OnDisk::Dir);
                }
            } else if !last {
                return Ok(OnDisk::BehindFile);
            } else if meta.is_file() {
                return Ok(OnDisk::File(meta.len()));
            } else {
                // a socket, FIFO or device is no artifact (and opening a FIFO would block)
                return Ok(OnDisk::Nothing);
            }
        }
        Ok(OnDisk::Dir) // the root
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

/// A staged upload's file, removed when the upload ends without renaming it into place
/// (a failure, or the request dropped by a client that went away).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether `name` looks like object_store's temporary name for a local upload (`<name>#<n>`).
fn is_object_store_temporary(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, suffix)| {
        !suffix.is_empty() && suffix.bytes().all(|byte| byte.is_ascii_digit())
    })
}

/// The entries of a local folder the API can serve: folders and regular files, by name.
/// Links (and sockets, FIFOs…) are left out, as the API never follows them; so are names that
/// are not UTF-8 (no request can name them), object_store's temporary files and, at the
/// root, the staging folder.
fn list_local_folder(folder: &Path, at_root: bool) -> std::io::Result<Vec<FileInfo>> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if at_root && name == STAGING_DIR {
            continue;
        }
        // `DirEntry::file_type` and `DirEntry::metadata` do not follow links.
        let file_type = entry.file_type()?;
        let file_size = if file_type.is_dir() {
            None
        } else if file_type.is_file() && !is_object_store_temporary(&name) {
            match entry.metadata() {
                Ok(meta) => Some(meta.len()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            }
        } else {
            continue;
        };
        files.push(FileInfo {
            path: ArtifactPath {
                segments: vec![name],
            },
            is_dir: file_size.is_none(),
            file_size,
        });
    }
    files.sort_by(|a, b| a.path.segments.cmp(&b.path.segments));
    Ok(files)
}

/// Deletes `target` under `root` (a file, or a folder with everything in it; links in it are
/// removed, not followed: `remove_dir_all` never follows them), then the folders above it
/// that this left empty, as object_store's automatic clean-up does for single files.
fn delete_local(root: &Path, target: &Path, on_disk: OnDisk) -> std::io::Result<()> {
    let removed = match on_disk {
        OnDisk::File(_) => std::fs::remove_file(target),
        OnDisk::Dir => std::fs::remove_dir_all(target),
        OnDisk::Nothing | OnDisk::BehindFile => return Ok(()),
    };
    match removed {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    for folder in target.ancestors().skip(1) {
        if folder == root || std::fs::remove_dir(folder).is_err() {
            break;
        }
    }
    Ok(())
}

/// Removes what servers that are gone left in the staging folder `staging`, then claims a
/// folder there for this server: returns its id and the lock it holds while it runs.
fn claim_staging(staging: &Path) -> Result<(String, File)> {
    std::fs::create_dir_all(staging).map_err(Error::Io)?;
    if let Err(error) = sweep_staging(staging) {
        tracing::warn!(%error, staging = %staging.display(), "could not remove abandoned uploads");
    }
    loop {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let lock_path = staging.join(format!("{id}.lock"));
        let lock = File::options()
            .write(true)
            .create_new(true)
            .open(&lock_path)
            .map_err(Error::Io)?;
        // A server starting at the same moment may have locked and removed the file first.
        if lock.try_lock().is_err() || !is_same_file(&lock, &lock_path).map_err(Error::Io)? {
            continue;
        }
        std::fs::create_dir(staging.join(&id)).map_err(Error::Io)?;
        return Ok((id, lock));
    }
}

/// Removes each `<id>/` upload folder whose `<id>.lock` no running server holds, and anything
/// else in `staging` without a lock file.
fn sweep_staging(staging: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(staging)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".lock") {
            let lock = match File::options().write(true).open(entry.path()) {
                Ok(lock) => lock,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if lock.try_lock().is_ok() {
                remove_entry(&staging.join(id))?;
                remove_entry(&entry.path())?;
            }
        } else if !staging.join(format!("{name}.lock")).exists() {
            remove_entry(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes a file, link or folder (never following links); nothing there is fine.
fn remove_entry(path: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) => Err(error),
    };
    match removed {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Whether the open `file` is still the one at `path`.
fn is_same_file(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Reads `range` of a local file in `LOCAL_READ_CHUNK`s, each on a blocking task.
fn local_file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, Result<Bytes>> {
    futures::stream::try_unfold(
        (file, range.start, range.end, true),
        |(mut file, position, end, first)| async move {
            if position >= end {
                return Ok(None);
            }
            let want = (end - position).min(LOCAL_READ_CHUNK);
            let (file, chunk) = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek, SeekFrom};
                if first {
                    file.seek(SeekFrom::Start(position))?;
                }
                let mut chunk = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
                (&mut file).take(want).read_to_end(&mut chunk)?;
                Ok::<_, std::io::Error>((file, chunk))
            })
            .await
            .map_err(|error| Error::Io(std::io::Error::other(error)))?
            .map_err(Error::Io)?;
            if chunk.is_empty() {
                // shorter than its metadata said: end with an error, not a truncated body
                return Err(Error::Io(std::io::Error::from(
                    std::io::ErrorKind::UnexpectedEof,
                )));
            }
            let next = position + chunk.len() as u64;
            Ok(Some((Bytes::from(chunk), (file, next, end, false))))
        },
    )
    .boxed()
}

/// The storage path behind an `mlflow-artifacts:` URI (`mlflow-artifacts:/1/abc/artifacts`,
/// also with a `//host:port` authority), or `None` for any other scheme.
pub fn path_from_proxy_uri(uri: &str) -> Option<ArtifactPath> {
    let rest = uri.strip_prefix(PROXY_SCHEME)?;
    let rest = match rest.strip_prefix("//") {
        Some(with_authority) => with_authority
            .find('/')
            .map_or("", |slash| &with_authority[slash..]),
        None => rest,
    };
    ArtifactPath::parse(rest.trim_start_matches('/')).ok()
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

    #[test]
    fn paths_are_normalised() {
        let path = ArtifactPath::parse("a/./b//c.txt").unwrap();
        assert_eq!(path.to_string(), "a/b/c.txt");
        assert!(ArtifactPath::parse("").unwrap().is_root());
        assert_eq!(
            ArtifactPath::parse("with space/ünï.txt")
                .unwrap()
                .to_string(),
            "with space/ünï.txt"
        );
    }

    #[test]
    fn proxy_uris_map_to_storage_paths() {
        assert_eq!(
            path_from_proxy_uri("mlflow-artifacts:/1/abc/artifacts")
                .unwrap()
                .to_string(),
            "1/abc/artifacts"
        );
        assert_eq!(
            path_from_proxy_uri("mlflow-artifacts://host:5000/2/x")
                .unwrap()
                .to_string(),
            "2/x"
        );
        assert!(path_from_proxy_uri("s3://bucket/x").is_none());
        assert!(path_from_proxy_uri("mlflow-artifacts:/../etc").is_none());
    }

    #[tokio::test]
    async fn local_downloads_stream_the_whole_file_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path().to_str().unwrap()).unwrap();
        let path = ArtifactPath::parse("a/big.bin").unwrap();
        // not a multiple of the chunk size, and more than one upload part
        let content: Vec<u8> = (0..(UPLOAD_PART_SIZE as u64 + 3 * LOCAL_READ_CHUNK + 7))
            .map(|i| (i % 251) as u8)
            .collect();
        let body = futures::stream::iter(
            content
                .chunks(100_000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        store.put_stream(&path, body).await.unwrap();
        let download = store.get(&path).await.unwrap();
        assert_eq!(download.size, content.len() as u64);
        let chunks: Vec<Bytes> = download.stream.try_collect().await.unwrap();
        assert!(chunks.iter().all(|c| c.len() as u64 <= LOCAL_READ_CHUNK));
        assert_eq!(chunks.concat(), content);
    }

    /// Uploads the one byte `x` to `name`.
    async fn put_x(store: &ArtifactStore, name: &str) -> Result<u64> {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
        store
            .put_stream(&ArtifactPath::parse(name).unwrap(), body)
            .await
    }

    #[tokio::test]
    async fn local_files_keep_their_names_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path().to_str().unwrap()).unwrap();
        for name in ["d/ünïcode name.txt", "d/{a}[b]~c^|#1x.txt"] {
            put_x(&store, name).await.unwrap();
            assert!(dir.path().join(name).is_file(), "{name} on disk");
        }
        let listed: Vec<String> = store
            .list(&ArtifactPath::parse("d").unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|file| file.path.to_string())
            .collect();
        assert_eq!(listed, ["{a}[b]~c^|#1x.txt", "ünïcode name.txt"]);
        let refused = put_x(&store, "d/run#12").await.unwrap_err().to_string();
        assert!(refused.contains("'#' followed by digits"), "{refused}");
    }

    #[tokio::test]
    async fn start_up_removes_uploads_of_servers_that_are_gone_and_keeps_running_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let running = ArtifactStore::open(root).unwrap();
        let running_staging = dir
            .path()
            .join(running.local.as_ref().unwrap().staging.as_ref());
        std::fs::write(running_staging.join("7#1"), b"in progress").unwrap();
        let staging = dir.path().join(STAGING_DIR);
        std::fs::create_dir_all(staging.join("gone/sub")).unwrap();
        std::fs::write(staging.join("gone.lock"), b"").unwrap();
        std::fs::write(staging.join("gone/3#1"), b"partial").unwrap();
        std::fs::create_dir_all(staging.join("no-lock")).unwrap();
        std::fs::write(staging.join("stray#2"), b"partial").unwrap();

        let _restarted = ArtifactStore::open(root).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&staging)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left.len(), 4, "two servers' folders and locks: {left:?}");
        assert!(
            !left
                .iter()
                .any(|name| ["gone", "gone.lock", "no-lock", "stray#2"].contains(&name.as_str()))
        );
        assert_eq!(
            std::fs::read(running_staging.join("7#1")).unwrap(),
            b"in progress",
            "a running server's upload is kept"
        );
    }

    #[tokio::test]
    async fn the_staging_folder_is_neither_listed_nor_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path().to_str().unwrap()).unwrap();
        assert!(
            store
                .list(&ArtifactPath::default())
                .await
                .unwrap()
                .is_empty()
        );
        let staged = ArtifactPath::parse(&format!("{STAGING_DIR}/x")).unwrap();
        for error in [
            put_x(&store, &staged.to_string()).await.unwrap_err(),
            store.get(&staged).await.err().unwrap(),
            store.list(&staged).await.unwrap_err(),
            store.delete(&staged).await.unwrap_err(),
        ] {
            assert!(matches!(error, Error::InvalidPath { .. }), "{error}");
        }
    }

    #[tokio::test]
    async fn uploads_onto_a_folder_or_under_a_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path().to_str().unwrap()).unwrap();
        put_x(&store, "a/file.txt").await.unwrap();
        for name in ["a", "a/file.txt/below.txt"] {
            let error = put_x(&store, name).await.unwrap_err();
            assert!(
                matches!(error, Error::InvalidPath { .. }),
                "{name}: {error}"
            );
        }
        assert_eq!(std::fs::read(dir.path().join("a/file.txt")).unwrap(), b"x");
    }
}
