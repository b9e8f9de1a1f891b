"""Workspaces with the real mlflow client (issue #17): MLFLOW_WORKSPACE sends X-MLFLOW-WORKSPACE,
experiments and registered models with the same name in two workspaces are separate objects,
and a client without a workspace works in `default` and sees neither. `--auth none`: the header
alone selects the workspace, as a laptop mimicking a cluster."""

from __future__ import annotations

import uuid

import mlflow
import pytest
import requests
from helpers import mlflow_error
from mlflow import MlflowClient


@pytest.fixture
def workspaces(server, tracking_uri):
    if requests.get(server.url + "/api/3.0/mlflow/workspaces", timeout=30).status_code != 200:
        pytest.skip("this server has no workspaces")
    suffix = uuid.uuid4().hex[:10]
    return f"team-a-{suffix}", f"team-b-{suffix}"


def _train_and_register(monkeypatch, tracking_uri, workspace: str, name: str, value: float):
    """In `workspace`: a run with a metric and an artifact in experiment `name`, registered as
    version 1 of model `name` with alias champion."""
    monkeypatch.setenv("MLFLOW_WORKSPACE", workspace)
    mlflow.set_experiment(name)
    with mlflow.start_run() as run:
        mlflow.log_metric("auc", value)
        mlflow.log_text(workspace, "owner.txt")
    client = MlflowClient(tracking_uri)
    client.create_registered_model(name, description=workspace)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/owner.txt", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return run.info.run_id


def test_same_names_in_two_workspaces_are_separate(monkeypatch, tracking_uri, workspaces, unique_name):
    team_a, team_b = workspaces
    name = f"churn-{unique_name}"
    run_a = _train_and_register(monkeypatch, tracking_uri, team_a, name, 0.7)
    # The fluent API remembers the active experiment's id; the same name is another id in team b.
    import mlflow.tracking.fluent as fluent

    fluent._active_experiment_id = None
    run_b = _train_and_register(monkeypatch, tracking_uri, team_b, name, 0.9)
    client = MlflowClient(tracking_uri)

    seen = {}
    for workspace, run_id, value in ((team_a, run_a, 0.7), (team_b, run_b, 0.9)):
        monkeypatch.setenv("MLFLOW_WORKSPACE", workspace)
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None
        assert f"/workspaces/{workspace}/" in experiment.artifact_location, experiment.artifact_location
        runs = client.search_runs([experiment.experiment_id])
        assert [r.info.run_id for r in runs] == [run_id]
        assert runs[0].data.metrics == {"auc": value}
        assert client.get_registered_model(name).description == workspace
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.run_id == run_id
        assert mlflow.artifacts.load_text(f"runs:/{run_id}/owner.txt") == workspace
        # The other workspace's run id is not found from here.
        other = run_b if run_id == run_a else run_a
        with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
            client.get_run(other)
        seen[workspace] = experiment.experiment_id
    assert seen[team_a] != seen[team_b]

    # Without a workspace: default, where neither exists.
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    assert client.get_experiment_by_name(name) is None
    with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_registered_model(name)
    assert name not in [m.name for m in client.search_registered_models(filter_string=f"name = '{name}'")]
    with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_run(run_a)

    listed = {workspace.name for workspace in mlflow.list_workspaces()}
    assert {"default", team_a, team_b} <= listed, listed
    with pytest.raises(Exception, match="Kubernetes"):
        mlflow.create_workspace(f"team-c-{uuid.uuid4().hex[:8]}")
