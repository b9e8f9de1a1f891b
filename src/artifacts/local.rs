//! The local artifact folder: the staging of uploads, the checks and walks that never follow a
//! symbolic link, listings, deletes and file streams.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as StorePath;

use super::path::{LOCAL_NAME_MAX, LOCAL_PATH_MAX, REMOTE_KEY_MAX};
use super::{ArtifactPath, ArtifactStore, Error, FileInfo, Result};

/// Size of the reads a download from the local filesystem is cut into. object_store reads
/// 8 KiB per blocking task, which held a 1 GiB download to ~120 MiB/s on a busy 2-core
/// machine; one task per 256 KiB leaves the disk and the socket as the limits.
const LOCAL_READ_CHUNK: u64 = 256 * 1024;
/// Folder under a local root where uploads are written before they are renamed into place;
/// never listed, never accepted as an artifact path.
pub(super) const STAGING_DIR: &str = ".ferroflow-staging";

/// A local artifact root and this server's staging folder in it.
#[derive(Debug)]
pub(super) struct LocalRoot {
    pub(super) root: PathBuf,
    /// `STAGING_DIR/<server id>`, as an object key.
    pub(super) staging: StorePath,
    /// Locked for as long as this server runs: tells servers that start meanwhile that the
    /// staging folder is in use.
    pub(super) _staging_lock: File,
    /// Numbers the uploads staged by this server.
    pub(super) staged_uploads: AtomicU64,
}

/// What a local artifact path names on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnDisk {
    Nothing,
    /// A parent folder of the path is not a folder.
    BehindFile,
    /// A regular file, of this size.
    File(u64),
    Dir,
}

impl ArtifactStore {
    /// Refuses what this store cannot hold (names or paths too long for the filesystem, keys
    /// too long for the object store) and, under a local root, the staging folder, names
    /// ending in `#` and digits (object_store's temporary names, left by older versions) and
    /// paths through a symbolic link. Answers what the path names on a local disk.
    pub(super) fn check(&self, path: &ArtifactPath) -> Result<OnDisk> {
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
}

/// A staged upload's file, removed when the upload ends without renaming it into place
/// (a failure, or the request dropped by a client that went away).
pub(super) struct RemoveOnDrop(pub(super) PathBuf);

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
pub(super) fn list_local_folder(folder: &Path, at_root: bool) -> std::io::Result<Vec<FileInfo>> {
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
pub(super) fn delete_local(root: &Path, target: &Path, on_disk: OnDisk) -> std::io::Result<()> {
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
pub(super) fn claim_staging(staging: &Path) -> Result<(String, File)> {
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
pub(super) fn local_file_stream(
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

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::super::UPLOAD_PART_SIZE;
    use super::*;

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
