//! A project shipped as one archive (`.tar.gz`/`.tgz` or `.zip`) for a ProjectRun's `source`:
//! unpacked by `ferroflow project-init` into the project folder. Every entry is checked before
//! anything is written: an absolute path or a `..` that would land outside the folder (as
//! MLflow's `_unzip_repo` refuses), and links, which could point anywhere, are refused. A
//! single top-level folder holding everything is stripped, so `tar czf p.tar.gz project/` gives
//! the project itself.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The archive formats a `source` may be, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    Zip,
}

impl ArchiveKind {
    /// The kind `uri` names by its ending, if it is an archive.
    pub fn of(uri: &str) -> Option<Self> {
        let name = uri.trim_end_matches('/').to_ascii_lowercase();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(ArchiveKind::TarGz)
        } else if name.ends_with(".zip") {
            Some(ArchiveKind::Zip)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "archive entry {0:?} attempts path traversal (an absolute path or '..'); nothing was unpacked"
    )]
    Traversal(String),
    #[error("archive entry {0:?} is a link; links are not unpacked (nothing was unpacked)")]
    Link(String),
    #[error("archive entry {0:?} has a name that is not UTF-8")]
    Name(String),
    #[error("{} is not a valid archive: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One entry, checked: its path below the archive root and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: PathBuf,
    is_dir: bool,
    mode: Option<u32>,
}

/// Unpacks `archive` into `into` (created when missing); the number of files written.
pub fn unpack(archive: &Path, kind: ArchiveKind, into: &Path) -> Result<usize, ArchiveError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Io { path, source }
    };
    std::fs::create_dir_all(into).map_err(io(into))?;
    match kind {
        ArchiveKind::TarGz => {
            // Checked in a first pass: a refused entry writes nothing.
            let entries = tar_entries(archive, |_, _| Ok(()))?;
            let strip = common_folder(&entries);
            let mut written = 0;
            tar_entries(archive, |entry, reader| {
                written += write_entry(into, strip.as_deref(), entry, reader)?;
                Ok(())
            })?;
            Ok(written)
        }
        ArchiveKind::Zip => {
            let invalid = |error: zip::result::ZipError| ArchiveError::Invalid {
                path: archive.to_owned(),
                reason: error.to_string(),
            };
            let file = File::open(archive).map_err(io(archive))?;
            let mut zip = zip::ZipArchive::new(file).map_err(invalid)?;
            let mut entries = Vec::with_capacity(zip.len());
            for index in 0..zip.len() {
                let file = zip.by_index(index).map_err(invalid)?;
                let name = file.name().map_err(invalid)?.into_owned();
                if file.is_symlink() {
                    return Err(ArchiveError::Link(name));
                }
                entries.push(checked(&name, file.is_dir(), file.unix_mode())?);
            }
            let strip = common_folder(&entries);
            let mut written = 0;
            for (index, entry) in entries.iter().enumerate() {
                let mut file = zip.by_index(index).map_err(invalid)?;
                written += write_entry(into, strip.as_deref(), entry, &mut file)?;
            }
            Ok(written)
        }
    }
}

/// Walks the `.tar.gz` at `archive`, checking each entry and handing it to `visit`.
fn tar_entries(
    archive: &Path,
    mut visit: impl FnMut(&Entry, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<Vec<Entry>, ArchiveError> {
    let invalid = |error: std::io::Error| ArchiveError::Invalid {
        path: archive.to_owned(),
        reason: error.to_string(),
    };
    let file = File::open(archive).map_err(|source| ArchiveError::Io {
        path: archive.to_owned(),
        source,
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = Vec::new();
    for entry in tar.entries().map_err(invalid)? {
        let mut entry = entry.map_err(invalid)?;
        let raw = entry.path_bytes();
        let name = std::str::from_utf8(&raw)
            .map_err(|_| ArchiveError::Name(String::from_utf8_lossy(&raw).into_owned()))?
            .to_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(ArchiveError::Link(name));
        }
        if !(kind.is_file() || kind.is_dir()) {
            // pax headers, GNU long names and the like carry no project file.
            continue;
        }
        let checked = checked(&name, kind.is_dir(), entry.header().mode().ok())?;
        visit(&checked, &mut entry)?;
        entries.push(checked);
    }
    Ok(entries)
}

/// `name` as a path that stays below the archive root, or why not.
fn checked(name: &str, is_dir: bool, mode: Option<u32>) -> Result<Entry, ArchiveError> {
    let mut path = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Traversal(name.to_owned()));
            }
        }
    }
    // A backslash is a separator to Windows tools: `..\x` would be a traversal there.
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Err(ArchiveError::Traversal(name.to_owned()));
    }
    Ok(Entry { path, is_dir, mode })
}

/// The one top-level folder everything is inside, if there is exactly one and no file beside
/// it: stripped on unpacking.
fn common_folder(entries: &[Entry]) -> Option<PathBuf> {
    let mut top = None;
    for entry in entries.iter().filter(|e| !e.path.as_os_str().is_empty()) {
        let mut components = entry.path.components();
        let first = components.next()?;
        // A file at the root: nothing to strip.
        if components.next().is_none() && !entry.is_dir {
            return None;
        }
        match &top {
            None => top = Some(first),
            Some(seen) if *seen == first => {}
            Some(_) => return None,
        }
    }
    top.map(|first| PathBuf::from(first.as_os_str()))
}

/// Writes one entry below `into` (minus `strip`); 1 for a file, 0 for a folder.
fn write_entry(
    into: &Path,
    strip: Option<&Path>,
    entry: &Entry,
    contents: &mut dyn Read,
) -> Result<usize, ArchiveError> {
    let relative = match strip {
        Some(prefix) => entry.path.strip_prefix(prefix).unwrap_or(&entry.path),
        None => &entry.path,
    };
    let target = into.join(relative);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Io { path, source }
    };
    if entry.is_dir {
        std::fs::create_dir_all(&target).map_err(io(&target))?;
        return Ok(0);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut file = File::create(&target).map_err(io(&target))?;
    std::io::copy(contents, &mut file).map_err(io(&target))?;
    if let Some(mode) = entry.mode.filter(|mode| mode & 0o111 != 0) {
        use std::os::unix::fs::PermissionsExt as _;
        // Scripts stay executable; nothing more than the owner's rwx and others' r-x.
        let permissions = std::fs::Permissions::from_mode(mode & 0o755);
        std::fs::set_permissions(&target, permissions).map_err(io(&target))?;
    }
    Ok(1)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn tar_gz(path: &Path, files: &[(&str, &str)]) {
        let gz =
            flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, contents) in files {
            let mut header = tar::Header::new_gnu();
            // Written raw: the builder refuses `..` itself, an attacker's tool does not.
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_size(contents.len() as u64);
            header.set_mode(if name.ends_with(".sh") { 0o755 } else { 0o644 });
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            tar.append(&header, contents.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    fn zip(path: &Path, files: &[(&str, &str)]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, contents) in files {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zip.start_file(*name, options).unwrap();
            zip.write_all(contents.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }

    /// Every file below `dir`, relative, with its contents.
    fn tree(dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut folders = vec![dir.to_owned()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    let relative = path
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    found.push((relative, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        found.sort();
        found
    }

    fn owned(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn archives_are_recognised_by_their_ending() {
        let cases = [
            (
                "mlflow-artifacts:/1/r/artifacts/project.tar.gz",
                Some(ArchiveKind::TarGz),
            ),
            ("runs:/0123/src/p.TGZ", Some(ArchiveKind::TarGz)),
            ("runs:/0123/project.zip", Some(ArchiveKind::Zip)),
            ("runs:/0123/project", None),
            ("runs:/0123/project.tar", None),
        ];
        for (uri, expected) in cases {
            assert_eq!(ArchiveKind::of(uri), expected, "{uri}");
        }
    }

    #[test]
    fn a_single_top_level_folder_is_stripped_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("project/MLproject", "name: p"),
            ("project/train.py", "print(1)"),
            ("project/bin/run.sh", "echo hi"),
        ];
        let expected = owned(&[
            ("MLproject", "name: p"),
            ("bin/run.sh", "echo hi"),
            ("train.py", "print(1)"),
        ]);
        for (kind, name) in [
            (ArchiveKind::TarGz, "p.tar.gz"),
            (ArchiveKind::Zip, "p.zip"),
        ] {
            let archive = dir.path().join(name);
            match kind {
                ArchiveKind::TarGz => tar_gz(&archive, &files),
                ArchiveKind::Zip => zip(&archive, &files),
            }
            let into = dir.path().join(format!("out-{name}"));
            assert_eq!(unpack(&archive, kind, &into).unwrap(), 3, "{name}");
            assert_eq!(tree(&into), expected, "{name}");
        }
        // The tar's modes survive: the script stays executable.
        use std::os::unix::fs::PermissionsExt as _;
        let script = dir.path().join("out-p.tar.gz/bin/run.sh");
        assert_eq!(
            std::fs::metadata(script).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn files_at_the_root_or_several_folders_are_kept_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [&[(&str, &str)]; 3] = [
            &[("MLproject", "name: p"), ("src/train.py", "x")],
            &[("./a/x.py", "a"), ("./b/y.py", "b")],
            &[("one/x.py", "a"), ("README", "r")],
        ];
        for (index, files) in cases.iter().enumerate() {
            let archive = dir.path().join(format!("{index}.zip"));
            zip(&archive, files);
            let into = dir.path().join(format!("out-{index}"));
            unpack(&archive, ArchiveKind::Zip, &into).unwrap();
            let expected: Vec<(String, String)> = files
                .iter()
                .map(|(name, body)| (name.trim_start_matches("./").to_owned(), (*body).to_owned()))
                .collect();
            let mut expected = expected;
            expected.sort();
            assert_eq!(tree(&into), expected, "{files:?}");
        }
    }

    #[test]
    fn a_traversal_entry_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for (name, files) in [
            (
                "t.tar.gz",
                vec![("MLproject", "name: p"), ("../evil.sh", "rm -rf")],
            ),
            (
                "t.zip",
                vec![("MLproject", "name: p"), ("a/../../evil.sh", "rm -rf")],
            ),
            ("abs.zip", vec![("/etc/evil", "x")]),
        ] {
            let archive = dir.path().join(name);
            let kind = ArchiveKind::of(name).unwrap();
            match kind {
                ArchiveKind::TarGz => tar_gz(&archive, &files),
                ArchiveKind::Zip => zip(&archive, &files),
            }
            let into = dir.path().join("out").join(name);
            let error = unpack(&archive, kind, &into).unwrap_err();
            assert!(
                matches!(error, ArchiveError::Traversal(_)),
                "{name}: {error}"
            );
            assert!(
                error.to_string().contains("attempts path traversal"),
                "{error}"
            );
            assert_eq!(tree(&into), vec![], "{name}: nothing unpacked");
        }
        assert!(!dir.path().join("evil.sh").exists());
        assert!(!dir.path().join("out/evil.sh").exists());
    }

    #[test]
    fn links_and_garbage_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("link.zip");
        let mut writer = zip::ZipWriter::new(File::create(&archive).unwrap());
        writer
            .add_symlink(
                "passwd",
                "/etc/passwd",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
        writer.finish().unwrap();
        let error = unpack(&archive, ArchiveKind::Zip, &dir.path().join("o1")).unwrap_err();
        assert!(
            matches!(error, ArchiveError::Link(ref name) if name == "passwd"),
            "{error}"
        );

        let garbage = dir.path().join("g.tar.gz");
        std::fs::write(&garbage, b"not an archive").unwrap();
        for kind in [ArchiveKind::TarGz, ArchiveKind::Zip] {
            let error = unpack(&garbage, kind, &dir.path().join("o2")).unwrap_err();
            assert!(
                matches!(error, ArchiveError::Invalid { .. }),
                "{kind:?}: {error}"
            );
        }
    }
}
