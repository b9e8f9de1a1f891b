//! `ferroflow run`: what `mlflow run DIR --env-manager local` does, without Python. Checks
//! the parameters, creates the run (or takes the given one) with the tags `mlflow run` writes,
//! logs the parameters, downloads remote `path` parameters, runs the command with `bash -c` in
//! its own process group with the run in its environment, and ends the run by the exit status;
//! SIGINT/SIGTERM kill the group and end the run KILLED.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::FutureExt as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{DockerEnvironment, DockerVariable, Environment, Project, Resolved, parse_assignments};
use crate::cli::RunArgs;
use crate::client::{self, MlflowClient, RunInfo, download};

/// How long the command's processes have to exit after SIGTERM before they get SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// What MLflow records when no user name can be found.
const DEFAULT_USER: &str = "unknown";

/// Runs the project; `Ok` when the command succeeded. Fires of `shutdown` kill the command.
pub async fn run(args: RunArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    // Poll once so the signal handlers are installed before anything is started.
    let mut interrupted = (&mut shutdown).now_or_never().is_some();

    if args.experiment_id.is_some() && args.experiment_name.is_some() {
        bail!("specify only one of --experiment-name and --experiment-id");
    }
    let directory = std::path::absolute(&args.project)
        .with_context(|| format!("resolving {}", args.project.display()))?;
    let project = Project::load(&directory)?;
    let entry_point = project.entry_point(&args.entry_point)?;
    let given = parse_assignments(&args.parameters)?;
    let working_dir = std::env::current_dir().context("reading the working folder")?;
    let resolved = Resolved::new(&entry_point, &given, &working_dir)?;
    announce_environment(&project.environment);
    let variables = match &project.environment {
        Environment::Docker(docker) => {
            let (variables, notes) = docker_env_settings(
                docker,
                |name| std::env::var_os(name).is_some(),
                |path| path.exists(),
            );
            for note in notes {
                eprintln!("=== {note} ===");
            }
            variables
        }
        _ => Vec::new(),
    };

    let tracking_uri = args
        .tracking_uri
        .clone()
        .context("no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")?;
    let client = MlflowClient::new(&tracking_uri, None)?;
    let run = match &args.run_id {
        Some(run_id) => client
            .get_run(run_id)
            .await
            .with_context(|| format!("reading run '{run_id}'"))?,
        None => {
            let experiment_id = experiment_id(&client, &args).await?;
            client
                .create_run(
                    &experiment_id,
                    args.run_name.as_deref(),
                    &source_tags(&directory, &args.entry_point),
                )
                .await
                .context("creating the run")?
        }
    };
    let command = CommandInputs {
        directory: &directory,
        resolved: &resolved,
        variables: &variables,
    };
    let outcome = execute(
        &client,
        &run,
        &args,
        &command,
        &mut shutdown,
        &mut interrupted,
    )
    .await;
    let status = match &outcome {
        Ok(Outcome::Succeeded) => "FINISHED",
        Ok(Outcome::Killed) => "KILLED",
        Ok(Outcome::Failed(_)) | Err(_) => "FAILED",
    };
    client
        .set_status(&run.run_id, status)
        .await
        .with_context(|| format!("ending run '{}' {status}", run.run_id))?;
    match outcome? {
        Outcome::Succeeded => {
            eprintln!("=== Run (ID '{}') succeeded ===", run.run_id);
            Ok(())
        }
        Outcome::Failed(status) => bail!("run (ID '{}') failed: the command {status}", run.run_id),
        Outcome::Killed => bail!("run (ID '{}') was killed", run.run_id),
    }
}

/// A folder removed with everything in it when this is dropped.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot remove {}: {error}", self.0.display());
        }
    }
}

enum Outcome {
    Succeeded,
    Failed(std::process::ExitStatus),
    Killed,
}

/// What the command is made of and runs with.
struct CommandInputs<'a> {
    /// The project folder, where the command runs.
    directory: &'a Path,
    resolved: &'a Resolved,
    /// Set in the command's environment (`docker_env.environment`).
    variables: &'a [(String, String)],
}

/// Everything after the run exists: its failure ends the run FAILED.
async fn execute(
    client: &MlflowClient,
    run: &RunInfo,
    args: &RunArgs,
    inputs: &CommandInputs<'_>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    interrupted: &mut bool,
) -> anyhow::Result<Outcome> {
    let CommandInputs {
        directory,
        resolved,
        variables,
    } = *inputs;
    let mut tags = Vec::new();
    if args.run_id.is_some() {
        // A run made by someone else (the operator): it gets the same tags as one made here.
        tags = source_tags(directory, &args.entry_point);
    }
    tags.push(("mlflow.project.backend".to_owned(), "local".to_owned()));
    client
        .log_batch(&run.run_id, &resolved.logged_params(), &tags)
        .await
        .context("logging the parameters")?;

    let mut downloaded = HashMap::new();
    let remote: Vec<_> = resolved.remote_paths().collect();
    let storage = args
        .storage_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("ferroflow-run-{}", run.run_id));
    // Removed once the command has exited (when this function returns); a --storage-dir
    // folder is the user's, and stays.
    let _removed_at_the_end =
        (!remote.is_empty() && args.storage_dir.is_none()).then(|| RemovedOnDrop(storage.clone()));
    if !remote.is_empty() {
        eprintln!(
            "=== Downloading remote URIs passed to arguments of type 'path' into {} ===",
            storage.display()
        );
        for path in remote {
            let local = download::download_artifact(client, &path.uri, &storage.join(&path.folder))
                .await
                .with_context(|| {
                    format!(
                        "downloading '{}' for parameter '{}'",
                        path.uri, path.parameter
                    )
                })?;
            downloaded.insert(path.parameter, local);
        }
    }
    let command = resolved.command(&downloaded)?;
    eprintln!(
        "=== Running command '{command}' in run with ID '{}' === ",
        run.run_id
    );
    let tracking_uri = args.tracking_uri.clone().unwrap_or_default();
    let mut child = tokio::process::Command::new("bash");
    child
        .arg("-c")
        .arg(&command)
        .current_dir(directory)
        .envs(variables.iter().map(|(name, value)| (name, value)))
        // After the project's variables: the project cannot point the run elsewhere.
        .env("MLFLOW_TRACKING_URI", &tracking_uri)
        .env("MLFLOW_RUN_ID", &run.run_id)
        .env("MLFLOW_EXPERIMENT_ID", &run.experiment_id);
    // MLflow's client sends MLFLOW_TRACKING_TOKEN and cannot read a token file: in a Pod, the
    // token this run signed in with (a projected one, FERROFLOW_TRACKING_TOKEN_FILE) goes on.
    if let Some(token) = client::bearer_token(None) {
        child.env("MLFLOW_TRACKING_TOKEN", token);
    }
    let mut child = child
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .context("starting bash")?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .context("the command has no process id")?;
    if !*interrupted {
        tokio::select! {
            status = child.wait() => {
                let status = status.context("waiting for the command")?;
                return Ok(if status.success() { Outcome::Succeeded } else { Outcome::Failed(status) });
            }
            () = shutdown.as_mut() => *interrupted = true,
        }
    }
    eprintln!("=== Interrupted: stopping the command (process group {group}) ===");
    signal_group(group, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        signal_group(group, Signal::SIGKILL);
        child
            .wait()
            .await
            .context("waiting for the killed command")?;
    }
    // Whatever the command left behind in its group goes too.
    signal_group(group, Signal::SIGKILL);
    Ok(Outcome::Killed)
}

fn signal_group(group: Pid, signal: Signal) {
    if let Err(error) = killpg(group, signal)
        && error != nix::errno::Errno::ESRCH
    {
        tracing::warn!(%error, %group, ?signal, "cannot signal the command's process group");
    }
}

/// The experiment as `mlflow run` picks it: by id, by name (created when missing), else the
/// default experiment `0`.
async fn experiment_id(client: &MlflowClient, args: &RunArgs) -> anyhow::Result<String> {
    if let Some(id) = &args.experiment_id {
        return Ok(id.clone());
    }
    let Some(name) = &args.experiment_name else {
        return Ok("0".to_owned());
    };
    if let Some(id) = client.experiment_id_by_name(name).await? {
        return Ok(id);
    }
    eprintln!("'{name}' does not exist. Creating a new experiment");
    Ok(client.create_experiment(name).await?)
}

fn announce_environment(environment: &Environment) {
    let asked = match environment {
        Environment::Current => return,
        Environment::Python(path) => format!("a python_env ({})", path.display()),
        Environment::Conda(path) => format!("a conda environment ({})", path.display()),
        Environment::Docker(docker) => format!("the Docker image {}", docker.image),
    };
    eprintln!(
        "=== The project asks for {asked}; ferroflow run uses the current environment (in a ProjectRun, the Pod's image) ==="
    );
}

/// What an MLproject's `docker_env` asks of the command's environment, honoured where a
/// process can honour it, and notes on what it cannot: `[NAME, value]` entries are set (the
/// variables returned); `NAME` entries are copied from the runner's environment, which the
/// command inherits anyway (`is_set` tells whether there is something to copy). Volumes cannot
/// be mounted by a process: in a ProjectRun they are the resource's `volumes`/`volumeMounts`
/// (an MLproject inside an image does not get to mount host folders), so an entry whose
/// container path does not `exist` is reported.
fn docker_env_settings(
    docker: &DockerEnvironment,
    is_set: impl Fn(&str) -> bool,
    exists: impl Fn(&Path) -> bool,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut variables = Vec::new();
    let mut notes = Vec::new();
    for variable in &docker.environment {
        match variable {
            DockerVariable::Set(name, value) => variables.push((name.clone(), value.clone())),
            DockerVariable::Copy(name) if !is_set(name) => notes.push(format!(
                "docker_env.environment copies {name}, which is not set here: the command runs without it"
            )),
            DockerVariable::Copy(_) => {}
        }
    }
    for entry in &docker.volumes {
        // `docker run -v` forms: `/host:/container[:mode]`, `name:/container[:mode]`, `/container`.
        let mut parts = entry.split(':');
        let first = parts.next().unwrap_or_default();
        let container = parts.next().unwrap_or(first);
        if !exists(Path::new(container)) {
            notes.push(format!(
                "docker_env.volumes entry '{entry}' is not mounted: ferroflow run mounts nothing, \
                 and {container} does not exist here (in a ProjectRun, declare the volume in \
                 spec.volumes and spec.volumeMounts)"
            ));
        }
    }
    (variables, notes)
}

/// The tags `mlflow run` gives a run it creates: user, source (the folder, or
/// `file://<checkout>#<subfolder>` inside a git checkout), git commit and remote, entry point.
fn source_tags(directory: &Path, entry_point: &str) -> Vec<(String, String)> {
    let checkout = git(directory, &["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let source_name = match &checkout {
        Some(top) => match directory.strip_prefix(top) {
            Ok(sub) if sub.as_os_str().is_empty() => format!("file://{}", top.display()),
            Ok(sub) => format!("file://{}#{}", top.display(), sub.display()),
            Err(_) => directory.display().to_string(),
        },
        None => directory.display().to_string(),
    };
    let mut tags = vec![
        ("mlflow.user".to_owned(), user()),
        ("mlflow.source.name".to_owned(), source_name),
        ("mlflow.source.type".to_owned(), "PROJECT".to_owned()),
        (
            "mlflow.project.entryPoint".to_owned(),
            entry_point.to_owned(),
        ),
    ];
    if checkout.is_some() {
        if let Some(commit) = git(directory, &["rev-parse", "HEAD"]) {
            tags.push(("mlflow.source.git.commit".to_owned(), commit));
        }
        let remote = git(directory, &["remote"])
            .and_then(|names| names.lines().next().map(str::to_owned))
            .and_then(|name| git(directory, &["remote", "get-url", &name]));
        if let Some(url) = remote {
            tags.push((
                "mlflow.source.git.repoURL".to_owned(),
                without_credentials(&url),
            ));
        }
    }
    tags
}

/// A git command's trimmed output, `None` when git is missing or fails (as MLflow skips the
/// git tags then).
fn git(directory: &Path, arguments: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(directory)
        .args(arguments)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// A remote URL without `user:token@` (MLflow strips embedded credentials too).
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Python's `getpass.getuser()`: the first of LOGNAME, USER, LNAME, USERNAME, else the
/// account of the current uid.
fn user() -> String {
    ["LOGNAME", "USER", "LNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|user| user.name)
        })
        .unwrap_or_else(|| DEFAULT_USER.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_env_variables_are_set_copied_or_reported_and_volumes_checked() {
        let docker = DockerEnvironment {
            image: "ignored:latest".into(),
            volumes: vec![
                "/mnt/data:/data:ro".into(),
                "cache:/cache".into(),
                "/scratch".into(),
            ],
            environment: vec![
                DockerVariable::Set("MODE".into(), "fast lane".into()),
                DockerVariable::Copy("HOME".into()),
                DockerVariable::Copy("MISSING".into()),
            ],
        };
        let (variables, notes) = docker_env_settings(
            &docker,
            |name| name == "HOME",
            |path| path == Path::new("/data"),
        );
        assert_eq!(variables, [("MODE".to_owned(), "fast lane".to_owned())]);
        assert_eq!(notes.len(), 3, "{notes:#?}");
        assert!(notes[0].contains("copies MISSING, which is not set here"));
        assert!(notes[1].starts_with("docker_env.volumes entry 'cache:/cache' is not mounted"));
        assert!(notes[1].contains("/cache does not exist here"));
        assert!(notes[1].contains("spec.volumes and spec.volumeMounts"));
        assert!(notes[2].contains("'/scratch'") && notes[2].contains("/scratch does not exist"));
    }

    #[test]
    fn a_docker_env_that_is_all_there_says_nothing() {
        let docker = DockerEnvironment {
            image: "x".into(),
            volumes: vec!["/host:/data".into()],
            environment: vec![DockerVariable::Copy("HOME".into())],
        };
        let (variables, notes) = docker_env_settings(&docker, |_| true, |_| true);
        assert!(variables.is_empty() && notes.is_empty(), "{notes:?}");
    }
}
