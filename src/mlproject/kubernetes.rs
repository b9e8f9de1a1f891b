//! `ferroflow run --backend kubernetes`: the run as a ProjectRun resource, created from the
//! command line and followed until it ends, for users who do not write YAML. The operator
//! creates the MLflow run and the Pod; this prints each change of phase and exits 0 only when
//! the run succeeded.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use futures::TryStreamExt as _;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::parse_assignments;
use crate::cli::RunArgs;
use crate::crd::{Phase, ProjectRun, ProjectRunStatus};

/// Creates the ProjectRun for `args` and follows it.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let resource = project_run(&args)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, or the in-cluster service account)")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<ProjectRun> = Api::namespaced(client, &namespace);
    let created = api
        .create(&PostParams::default(), &resource)
        .await
        .with_context(|| format!("creating a ProjectRun in namespace {namespace}"))?;
    let name = created.name_any();
    eprintln!(
        "=== Created ProjectRun {namespace}/{name} (kubectl get mlrun -n {namespace} {name}) ==="
    );
    follow(&api, &namespace, &name).await
}

/// The ProjectRun `args` describe: PROJECT is a folder in the image, or a `scheme:` URI the
/// init container downloads.
fn project_run(args: &RunArgs) -> anyhow::Result<ProjectRun> {
    let refuse =
        |flag: &str, why: &str| format!("{flag} does not apply to --backend kubernetes: {why}");
    if args.run_id.is_some() {
        bail!(refuse("--run-id", "the operator creates the run"));
    }
    if args.experiment_id.is_some() {
        bail!(refuse(
            "--experiment-id",
            "a ProjectRun names its experiment: use --experiment-name"
        ));
    }
    if args.storage_dir.is_some() {
        bail!(refuse(
            "--storage-dir",
            "path parameters are downloaded inside the Pod"
        ));
    }
    let image = args
        .image
        .as_deref()
        .context("--backend kubernetes needs --image, the image the project runs in")?;
    let experiment = args
        .experiment_name
        .as_deref()
        .context("--backend kubernetes needs --experiment-name")?;
    let project = args.project.to_string_lossy();
    let parameters: BTreeMap<String, String> =
        parse_assignments(&args.parameters)?.into_iter().collect();
    let mut spec = json!({
        "experimentName": experiment,
        "image": image,
        "entryPoint": args.entry_point,
    });
    let where_from = if project.contains(':') {
        "source"
    } else {
        "projectDir"
    };
    spec[where_from] = json!(project);
    if !parameters.is_empty() {
        spec["parameters"] = json!(parameters);
    }
    let prefix = args.run_name.as_deref().unwrap_or(&args.entry_point);
    let object = json!({
        "apiVersion": "ferroflow.dev/v1alpha1",
        "kind": "ProjectRun",
        "metadata": {"generateName": format!("{}-", dns_label(prefix))},
        "spec": spec,
    });
    Ok(serde_json::from_value(object)?)
}

/// `text` as the start of a Kubernetes name: lowercase letters, digits and `-`, at most 50
/// characters (the API server appends 5 random ones, the Pod `-run`).
fn dns_label(text: &str) -> String {
    let mapped: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "project".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Prints each new state of the ProjectRun; `Ok` once it succeeded (and registered its model
/// when asked), an error once it failed, was killed or was deleted.
async fn follow(api: &Api<ProjectRun>, namespace: &str, name: &str) -> anyhow::Result<()> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config));
    let mut last_line = String::new();
    while let Some(event) = events.try_next().await? {
        let object = match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => object,
            watcher::Event::Delete(_) => bail!("ProjectRun {namespace}/{name} was deleted"),
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        let status = object.status.clone().unwrap_or_default();
        let line = status_line(&status);
        if line != last_line {
            eprintln!("=== ProjectRun {namespace}/{name}: {line} ===");
            last_line = line;
        }
        if let Some(ended) = ended(&object, &status) {
            return ended.map_err(|why| anyhow::anyhow!("ProjectRun {namespace}/{name} {why}"));
        }
    }
    bail!("the watch of ProjectRun {namespace}/{name} ended")
}

/// One line about where the run is.
fn status_line(status: &ProjectRunStatus) -> String {
    let phase = status.phase.map_or_else(
        || "waiting for the operator".to_owned(),
        |p| format!("{p:?}"),
    );
    let mut line = phase;
    if let Some(run) = &status.run_id {
        line.push_str(&format!(", run {run}"));
    }
    if let Some(version) = status.registered_version {
        line.push_str(&format!(", registered version {version}"));
    }
    if let Some(ready) = status
        .state
        .condition("Ready")
        .filter(|c| c.status != "True")
    {
        line.push_str(&format!(" ({}: {})", ready.reason, ready.message));
    }
    line
}

/// `Some` once the run is over: `Ok` when it succeeded (and its model is registered, if
/// asked), else why not.
fn ended(object: &ProjectRun, status: &ProjectRunStatus) -> Option<Result<(), String>> {
    let current = status.state.observed_generation == object.metadata.generation;
    match status.phase? {
        Phase::Succeeded
            if object.spec.register_model.is_none() || status.registered_version.is_some() =>
        {
            Some(Ok(()))
        }
        Phase::Succeeded => {
            // Registering failed for a reason a human must fix: nothing more will happen.
            let ready = status.state.condition("Ready")?;
            (current
                && status
                    .state
                    .condition("Stalled")
                    .is_some_and(|c| c.status == "True"))
            .then(|| {
                Err(format!(
                    "succeeded, but its model was not registered: {}",
                    ready.message
                ))
            })
        }
        Phase::Failed => Some(Err(format!(
            "failed: run {} FAILED",
            status.run_id.as_deref().unwrap_or_default()
        ))),
        Phase::Killed => Some(Err("was killed".to_owned())),
        Phase::Pending | Phase::Running => None,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(line: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["ferroflow", "run"], line].concat()).unwrap();
        match cli.command {
            Command::Run(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_becomes_a_project_run() {
        let from_image = project_run(&args(&[
            "/app",
            "--backend",
            "kubernetes",
            "--image",
            "ghcr.io/x/train:1",
            "-e",
            "train",
            "-P",
            "alpha=0.5",
            "-P",
            "label=a b",
            "--experiment-name",
            "fraud",
        ]))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&from_image).unwrap(),
            json!({
                "apiVersion": "ferroflow.dev/v1alpha1",
                "kind": "ProjectRun",
                "metadata": {"generateName": "train-"},
                "spec": {
                    "experimentName": "fraud",
                    "image": "ghcr.io/x/train:1",
                    "projectDir": "/app",
                    "entryPoint": "train",
                    "parameters": {"alpha": "0.5", "label": "a b"},
                },
            })
        );
        let downloaded = project_run(&args(&[
            "runs:/0123/project",
            "--backend",
            "kubernetes",
            "--image",
            "python:3.12",
            "--experiment-name",
            "fraud",
            "--run-name",
            "Nightly Fraud_Train",
        ]))
        .unwrap();
        assert_eq!(
            downloaded.spec.source.as_deref(),
            Some("runs:/0123/project")
        );
        assert_eq!(downloaded.spec.project_dir, None);
        assert_eq!(
            downloaded.metadata.generate_name.as_deref(),
            Some("nightly-fraud-train-")
        );
    }

    #[test]
    fn what_a_project_run_cannot_take_is_refused_by_name() {
        let cases = [
            (
                vec!["/app", "--backend", "kubernetes", "--experiment-name", "e"],
                "--image",
            ),
            (
                vec!["/app", "--backend", "kubernetes", "--image", "i"],
                "--experiment-name",
            ),
            (
                vec![
                    "/app",
                    "--backend",
                    "kubernetes",
                    "--image",
                    "i",
                    "--experiment-name",
                    "e",
                    "--run-id",
                    "r",
                ],
                "--run-id does not apply",
            ),
        ];
        for (line, expected) in cases {
            let error = project_run(&args(&line)).unwrap_err().to_string();
            assert!(error.contains(expected), "{line:?}: {error}");
        }
    }

    #[test]
    fn it_ends_when_the_run_is_over_and_the_model_registered() {
        let object: ProjectRun = serde_json::from_value(json!({
            "apiVersion": "ferroflow.dev/v1alpha1", "kind": "ProjectRun",
            "metadata": {"name": "t", "generation": 1},
            "spec": {"experimentName": "e", "image": "i", "projectDir": "/p",
                     "registerModel": {"modelName": "m"}},
        }))
        .unwrap();
        let status = |phase: Option<Phase>, version: Option<i64>| ProjectRunStatus {
            phase,
            run_id: Some("r1".into()),
            registered_version: version,
            ..ProjectRunStatus::default()
        };
        assert_eq!(ended(&object, &status(None, None)), None);
        assert_eq!(ended(&object, &status(Some(Phase::Running), None)), None);
        // Succeeded, the version not registered yet: keep following.
        assert_eq!(ended(&object, &status(Some(Phase::Succeeded), None)), None);
        assert_eq!(
            ended(&object, &status(Some(Phase::Succeeded), Some(1))),
            Some(Ok(()))
        );
        assert!(
            ended(&object, &status(Some(Phase::Failed), None))
                .unwrap()
                .is_err()
        );
        assert!(
            ended(&object, &status(Some(Phase::Killed), None))
                .unwrap()
                .is_err()
        );
        assert_eq!(
            status_line(&status(Some(Phase::Succeeded), Some(3))),
            "Succeeded, run r1, registered version 3"
        );
    }
}
