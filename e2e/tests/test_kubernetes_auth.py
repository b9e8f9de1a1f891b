"""`ferroflow server --auth kubernetes` against the real API server, with the real mlflow client.

Namespaces team-a and team-b; ServiceAccounts alice (editor in team-a), bob (editor in team-b),
robot (editor in team-a, no promote) and release (promoter in team-a), bound to the ClusterRoles
of config/rbac (ferroflow-editor, ferroflow-promoter); tokens from the TokenRequest API
(`kubectl create token`) passed as MLFLOW_TRACKING_TOKEN. The server runs with the cluster
admin's kubeconfig (allowed to create TokenReviews and SubjectAccessReviews).

Needs FERROFLOW_KUBECTL and FERROFLOW_KUBECONFIG from `eval "$(e2e/cluster/up.sh)"`; skipped
without them (failed when CI is set), and against MLflow's own server (no such mode).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
import requests
from conftest import STATE_DIR, START_TIMEOUT_S, Server, _free_port, _impl, _stop, _wait_healthy
from kubectl_helpers import KUBECONFIG, KUBECTL, kubectl
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from test_gitops import _ferroflow_bin

ROOT = Path(__file__).resolve().parents[2]
TEAMS = ("team-a", "team-b")
# account -> (namespace, ClusterRoles bound in it)
ACCOUNTS = {
    "alice": ("team-a", ("ferroflow-editor",)),
    "bob": ("team-b", ("ferroflow-editor",)),
    "robot": ("team-a", ("ferroflow-editor",)),
    "release": ("team-a", ("ferroflow-promoter",)),
}


@pytest.fixture(scope="module")
def identities() -> dict[str, str]:
    """The namespaces, accounts and bindings; a fresh token per account."""
    if not (KUBECTL and KUBECONFIG):
        message = "FERROFLOW_KUBECTL/FERROFLOW_KUBECONFIG unset: start the cluster with `eval \"$(e2e/cluster/up.sh)\"`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for role in ("editor_role.yaml", "viewer_role.yaml", "promoter_role.yaml"):
        kubectl("apply", "-f", str(ROOT / "config" / "rbac" / role))
    for team in TEAMS:
        kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": team}}))
    for account, (namespace, roles) in ACCOUNTS.items():
        kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}))
        for role in roles:
            kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": f"{account}-{role}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            }))
    return {account: new_token(account) for account in ACCOUNTS}


def new_token(account: str) -> str:
    namespace = ACCOUNTS[account][0]
    return kubectl("create", "token", account, "-n", namespace, "--duration=10m").stdout.strip()


@pytest.fixture(scope="module")
def auth_server(request, identities, tmp_path_factory):
    impl, exe = _impl(request.config)
    if impl != "ferroflow":
        pytest.skip("--auth kubernetes is ferroflow's; MLflow's server has no such mode")
    workdir = tmp_path_factory.mktemp("auth-server")
    with running_auth_server(exe, "sqlite", f"sqlite:///{workdir / 'tracking.db'}", workdir / "artifacts",
                             workdir) as srv:
        yield srv


@contextmanager
def running_auth_server(exe: str, backend: str, store_uri: str, artifacts: Path, workdir: Path,
                        name: str = "ferroflow-auth"):
    """`ferroflow server --auth kubernetes` on `store_uri`, with the cluster admin's kubeconfig;
    stopped afterwards."""
    port = _free_port()
    cmd = [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", store_uri,
           "--artifacts-destination", str(artifacts), "--auth", "kubernetes"]
    env = dict(os.environ, KUBECONFIG=KUBECONFIG, RUST_LOG="info")
    log_path = STATE_DIR / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=workdir, env=env, start_new_session=True)
    srv = Server(impl="ferroflow", backend=backend, url=f"http://127.0.0.1:{port}", log_path=log_path, proc=proc,
                 artifacts=artifacts, store_uri=store_uri, artifacts_destination=str(artifacts))
    try:
        _wait_healthy(srv, time.monotonic() + START_TIMEOUT_S)
        yield srv
    finally:
        _stop(proc)


def as_account(monkeypatch, server: Server, token: str) -> MlflowClient:
    """The mlflow client as a Pod would be set up: tracking URI and token (the workspace is the
    account's namespace; MLFLOW_WORKSPACE waits for server-side workspaces, issue #17 step 4)."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.delenv("MLFLOW_WORKSPACE", raising=False)
    mlflow.set_tracking_uri(server.url)
    return MlflowClient(tracking_uri=server.url)


def call(server: Server, method: str, path: str, token: str | None, workspace: str | None = None, body=None):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if workspace is not None:
        headers["X-MLFLOW-WORKSPACE"] = workspace
    kwargs = {"params": body} if method in ("GET",) else {"json": body if body is not None else {}}
    return requests.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def test_tokens_are_required_and_checked(auth_server, identities):
    for token in (None, "not-a-token", identities["alice"][:-8] + "AAAAAAAA"):
        r = call(auth_server, "POST", "/api/2.0/mlflow/experiments/search", token, "team-a", {"max_results": 1})
        assert r.status_code == 401, (token, r.status_code, r.text)
        assert r.json()["error_code"] == "UNAUTHENTICATED"
    assert call(auth_server, "GET", "/health", None).status_code == 200
    # A token of an account that no longer exists.
    kubectl("create", "serviceaccount", "gone", "-n", "team-a")
    gone = kubectl("create", "token", "gone", "-n", "team-a", "--duration=10m").stdout.strip()
    kubectl("delete", "serviceaccount", "gone", "-n", "team-a")
    r = call(auth_server, "POST", "/api/2.0/mlflow/experiments/search", gone, "team-a", {"max_results": 1})
    assert r.status_code == 401, r.text


def test_editors_train_and_register_promoters_promote(auth_server, identities, monkeypatch, unique_name):
    model = f"churn-{unique_name}"
    alice = as_account(monkeypatch, auth_server, identities["alice"])
    experiment_id = alice.create_experiment(f"exp-{unique_name}")
    run = alice.create_run(experiment_id)
    alice.log_metric(run.info.run_id, "auc", 0.91)
    alice.set_terminated(run.info.run_id)
    alice.create_registered_model(model)
    assert alice.get_run(run.info.run_id).data.metrics == {"auc": 0.91}

    robot = as_account(monkeypatch, auth_server, identities["robot"])
    version = robot.create_model_version(model, "s3://models/churn/1", run_id=run.info.run_id)
    with pytest.raises(MlflowException) as denied:
        robot.set_registered_model_alias(model, "champion", version.version)
    assert denied.value.error_code == "PERMISSION_DENIED"
    assert "update registeredmodels/promote in namespace 'team-a'" in str(denied.value)
    with pytest.raises(MlflowException) as denied:
        robot.transition_model_version_stage(model, version.version, "Production")
    assert denied.value.error_code == "PERMISSION_DENIED"

    release = as_account(monkeypatch, auth_server, identities["release"])
    release.set_registered_model_alias(model, "champion", version.version)
    assert robot.get_model_version_by_alias(model, "champion").version == version.version

    # bob edits team-b, not team-a: refused before anything is read, naming what he lacks.
    r = call(auth_server, "GET", "/api/2.0/mlflow/registered-models/get", identities["bob"], "team-a", {"name": model})
    assert r.status_code == 403, r.text
    assert r.json()["error_code"] == "PERMISSION_DENIED"
    assert "may not get registeredmodels in namespace 'team-a'" in r.json()["message"]


def test_model_download_signs_in_with_a_token_file(auth_server, identities, monkeypatch, tmp_path, unique_name):
    """A serving Pod's init container: `ferroflow model download` with the projected
    service-account token the operator mounts, named by FERROFLOW_TRACKING_TOKEN_FILE."""
    model = f"served-{unique_name}"
    alice = as_account(monkeypatch, auth_server, identities["alice"])
    run = alice.create_run(alice.create_experiment(f"exp-{unique_name}"))
    alice.log_text(run.info.run_id, "weights of version 1", "model/weights.txt")
    alice.create_registered_model(model)
    alice.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)

    def download(dest: Path, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([_ferroflow_bin(), "model", "download", f"models:/{model}/1", str(dest),
                               "--tracking-uri", auth_server.url], capture_output=True, text=True, timeout=120,
                              check=False, env={"PATH": "/usr/bin:/bin", "MLFLOW_WORKSPACE": "team-a", **env})

    refused = download(tmp_path / "without")
    assert refused.returncode != 0
    assert "401" in refused.stderr or "UNAUTHENTICATED" in refused.stderr, refused.stderr
    token_file = tmp_path / "token"
    token_file.write_text(identities["alice"] + "\n")  # as the kubelet writes it, trimmed by the reader
    done = download(tmp_path / "with", FERROFLOW_TRACKING_TOKEN_FILE=str(token_file))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "with" / "weights.txt").read_text() == "weights of version 1"


def test_a_project_run_signs_in_and_hands_its_token_to_the_project(auth_server, identities, monkeypatch, tmp_path,
                                                                   unique_name):
    """A ProjectRun's Pod: `ferroflow run` signs in with the projected token the operator
    mounts (FERROFLOW_TRACKING_TOKEN_FILE) and hands it to the project as MLFLOW_TRACKING_TOKEN,
    the only way MLflow's client in the project can send it."""
    alice = as_account(monkeypatch, auth_server, identities["alice"])
    experiment_id = alice.create_experiment(f"project-{unique_name}")
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text("name: signed-in\nentry_points:\n  main:\n    command: python log.py\n")
    (project / "log.py").write_text("import mlflow\nmlflow.log_metric('signed_in', 1.0)\n")
    token_file = tmp_path / "token"
    token_file.write_text(identities["alice"] + "\n")

    def run(**env: str) -> subprocess.CompletedProcess:
        # Nothing of the test's own environment (its MLFLOW_TRACKING_TOKEN) reaches the run.
        return subprocess.run([_ferroflow_bin(), "run", str(project), "--experiment-id", experiment_id],
                              capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL,
                              env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
                                   "MLFLOW_TRACKING_URI": auth_server.url, "MLFLOW_WORKSPACE": "team-a", **env})

    refused = run()
    assert refused.returncode != 0
    assert "401" in refused.stderr or "UNAUTHENTICATED" in refused.stderr, refused.stderr[-2000:]
    done = run(FERROFLOW_TRACKING_TOKEN_FILE=str(token_file))
    assert done.returncode == 0, done.stderr[-4000:]
    [logged] = alice.search_runs([experiment_id])
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics == {"signed_in": 1.0}
    assert logged.info.user_id == "system:serviceaccount:team-a:alice"


def test_runs_versions_and_history_name_the_authenticated_caller(auth_server, identities, monkeypatch, unique_name):
    """The client sends its own idea of the user (tag mlflow.user, and user_id taken from it);
    with auth on the server records the token's user instead, on runs, model versions and the
    promotion history (issue #17; without auth test_runs keeps what the client sent)."""
    alice_user, robot_user, release_user = (f"system:serviceaccount:team-a:{name}"
                                            for name in ("alice", "robot", "release"))
    alice = as_account(monkeypatch, auth_server, identities["alice"])
    experiment_id = alice.create_experiment(f"who-{unique_name}")
    run = alice.create_run(experiment_id, tags={"mlflow.user": "mallory"})
    got = alice.get_run(run.info.run_id)
    assert (got.info.user_id, got.data.tags["mlflow.user"]) == (alice_user, alice_user)

    model = f"who-{unique_name}"
    alice.create_registered_model(model)
    robot = as_account(monkeypatch, auth_server, identities["robot"])
    version = robot.create_model_version(model, "s3://models/who/1", run_id=run.info.run_id)
    assert version.user_id == robot_user
    release = as_account(monkeypatch, auth_server, identities["release"])
    release.set_registered_model_alias(model, "champion", version.version)
    assert release.get_model_version(model, version.version).user_id == robot_user

    r = call(auth_server, "GET", "/api/2.0/ferroflow/promotions", identities["alice"], "team-a",
             {"name": model, "target": "champion"})
    assert r.status_code == 200, r.text
    assert [(e["actor"], e["path"], e["allowed"]) for e in r.json()["promotions"]] == [(release_user, "api", True)]


def endpoint_table(exe: str) -> list[dict]:
    done = subprocess.run([exe, "endpoints"], capture_output=True, text=True, check=True, timeout=30)
    return [json.loads(line) for line in done.stdout.splitlines()]


# A valid request per endpoint (ids of team-a's objects where it names one); the test fails
# for an endpoint of the table missing here.
def bodies(ids: dict) -> dict[tuple[str, str], object]:
    run, exp, model, logged = ids["run_id"], ids["experiment_id"], ids["model"], ids["logged_model_id"]
    return {
        ("POST", "/experiments/create"): {"name": "stolen"},
        ("GET", "/experiments/get"): {"experiment_id": exp},
        ("GET", "/experiments/get-by-name"): {"experiment_name": ids["experiment_name"]},
        ("GET", "/experiments/search"): {"max_results": 10},
        ("POST", "/experiments/search"): {"max_results": 10},
        ("POST", "/experiments/update"): {"experiment_id": exp, "new_name": "x"},
        ("POST", "/experiments/delete"): {"experiment_id": exp},
        ("POST", "/experiments/restore"): {"experiment_id": exp},
        ("POST", "/experiments/set-experiment-tag"): {"experiment_id": exp, "key": "k", "value": "v"},
        ("POST", "/experiments/delete-experiment-tag"): {"experiment_id": exp, "key": "k"},
        ("POST", "/experiments/search-datasets"): {"experiment_ids": [exp]},
        ("POST", "/traces/metrics"): {"experiment_ids": [exp]},
        ("POST", "/runs/create"): {"experiment_id": exp},
        ("GET", "/runs/get"): {"run_id": run},
        ("POST", "/runs/update"): {"run_id": run, "status": "FAILED"},
        ("POST", "/runs/delete"): {"run_id": run},
        ("POST", "/runs/restore"): {"run_id": run},
        ("POST", "/runs/log-parameter"): {"run_id": run, "key": "p", "value": "1"},
        ("POST", "/runs/log-metric"): {"run_id": run, "key": "m", "value": 1, "timestamp": 1, "step": 0},
        ("POST", "/runs/set-tag"): {"run_id": run, "key": "t", "value": "v"},
        ("POST", "/runs/delete-tag"): {"run_id": run, "key": "t"},
        ("POST", "/runs/log-batch"): {"run_id": run, "metrics": [], "params": [], "tags": []},
        ("POST", "/runs/log-inputs"): {"run_id": run, "datasets": []},
        ("POST", "/runs/log-model"): {"run_id": run, "model_json": "{}"},
        ("POST", "/runs/outputs"): {"run_id": run, "models": [{"model_id": logged, "step": 0}]},
        ("GET", "/runs/search"): {"experiment_ids": exp},
        ("POST", "/runs/search"): {"experiment_ids": [exp]},
        ("GET", "/metrics/get-history"): {"run_id": run, "metric_key": "auc"},
        ("GET", "/metrics/get-history-bulk-interval"): {"run_ids": run, "metric_key": "auc"},
        ("GET", "/artifacts/list"): {"run_id": run},
        ("GET", "/get-artifact"): {"run_id": run, "path": "model/MLmodel"},
        ("GET", "/api/2.0/mlflow-artifacts/artifacts"): {"path": ids["artifact_root"]},
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/{*path}"): None,
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/{*path}"): None,
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/{*path}"): None,
        ("POST", "/logged-models"): {"experiment_id": exp, "name": "m"},
        ("POST", "/logged-models/search"): {"experiment_ids": [exp]},
        ("GET", "/logged-models/{model_id}"): None,
        ("PATCH", "/logged-models/{model_id}"): {"model_id": logged, "status": "LOGGED_MODEL_READY"},
        ("DELETE", "/logged-models/{model_id}"): None,
        ("PATCH", "/logged-models/{model_id}/tags"): {"tags": [{"key": "k", "value": "v"}]},
        ("DELETE", "/logged-models/{model_id}/tags/{tag_key}"): None,
        ("POST", "/logged-models/{model_id}/params"): {"params": [{"key": "k", "value": "v"}]},
        ("GET", "/logged-models/{model_id}/artifacts/directories"): {},
        ("GET", "/logged-models/{model_id}/artifacts/files"): {"artifact_file_path": "MLmodel"},
        ("POST", "/registered-models/create"): {"name": model},
        ("GET", "/registered-models/get"): {"name": model},
        ("POST", "/registered-models/rename"): {"name": model, "new_name": "x"},
        ("PATCH", "/registered-models/update"): {"name": model, "description": "x"},
        ("DELETE", "/registered-models/delete"): {"name": model},
        ("GET", "/registered-models/search"): {"max_results": 10},
        ("GET", "/registered-models/get-latest-versions"): {"name": model},
        ("POST", "/registered-models/get-latest-versions"): {"name": model},
        ("POST", "/registered-models/set-tag"): {"name": model, "key": "k", "value": "v"},
        ("DELETE", "/registered-models/delete-tag"): {"name": model, "key": "k"},
        ("POST", "/registered-models/alias"): {"name": model, "alias": "champion", "version": "1"},
        ("DELETE", "/registered-models/alias"): {"name": model, "alias": "champion"},
        ("GET", "/registered-models/alias"): {"name": model, "alias": "champion"},
        ("POST", "/model-versions/create"): {"name": model, "source": "s3://x/y"},
        ("GET", "/model-versions/get"): {"name": model, "version": "1"},
        ("PATCH", "/model-versions/update"): {"name": model, "version": "1", "description": "x"},
        ("DELETE", "/model-versions/delete"): {"name": model, "version": "1"},
        ("POST", "/model-versions/transition-stage"): {"name": model, "version": "1", "stage": "Archived"},
        ("GET", "/model-versions/search"): {"filter": f"name='{model}'"},
        ("GET", "/model-versions/get-download-uri"): {"name": model, "version": "1"},
        ("POST", "/model-versions/set-tag"): {"name": model, "version": "1", "key": "k", "value": "v"},
        ("DELETE", "/model-versions/delete-tag"): {"name": model, "version": "1", "key": "k"},
        ("GET", "/model-versions/get-artifact"): {"name": model, "version": "1", "path": "MLmodel"},
        ("GET", "/api/2.0/ferroflow/promotions"): {"name": model},
        ("GET", "/api/2.0/ferroflow/promotions/at"): {"name": model, "target": "champion", "time": "0"},
        ("POST", "/api/2.0/ferroflow/promotions/check"): {"name": model, "target": "champion", "version": "1"},
        ("POST", "/api/2.0/ferroflow/promotions/rollback"): {"name": model, "alias": "champion"},
    }


def concrete(path: str, ids: dict) -> str:
    """The URL of a table path: MLflow's prefix for API paths, parameters filled in."""
    filled = (path.replace("{model_id}", ids["logged_model_id"]).replace("{tag_key}", "k")
              .replace("{*path}", f"{ids['artifact_root']}/model/MLmodel"))
    if filled.startswith("/api/") or filled in ("/get-artifact", "/model-versions/get-artifact"):
        return filled
    return "/api/2.0/mlflow" + filled if not filled.startswith("/traces") else "/ajax-api/3.0/mlflow" + filled


def test_isolation_over_every_endpoint_of_the_table(request, auth_server, identities, monkeypatch, unique_name):
    """bob (editor in team-b) against team-a's objects, on every RBAC endpoint: 403 or 404, never data."""
    _, exe = _impl(request.config)
    alice = as_account(monkeypatch, auth_server, identities["alice"])
    name = f"iso-{unique_name}"
    experiment_id = alice.create_experiment(name)
    run = alice.create_run(experiment_id)
    alice.log_metric(run.info.run_id, "auc", 0.5)
    # A file behind every artifact route: the run's MLmodel, stored in team-a's folder.
    secret = f"team-a secret {unique_name}"
    alice.log_text(run.info.run_id, secret, "model/MLmodel")
    artifact_root = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    assert artifact_root.startswith(f"workspaces/team-a/{experiment_id}/"), run.info.artifact_uri
    model = f"iso-model-{unique_name}"
    alice.create_registered_model(model)
    alice.create_model_version(model, "s3://models/iso/1", run_id=run.info.run_id)
    logged = requests.post(auth_server.url + "/api/2.0/mlflow/logged-models", json={"experiment_id": experiment_id},
                           headers={"Authorization": f"Bearer {identities['alice']}", "X-MLFLOW-WORKSPACE": "team-a"},
                           timeout=30)
    assert logged.status_code == 200, logged.text
    ids = {"experiment_id": experiment_id, "experiment_name": name, "run_id": run.info.run_id, "model": model,
           "logged_model_id": logged.json()["model"]["info"]["model_id"], "artifact_root": artifact_root}

    table = [e for e in endpoint_table(exe) if e["access"] == "rbac"]
    known = bodies(ids)
    missing = [(e["method"], e["path"]) for e in table if (e["method"], e["path"]) not in known]
    assert not missing, f"endpoints of the table without a request here: {missing}"
    covered, cross_namespace_reads = 0, []
    for endpoint in table:
        method, path = endpoint["method"], endpoint["path"]
        body = known[(method, path)]
        r = call(auth_server, method, concrete(path, ids), identities["bob"], "team-a", body)
        covered += 1
        if r.status_code not in (403, 404):
            cross_namespace_reads.append((method, path, r.status_code, r.text[:200]))
        elif r.status_code == 403:
            assert r.json()["error_code"] == "PERMISSION_DENIED", r.text
            assert "in namespace 'team-a'" in r.json()["message"], r.text
    print(f"isolation: {covered} endpoints covered, {len(cross_namespace_reads)} cross-namespace reads")
    assert covered == len(table) and covered > 60
    assert cross_namespace_reads == []

    # bob in his own workspace (named, or his service account's namespace) against team-a's
    # artifact paths and ids: his namespace's review passes, and then nothing of team-a's is
    # found (404), read, written or deleted.
    artifact_endpoints = [e for e in table if "artifact" in e["path"]]
    covered, cross_namespace_reads = 0, []
    for workspace in ("team-b", None):
        for endpoint in artifact_endpoints:
            method, path = endpoint["method"], endpoint["path"]
            r = call(auth_server, method, concrete(path, ids), identities["bob"], workspace, known[(method, path)])
            covered += 1
            if r.status_code not in (403, 404) or secret in r.text:
                cross_namespace_reads.append((workspace, method, path, r.status_code, r.text[:200]))
    print(f"artifact isolation: {covered} endpoint calls from team-b, {len(cross_namespace_reads)} cross-namespace reads")
    assert covered == 2 * len(artifact_endpoints) and len(artifact_endpoints) >= 9
    assert cross_namespace_reads == []

    # alice's data is untouched.
    assert alice.get_run(run.info.run_id).data.metrics == {"auc": 0.5}
    assert alice.get_registered_model(model).name == model
    assert mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model/MLmodel") == secret
    assert [f.path for f in alice.list_artifacts(run.info.run_id, "model")] == ["model/MLmodel"]


def test_api_server_down_refuses_with_503(auth_server, identities):
    """With the API server killed, a caller not yet reviewed gets 503, never an answer; then it recovers."""
    fresh = new_token("alice")  # not in the identity cache
    state = Path(os.environ.get("FERROFLOW_E2E_STATE", "/tmp/ferroflow-e2e")) / "cluster"
    pid = int((state / "run" / "kube-apiserver.pid").read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].endswith(b"/kube-apiserver") and str(state).encode() in b" ".join(cmdline), cmdline
    os.kill(pid, signal.SIGKILL)
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "kube-apiserver outlived SIGKILL"
            time.sleep(0.1)
        for path in ("/api/2.0/mlflow/experiments/search", "/api/2.0/mlflow/registered-models/search"):
            r = call(auth_server, "POST" if "experiments" in path else "GET", path, fresh, "team-a")
            assert r.status_code == 503, r.text
            assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    finally:
        subprocess.run(["bash", str(ROOT / "e2e" / "cluster" / "up.sh")], capture_output=True, text=True,
                       timeout=300, check=True)
    r = call(auth_server, "POST", "/api/2.0/mlflow/experiments/search", fresh, "team-a", {"max_results": 1})
    assert r.status_code == 200, r.text
