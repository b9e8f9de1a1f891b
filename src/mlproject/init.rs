//! `ferroflow project-init`: the init container of a ProjectRun Pod. Copies this binary into
//! the volume the user's image mounts (so `ferroflow run` needs nothing from that image but
//! `bash`), and downloads a `source` project through the tracking server: a folder
//! recursively, a `.tar.gz`/`.tgz`/`.zip` file unpacked (see [`archive`]).

use std::os::unix::fs::PermissionsExt as _;

use anyhow::Context as _;

use super::archive::{self, ArchiveKind};
use crate::cli::ProjectInitArgs;
use crate::client::{MlflowClient, download};

/// Copies the binary and fetches the project.
pub async fn run(args: ProjectInitArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("finding the ferroflow binary")?;
    if let Some(parent) = args.binary_to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(&me, &args.binary_to)
        .with_context(|| format!("copying {} to {}", me.display(), args.binary_to.display()))?;
    std::fs::set_permissions(&args.binary_to, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", args.binary_to.display()))?;
    eprintln!("copied {} to {}", me.display(), args.binary_to.display());

    let Some(source) = &args.source else {
        return Ok(());
    };
    let into = args
        .into
        .as_deref()
        .context("--source needs --into, the folder to download the project into")?;
    let tracking_uri = args
        .tracking_uri
        .as_deref()
        .context("--source needs the tracking server: --tracking-uri or MLFLOW_TRACKING_URI")?;
    let client = MlflowClient::new(tracking_uri, None)?;
    let Some(kind) = ArchiveKind::of(source) else {
        download::download_contents(&client, source, into)
            .await
            .with_context(|| format!("downloading the project from '{source}'"))?;
        eprintln!("downloaded {source} into {}", into.display());
        return Ok(());
    };
    // Not in the project folder: it holds only what the archive does.
    let staging = std::env::temp_dir().join(format!(
        "ferroflow-source-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let unpacked = async {
        let file = download::download_file(&client, source, &staging)
            .await
            .with_context(|| format!("downloading the project archive '{source}'"))?;
        let into = into.to_owned();
        let files =
            tokio::task::spawn_blocking(move || archive::unpack(&file, kind, &into)).await??;
        anyhow::Ok(files)
    }
    .await;
    // Best effort: the archive is not needed any more either way.
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let files = unpacked.with_context(|| format!("unpacking the project archive '{source}'"))?;
    eprintln!("unpacked {source} ({files} files) into {}", into.display());
    Ok(())
}
