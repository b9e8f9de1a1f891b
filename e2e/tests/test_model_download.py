"""`ferroflow model download`: what a serving Pod's init container runs. The real mlflow client
logs and registers a scikit-learn model; the files ferroflow downloads through the tracking
server (registry lookups + the proxied artifact API) must be byte for byte what
`mlflow.artifacts.download_artifacts` fetches, and load and predict the same.

Runs against ferroflow's server (FERROFLOW_BIN), and against MLflow's own server
(FERROFLOW_REFERENCE=mlflow) when FERROFLOW_CLI_BIN names the ferroflow binary to run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest

from helpers import fit_line


def _cli_binary() -> str:
    binary = os.environ.get("FERROFLOW_BIN") or os.environ.get("FERROFLOW_CLI_BIN")
    if not binary:
        pytest.skip("FERROFLOW_CLI_BIN unset: no ferroflow binary to run against MLflow's server")
    return str(Path(binary).resolve())


def download(tracking_uri: str, uri: str, dest: Path, *, check: bool = True,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(extra_env or {})
    result = subprocess.run(
        [_cli_binary(), "model", "download", uri, str(dest), "--tracking-uri", tracking_uri],
        capture_output=True, text=True, timeout=120, env=env,
    )
    if check:
        assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def registered(tracking_uri, client, unique_name):
    """A model with two versions (different predictions), `champion` on version 2."""
    name = f"dl-{unique_name}"
    mlflow.set_experiment(f"exp-{unique_name}")
    runs = []
    for offset in (0.0, 100.0):
        model, x = fit_line(offset)
        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(model, name="model", registered_model_name=name, input_example=x)
            mlflow.log_text(f"offset {offset}", "notes/readme.txt")
            mlflow.log_dict({"offset": offset}, "notes/deep/params.json")
        runs.append(run.info.run_id)
    client.set_registered_model_alias(name, "champion", "2")
    return name, runs, x


@pytest.mark.parametrize("form", ["version", "alias", "run", "artifacts"])
def test_download_matches_mlflow(tracking_uri, client, registered, tmp_path, form):
    name, runs, x = registered
    uri = {
        "version": f"models:/{name}/2",
        "alias": f"models:/{name}@champion",
        "run": f"runs:/{runs[1]}/notes",
        "artifacts": client.get_model_version_download_uri(name, "2"),
    }[form]
    ours = tmp_path / "parent" / "ours"
    result = download(tracking_uri, uri, ours)
    assert "downloaded" in result.stderr
    theirs = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "theirs")))
    assert tree(ours) == tree(theirs)
    # Nothing but the model was left beside it (the staging folder was renamed into place).
    assert sorted(p.name for p in ours.parent.iterdir()) == ["ours"]
    if form == "run":
        assert sorted(tree(ours)) == ["deep/params.json", "readme.txt"]
        return
    assert "MLmodel" in tree(ours)
    predictions = mlflow.pyfunc.load_model(str(ours)).predict(x)
    assert list(predictions) == pytest.approx([100.0, 102.0, 104.0])


def test_download_into_an_empty_folder(tracking_uri, registered, tmp_path):
    name, _, _ = registered
    dest = tmp_path / "model"
    dest.mkdir()
    download(tracking_uri, f"models:/{name}/1", dest)
    assert (dest / "MLmodel").is_file()


def test_download_over_http_needs_no_ca_bundle(tracking_uri, registered, tmp_path):
    # ferroflow's image has no CA certificates (nothing in a cluster needs TLS to reach the
    # server): a plain-http download must not ask for them. The empty file and folder stand in
    # for a system without any.
    (tmp_path / "no-certs").mkdir()
    (tmp_path / "no-certs.pem").write_text("")
    name, _, _ = registered
    dest = tmp_path / "model"
    download(tracking_uri, f"models:/{name}/1", dest, extra_env={
        "SSL_CERT_FILE": str(tmp_path / "no-certs.pem"), "SSL_CERT_DIR": str(tmp_path / "no-certs")})
    assert (dest / "MLmodel").is_file()


def test_download_refuses_a_folder_with_files(tracking_uri, registered, tmp_path):
    name, _, _ = registered
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    result = download(tracking_uri, f"models:/{name}/1", dest, check=False)
    assert result.returncode != 0
    assert "is not empty" in result.stderr
    assert tree(dest) == {"keep.txt": b"mine"}


@pytest.mark.parametrize("case", ["model", "version", "alias"])
def test_unknown_model_version_or_alias_fails_with_mlflows_message(tracking_uri, registered, tmp_path, case):
    name, _, _ = registered
    uri = {
        "model": f"models:/{name}-missing/1",
        "version": f"models:/{name}/9",
        "alias": f"models:/{name}@nobody",
    }[case]
    # What MLflow's client reports for the same URI.
    with pytest.raises(mlflow.exceptions.MlflowException) as caught:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "theirs"))
    dest = tmp_path / "ours"
    result = download(tracking_uri, uri, dest, check=False)
    assert result.returncode != 0
    assert caught.value.message in result.stderr
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"] or not any(tmp_path.glob(".ours*"))


def test_unsupported_uri_is_refused(tracking_uri, tmp_path):
    result = download(tracking_uri, "s3://bucket/model", tmp_path / "model", check=False)
    assert result.returncode != 0
    assert "unsupported model URI" in result.stderr
