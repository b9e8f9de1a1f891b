"""`ferroflow run` against a tracking server, compared with `mlflow run --env-manager local`.

The same project runs under both runners and the two runs are compared field by field
(ignoring ids and times): params, metrics, tags, the logged model. The parameter handling is
compared with mlflow's own `EntryPoint.compute_command` and with what the command receives,
on a table of awkward values. Bad parameters fail before any run exists; a failing command
ends the run FAILED; SIGTERM ends it KILLED and leaves no process of the command behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tags_dict

PROJECTS = Path(__file__).resolve().parent.parent / "projects"
RUN_TIMEOUT_S = 300
# Tags whose values name the run or the moment, not what ran.
VARYING_TAGS = {"mlflow.runName"}
RUN_LINE = re.compile(r"=== Running command '(.*)' in run with ID '([0-9a-f]+)' ===", re.S)
SUCCEEDED_LINE = re.compile(r"Run \(ID '([0-9a-f]+)'\) succeeded")


@pytest.fixture
def ferroflow_bin(request) -> str:
    binary = request.config.getoption("--ferroflow-bin")
    if not binary:
        pytest.skip("`ferroflow run` needs FERROFLOW_BIN (not applicable to FERROFLOW_REFERENCE=mlflow)")
    return str(Path(binary).resolve())


def _mlflow_bin() -> str:
    exe = Path(sys.executable).with_name("mlflow")
    return str(exe) if exe.exists() else shutil.which("mlflow") or "mlflow"


def _env(tracking_uri: str) -> dict:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    # The project's `python` is the venv's, whichever runner starts it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(argv: list[str], tracking_uri: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env={**_env(tracking_uri), **env}, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)


def _params(params: dict) -> list[str]:
    return [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]


def _run_both(ferroflow_bin, tracking_uri, project: Path, entry: str, params: dict, experiment_id: str, cwd: Path):
    """(mlflow's result, ferroflow's result): each a CompletedProcess."""
    common = [str(project), "-e", entry, "--experiment-id", experiment_id, *_params(params)]
    mlflow_done = _run([_mlflow_bin(), "run", *common, "--env-manager", "local"], tracking_uri, cwd)
    ferroflow_done = _run([ferroflow_bin, "run", *common], tracking_uri, cwd)
    return mlflow_done, ferroflow_done


def _run_id(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr[-4000:]
    found = SUCCEEDED_LINE.search(done.stderr)
    assert found, done.stderr[-4000:]
    return found.group(1)


def _command_line(done: subprocess.CompletedProcess) -> str:
    found = RUN_LINE.search(done.stderr)
    assert found, done.stderr[-4000:]
    return found.group(1)


def _git_checkout(tmp_path: Path, name: str) -> Path:
    """A copy of e2e/projects/<name> as a sub-folder of a fresh git repository (one commit)."""
    repo = tmp_path / "repo"
    shutil.copytree(PROJECTS / name, repo / name)
    git = ["git", "-C", str(repo), "-c", "user.email=e2e@ferroflow.dev", "-c", "user.name=e2e"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "project"], check=True)
    return repo / name


def _logged_models(client, run_id: str, experiment_id: str) -> list[dict]:
    models = client.search_logged_models(experiment_ids=[experiment_id])
    described = []
    for model in models:
        if model.source_run_id != run_id:
            continue
        files = sorted(f.path for f in client.list_logged_model_artifacts(model.model_id))
        described.append({"name": model.name, "status": str(model.status), "files": files,
                          "params": model.params, "flavors": sorted(model.tags.keys())})
    return described


def _comparable(client, run_id: str, experiment_id: str) -> dict:
    run = client.get_run(run_id)
    tags = {k: v for k, v in tags_dict(run.data).items() if k not in VARYING_TAGS}
    return {
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": tags,
        "models": _logged_models(client, run_id, experiment_id),
        "artifacts": sorted(f.path for f in client.list_artifacts(run_id)),
    }


def test_sklearn_project_runs_like_mlflow_run(ferroflow_bin, tracking_uri, client, experiment_id, tmp_path):
    project = _git_checkout(tmp_path, "sklearn-train")
    params = {"alpha": "0.3", "max_iter": "500", "label": "nightly 'baseline' $USER"}
    mlflow_done, ferroflow_done = _run_both(ferroflow_bin, tracking_uri, project, "main", params,
                                            experiment_id, tmp_path)
    expected = _comparable(client, _run_id(mlflow_done), experiment_id)
    got = _comparable(client, _run_id(ferroflow_done), experiment_id)
    assert got == expected

    # What the comparison rests on, spelled out.
    commit = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert got["status"] == "FINISHED"
    assert got["params"] == {"alpha": "0.3", "l1_ratio": "0.1", "max_iter": "500",
                             "label": "'nightly '\"'\"'baseline'\"'\"' $USER'"}
    assert set(got["metrics"]) == {"rmse", "mae", "r2"}
    assert got["tags"]["label"] == "nightly 'baseline' $USER"
    assert got["tags"]["mlflow.source.type"] == "PROJECT"
    assert got["tags"]["mlflow.source.name"] == f"file://{project.parent}#sklearn-train"
    assert got["tags"]["mlflow.source.git.commit"] == commit
    assert got["tags"]["mlflow.project.entryPoint"] == "main"
    assert got["tags"]["mlflow.project.backend"] == "local"
    assert [m["name"] for m in got["models"]] == ["model"]
    assert "MLmodel" in got["models"][0]["files"]
    assert _command_line(ferroflow_done) == _command_line(mlflow_done)
    assert "asks for a python_env" in ferroflow_done.stderr


# Values a shell treats specially, and number formats Python reads.
STRINGS = ["plain", "two words", "it's", 'say "hi"', "$HOME", "`id`", "", "a;b|c&d", "*.csv",
           "--flag=x", "ünï cödé", "tab\there"]
FLOATS = ["1e-3", "-2", "1_000.5"]
INTS = ["007", "-3"]
URIS = ["s3://bucket/key with space"]


def _table(out: Path) -> dict:
    params = {"out": str(out)}
    params.update({f"s{i}": v for i, v in enumerate(STRINGS)})
    params.update({f"f{i}": v for i, v in enumerate(FLOATS)})
    params.update({f"i{i}": v for i, v in enumerate(INTS)})
    params.update({f"u{i}": v for i, v in enumerate(URIS)})
    # mlflow quotes an extra parameter's name too, so one that needs quoting is refused as a param key.
    params.update({"extra-key": "v w", "x": "$y", "empty": ""})
    return params


def test_parameters_are_quoted_as_mlflow_quotes_them(ferroflow_bin, tracking_uri, client, experiment_id, tmp_path):
    from mlflow.projects import _project_spec

    project = PROJECTS / "probe"
    mlflow_out, ferroflow_out = tmp_path / "mlflow.json", tmp_path / "ferroflow.json"
    mlflow_done = _run([_mlflow_bin(), "run", str(project), "-e", "echo", "--experiment-id", experiment_id,
                        "--env-manager", "local", *_params(_table(mlflow_out))], tracking_uri, tmp_path)
    ferroflow_done = _run([ferroflow_bin, "run", str(project), "-e", "echo", "--experiment-id", experiment_id,
                           *_params(_table(ferroflow_out))], tracking_uri, tmp_path)
    mlflow_run, ferroflow_run = _run_id(mlflow_done), _run_id(ferroflow_done)

    # The command line: what mlflow's own code computes, and what `mlflow run` ran.
    entry = _project_spec.load_project(str(project)).get_entry_point("echo")
    computed = entry.compute_command(_table(ferroflow_out), str(tmp_path))
    assert _command_line(ferroflow_done) == computed
    assert _command_line(mlflow_done) == computed.replace(str(ferroflow_out), str(mlflow_out))
    # What the command received.
    received = json.loads(ferroflow_out.read_text())
    assert received == json.loads(mlflow_out.read_text())
    declared = STRINGS + FLOATS + INTS + URIS + ["0.5", "1", "it's", "1e-3", "16", "1500.0"]
    assert received == declared + ["--extra-key", "v w", "--x", "$y", "--empty", ""]
    # What was logged (quoted, as mlflow logs it), apart from the output file's name.
    logged = {k: v for k, v in client.get_run(ferroflow_run).data.params.items() if k != "out"}
    expected = {k: v for k, v in client.get_run(mlflow_run).data.params.items() if k != "out"}
    assert logged == expected
    assert logged["s1"] == "'two words'" and logged["extra-key"] == "'v w'"


def _runs(client, experiment_id: str):
    return client.search_runs([experiment_id])


@pytest.mark.parametrize(
    ("entry", "params", "message"),
    [
        ("needs", {"first": "a", "third": "abc"}, "parameter 'third' is of type float, but got 'abc'"),
        ("needs", {"first": "a", "third": "1", "second": "2.5"}, "parameter 'second' is of type int, but got '2.5'"),
        ("needs", {"second": "1"}, "missing parameters of entry point 'needs': 'first', 'third'"),
        ("echo", {}, "missing parameters of entry point 'echo': 'out'"),
        ("nope", {}, "could not find 'nope' among the entry points"),
    ],
)
def test_bad_parameters_fail_before_a_run_exists(ferroflow_bin, tracking_uri, client, experiment_id, tmp_path,
                                                 entry, params, message):
    done = _run([ferroflow_bin, "run", str(PROJECTS / "probe"), "-e", entry, "--experiment-id", experiment_id,
                 *_params(params)], tracking_uri, tmp_path)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert _runs(client, experiment_id) == []


def test_a_failing_command_ends_the_run_failed(ferroflow_bin, tracking_uri, client, experiment_id, tmp_path):
    done = _run([ferroflow_bin, "run", str(PROJECTS / "probe"), "-e", "fail", "-P", "code=7",
                 "--experiment-id", experiment_id], tracking_uri, tmp_path)
    assert done.returncode != 0
    (run,) = _runs(client, experiment_id)
    assert run.info.status == "FAILED"
    assert run.info.end_time is not None
    assert run.data.params == {"code": "7"}
    assert f"run (ID '{run.info.run_id}') failed" in done.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has yet to collect it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(condition, deadline_s: float, what: str):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {deadline_s}s waiting for {what}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_kills_the_command_and_ends_the_run_killed(ferroflow_bin, tracking_uri, client, experiment_id,
                                                            tmp_path, signum):
    marker = tmp_path / "pids"
    log = tmp_path / "ferroflow.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([ferroflow_bin, "run", str(PROJECTS / "probe"), "-e", "sleep",
                                 "-P", f"marker={marker}", "--experiment-id", experiment_id],
                                cwd=tmp_path, env=_env(tracking_uri), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        pids = _wait_for(lambda: marker.exists() and marker.read_text().split(), 120, "the command to start")
        child, grandchild = (int(p) for p in pids)
        assert _alive(child) and _alive(grandchild)
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, log.read_text()
    _wait_for(lambda: not _alive(child) and not _alive(grandchild), 30, "the command's processes to end")
    (run,) = _runs(client, experiment_id)
    assert run.info.status == "KILLED", log.read_text()
    assert run.info.end_time is not None


@pytest.mark.parametrize("form", ["runs", "runs-subfolder", "mlflow-artifacts", "models-version",
                                  "models-alias", "models-latest", "logged-model"])
def test_remote_path_parameters_are_downloaded_as_mlflow_run_does(ferroflow_bin, tracking_uri, client, experiment_id,
                                                                  unique_name, tmp_path, form):
    source = tmp_path / "data"
    (source / "nested").mkdir(parents=True)
    (source / "a.txt").write_text("alpha")
    (source / "nested" / "b.txt").write_text("beta")
    producer = client.create_run(experiment_id)
    run_id = producer.info.run_id
    client.log_artifacts(run_id, str(source), artifact_path="data")
    client.set_terminated(run_id)
    if form.startswith("models"):
        client.create_registered_model(unique_name)
        client.create_model_version(unique_name, f"runs:/{run_id}/data", run_id=run_id)
        client.set_registered_model_alias(unique_name, "champion", "1")
    if form == "logged-model":
        model = client.create_logged_model(experiment_id)
        client.log_model_artifacts(model.model_id, str(source))
    uri = {
        "runs": f"runs:/{run_id}/data",
        "runs-subfolder": f"runs:/{run_id}/data/nested",
        "mlflow-artifacts": f"{producer.info.artifact_uri}/data",
        "models-version": f"models:/{unique_name}/1",
        "models-alias": f"models:/{unique_name}@champion",
        "models-latest": f"models:/{unique_name}/latest",
        "logged-model": f"models:/{model.model_id}" if form == "logged-model" else "",
    }[form]

    listings = {}
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    for runner in ("mlflow", "ferroflow"):
        out = tmp_path / f"{runner}.json"
        argv = ([_mlflow_bin(), "run"] if runner == "mlflow" else [ferroflow_bin, "run"]) + [
            str(PROJECTS / "probe"), "-e", "files", "-P", f"data={uri}", "-P", f"out={out}",
            "--experiment-id", experiment_id]
        if runner == "mlflow":
            argv += ["--env-manager", "local"]
        env = {"TMPDIR": str(temporary)} if runner == "ferroflow" else {}
        consumer = _run_id(_run(argv, tracking_uri, tmp_path, **env))
        listings[runner] = json.loads(out.read_text())
        # Logged as given, not as the downloaded path.
        assert client.get_run(consumer).data.params["data"] == uri
    assert listings["ferroflow"] == listings["mlflow"]
    assert listings["ferroflow"]["files"]
    # The downloads went into a temporary folder, removed once the run ended.
    assert list(temporary.iterdir()) == []


def test_the_pod_steps_run_a_downloaded_project_in_a_given_run(ferroflow_bin, tracking_uri, client, experiment_id,
                                                               tmp_path):
    """What a ProjectRun Pod does: the init step copies the binary and downloads the project,
    then the copy runs it in the run the operator created."""
    published = client.create_run(experiment_id)
    client.log_artifacts(published.info.run_id, str(PROJECTS / "probe"), artifact_path="project")
    client.set_terminated(published.info.run_id)
    given = client.create_run(experiment_id, tags={"ferroflow.dev/owner": "ProjectRun/ml/probe"})

    binary, project = tmp_path / "bin" / "ferroflow", tmp_path / "project"
    init = _run([ferroflow_bin, "project-init", "--binary-to", str(binary),
                 "--source", f"runs:/{published.info.run_id}/project", "--into", str(project)],
                tracking_uri, tmp_path)
    assert init.returncode == 0, init.stderr
    assert os.access(binary, os.X_OK)
    assert sorted(p.name for p in project.iterdir()) == sorted(p.name for p in (PROJECTS / "probe").iterdir()
                                                               if p.is_file())

    done = _run([str(binary), "run", str(project), "-e", "needs", "-P", "first=a b", "-P", "third=0.5",
                 "--run-id", given.info.run_id], tracking_uri, tmp_path)
    assert _run_id(done) == given.info.run_id
    run = client.get_run(given.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"first": "'a b'", "second": "2", "third": "0.5"}
    tags = tags_dict(run.data)
    assert tags["ferroflow.dev/owner"] == "ProjectRun/ml/probe"
    assert tags["mlflow.source.type"] == "PROJECT"
    assert tags["mlflow.project.entryPoint"] == "needs"
    assert tags["mlflow.project.backend"] == "local"
    assert len(_runs(client, experiment_id)) == 2


def test_the_init_step_unpacks_tar_gz_and_zip_sources_and_refuses_a_traversal(
        ferroflow_bin, tracking_uri, client, experiment_id, tmp_path):
    """A `source` archive logged as an artifact: unpacked into the project folder (its single
    top-level folder stripped), and the project runs from there; an archive with an entry
    escaping the folder is refused before anything is written."""
    import tarfile
    import zipfile

    probe = PROJECTS / "probe"
    tar_path, zip_path, evil_path = tmp_path / "probe.tar.gz", tmp_path / "probe.zip", tmp_path / "evil.zip"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(probe, arcname="probe")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in probe.iterdir():
            archive.write(file, arcname=file.name)
    with zipfile.ZipFile(evil_path, "w") as archive:
        archive.writestr("MLproject", "name: evil\n")
        archive.writestr("../escaped.sh", "echo gotcha\n")
    published = client.create_run(experiment_id)
    for path in (tar_path, zip_path, evil_path):
        client.log_artifact(published.info.run_id, str(path), artifact_path="sources")
    client.set_terminated(published.info.run_id)
    expected = sorted(p.name for p in probe.iterdir() if p.is_file())

    for name in ("probe.tar.gz", "probe.zip"):
        pod = tmp_path / f"pod-{name}"
        binary, project = pod / "bin" / "ferroflow", pod / "project"
        init = _run([ferroflow_bin, "project-init", "--binary-to", str(binary),
                     "--source", f"runs:/{published.info.run_id}/sources/{name}", "--into", str(project)],
                    tracking_uri, tmp_path)
        assert init.returncode == 0, init.stderr
        assert f"unpacked runs:/{published.info.run_id}/sources/{name}" in init.stderr
        assert sorted(p.name for p in project.iterdir()) == expected, name
        given = client.create_run(experiment_id)
        done = _run([str(binary), "run", str(project), "-e", "needs", "-P", "first=x", "-P", "third=0.5",
                     "--run-id", given.info.run_id], tracking_uri, tmp_path)
        assert _run_id(done) == given.info.run_id
        assert client.get_run(given.info.run_id).info.status == "FINISHED"

    project = tmp_path / "evil" / "project"
    init = _run([ferroflow_bin, "project-init", "--binary-to", str(tmp_path / "evil" / "ferroflow"),
                 "--source", f"runs:/{published.info.run_id}/sources/evil.zip", "--into", str(project)],
                tracking_uri, tmp_path)
    assert init.returncode != 0
    assert "archive entry \"../escaped.sh\" attempts path traversal" in init.stderr, init.stderr
    assert not (tmp_path / "evil" / "escaped.sh").exists()
    assert list(project.iterdir()) == []
