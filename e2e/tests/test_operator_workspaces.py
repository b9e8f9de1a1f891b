"""Namespaces are workspaces for the operator too (issue #17): two namespaces each declare a
RegisteredModel `churn` and its ModelVersions; the real mlflow client with MLFLOW_WORKSPACE set
to either namespace reads two different models with their own versions; what a resource
declares is refused to API writes in both; an alias moved through the client in one namespace
is reported on that namespace's resource only; a PromotionPolicy of one namespace does not
govern the other's `churn`; `ferroflow model download` downloads from the workspace
MLFLOW_WORKSPACE names; a model left in `default` by an older release is reported, not served
from another workspace. Runs on the postgres lane with the e2e cluster (see test_gitops.py).
"""

from __future__ import annotations

import subprocess
import uuid

import mlflow
import pytest
from helpers import mlflow_error
from kubectl_helpers import apply, kubectl, wait_until
from mlflow import MlflowClient
from test_gitops import _ferroflow_bin, condition, create_namespace, current, operator, wait_ready  # noqa: F401
from test_model_deployment import model_deployment
from test_promotion_policy import _events, _wait_event


@pytest.fixture
def teams(operator, request, monkeypatch):  # noqa: F811
    """Two fresh namespaces, `team-a-…` and `team-b-…`; deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"team-a-{suffix}", f"team-b-{suffix}")
    for name in names:
        create_namespace(name)
    yield names
    report = getattr(request.node, "rep_call", None)
    for name in names:
        if report is not None and report.failed:
            print(kubectl("get", "-n", name, "ferroflow", "-o", "yaml", check=False).stdout)
            print(kubectl("get", "events", "-n", name, check=False).stdout)
        kubectl("delete", "namespace", name, "--wait=false", check=False)
    if report is not None and report.failed:
        print(operator.log_tail())


def _train(monkeypatch, tracking_uri: str, workspace: str) -> str:
    """In `workspace`: a run whose artifacts hold `model/owner.txt` naming the workspace."""
    monkeypatch.setenv("MLFLOW_WORKSPACE", workspace)
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(f"churn-training-{uuid.uuid4().hex[:6]}")
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, workspace, "model/owner.txt")
    client.log_metric(run.info.run_id, "val_auc", 0.8)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _declare(namespace: str, run_ids: list[str]) -> None:
    """Git: RegisteredModel `churn` (description and tags declared, aliases left to the API) and
    one ModelVersion registering each run's model."""
    versions = "".join(f"""
        ---
        apiVersion: ferroflow.dev/v1alpha1
        kind: ModelVersion
        metadata:
          name: churn-{index}
        spec:
          modelRef: {{name: churn}}
          source: runs:/{run_id}/model
          runId: {run_id}
          description: {namespace} version {index}
        """ for index, run_id in enumerate(run_ids, start=1))
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: RegisteredModel
        metadata:
          name: churn
        spec:
          modelName: churn
          description: churn of {namespace}
          tags: {{team: {namespace}}}
        {versions}""")


def test_two_namespaces_declare_two_models_named_churn(operator, teams, tracking_uri, monkeypatch):  # noqa: F811
    team_a, team_b = teams
    runs = {team_a: [_train(monkeypatch, tracking_uri, team_a), _train(monkeypatch, tracking_uri, team_a)],
            team_b: [_train(monkeypatch, tracking_uri, team_b)]}
    for namespace, run_ids in runs.items():
        _declare(namespace, run_ids)
    for namespace, run_ids in runs.items():
        for index in range(1, len(run_ids) + 1):
            wait_ready(namespace, f"modelversion/churn-{index}")
        wait_until(namespace, "registeredmodel/churn",
                   lambda o: o is not None and current(o) and condition(o, "Ready").get("status") == "True"
                   and o["status"].get("latestVersion") == len(run_ids), "Ready with every version")

    # Two models named churn, each with its own versions, as the mlflow client sees them.
    client = MlflowClient(tracking_uri)
    for namespace, run_ids in runs.items():
        monkeypatch.setenv("MLFLOW_WORKSPACE", namespace)
        model = client.get_registered_model("churn")
        assert model.description == f"churn of {namespace}"
        # Each model is owned by the resource in its own namespace.
        assert model.tags == {"team": namespace, "ferroflow.owner": f"{namespace}/RegisteredModel/churn"}
        # The resources register concurrently: numbers go in the order they reach the store.
        versions = client.search_model_versions("name = 'churn'")
        assert sorted(int(v.version) for v in versions) == list(range(1, len(run_ids) + 1))
        assert sorted((v.run_id, v.description) for v in versions) == sorted(
            (run_id, f"{namespace} version {index}") for index, run_id in enumerate(run_ids, start=1))

        # What the resource declares is refused through the API, naming the resource.
        with mlflow_error("PERMISSION_DENIED", match=f"RegisteredModel {namespace}/churn"):
            client.update_registered_model("churn", description="edited by hand")
        # Version 1 is whichever resource registered first; its description names that resource.
        first = client.get_model_version("churn", "1").description.rsplit(" ", 1)[-1]
        with mlflow_error("PERMISSION_DENIED", match=f"ModelVersion {namespace}/churn-{first}"):
            client.update_model_version("churn", "1", description="edited by hand")
        assert client.get_registered_model("churn").description == f"churn of {namespace}"

    # `ferroflow model download` (a serving Pod's init container) reads MLFLOW_WORKSPACE.
    for namespace in (team_a, team_b):
        dest = f"{operator.workdir}/download-{namespace}"
        done = subprocess.run([_ferroflow_bin(), "model", "download", "models:/churn/1", dest,
                               "--tracking-uri", tracking_uri], capture_output=True, text=True, timeout=120,
                              check=False, env={"PATH": "/usr/bin:/bin", "MLFLOW_WORKSPACE": namespace})
        assert done.returncode == 0, done.stderr
        with open(f"{dest}/owner.txt") as owner:
            assert owner.read() == namespace

    # An alias moved through the client in team-a: team-a's resource tells it; team-b's does not.
    monkeypatch.setenv("MLFLOW_WORKSPACE", team_a)
    client.set_registered_model_alias("churn", "challenger", "2")
    obj = wait_until(team_a, "registeredmodel/churn",
                     lambda o: (o or {}).get("status", {}).get("aliases") == {"challenger": 2},
                     "challenger in team-a's status")
    assert obj["status"]["promotions"]["challenger"][0]["toVersion"] == 2
    _wait_event(team_a, "RegisteredModel", "churn", "AliasMoved", "alias 'challenger' of model 'churn' set to version 2")
    holder = next(name for name in ("churn-1", "churn-2")
                  if wait_ready(team_a, f"modelversion/{name}")["status"]["version"] == 2)
    wait_until(team_a, f"modelversion/{holder}",
               lambda o: (o or {}).get("status", {}).get("aliases") == ["challenger"], "the version's alias")
    team_b_model = wait_ready(team_b, "registeredmodel/churn")
    assert not team_b_model["status"].get("aliases"), team_b_model["status"]
    assert "promotions" not in team_b_model["status"], team_b_model["status"]
    assert [e for e in _events(team_b, "RegisteredModel", "churn") if e.get("reason") == "AliasMoved"] == []
    assert not wait_ready(team_b, "modelversion/churn-1")["status"].get("aliases")
    monkeypatch.setenv("MLFLOW_WORKSPACE", team_b)
    assert client.get_registered_model("churn").aliases == {}

    # A PromotionPolicy in team-a guards team-a's churn only.
    apply(team_a, """
        apiVersion: ferroflow.dev/v1alpha1
        kind: PromotionPolicy
        metadata:
          name: gate
        spec:
          models: [churn]
          aliases: [champion]
          rules:
            - tag: {key: approved, value: "true"}
        """)
    wait_ready(team_a, "promotionpolicy/gate")
    monkeypatch.setenv("MLFLOW_WORKSPACE", team_a)
    with mlflow_error("PERMISSION_DENIED", match=rf"\[{team_a}/gate\] tag approved = true failed"):
        client.set_registered_model_alias("churn", "champion", "1")
    assert "champion" not in client.get_registered_model("churn").aliases
    monkeypatch.setenv("MLFLOW_WORKSPACE", team_b)
    client.set_registered_model_alias("churn", "champion", "1")
    assert client.get_model_version_by_alias("churn", "champion").run_id == runs[team_b][0]
    # team-b's move is told on team-b's resource.
    _wait_event(team_b, "RegisteredModel", "churn", "AliasMoved", "alias 'champion' of model 'churn' set to version 1")
    assert not any("champion" in (e.get("message") or e.get("note") or "")
                   for e in _events(team_a, "RegisteredModel", "churn") if e.get("reason") == "AliasMoved")

    # The fluent API in a workspace: the model of that namespace.
    monkeypatch.setenv("MLFLOW_WORKSPACE", team_b)
    assert mlflow.artifacts.load_text(f"runs:/{runs[team_b][0]}/model/owner.txt") == team_b


def test_a_model_left_in_default_is_reported_not_served_from_another_workspace(operator, teams, tracking_uri,  # noqa: F811
                                                                                monkeypatch, unique_name):
    """Upgrading: training code registered the model in `default` (as every namespace did before
    namespaces were workspaces); a ModelDeployment in team-a names it. It is not served from
    `default`, and not silently missing: the condition says where the model is."""
    team_a, _ = teams
    model_name = f"legacy-{unique_name}"
    monkeypatch.delenv("MLFLOW_WORKSPACE", raising=False)
    client = MlflowClient(tracking_uri)
    client.create_registered_model(model_name)
    client.create_model_version(model_name, "s3://bucket/legacy/1")
    client.set_registered_model_alias(model_name, "champion", "1")
    apply(team_a, model_deployment("legacy", f"  modelName: {model_name}\n  alias: champion\n"))
    obj = wait_until(team_a, "modeldeployment/legacy",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("reason") == "ModelNotFound",
                     "Ready=False ModelNotFound")
    message = condition(obj, "Ready")["message"]
    assert f"registered model '{model_name}' is in workspace 'default', not in '{team_a}'" in message, message
    assert kubectl("get", "deployments", "-n", team_a, "-o", "name").stdout.strip() == ""
