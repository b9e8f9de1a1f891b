"""The operator against a real kube-apiserver (e2e/cluster) and the real mlflow client.

A GitOps pipeline applies Experiment, RegisteredModel and ModelVersion manifests with kubectl;
`ferroflow operator` runs as a process under its own ServiceAccount (config/rbac, not
cluster-admin) on the same Postgres store as the tracking server under test. Training code logs
and registers models with the mlflow client; the manifests adopt and promote them.

Needs FERROFLOW_KUBECTL and FERROFLOW_KUBECONFIG from `eval "$(e2e/cluster/up.sh)"`; skipped
without them (failed when CI is set). Runs on the postgres backend only: the operator and the
server share one store, and Postgres is what a cluster runs.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import textwrap
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
import requests
import yaml
from helpers import fit_line
from kubectl_helpers import KUBECONFIG, KUBECTL, WAIT_S, apply, get, kubectl, wait_established, wait_until
from mlflow.exceptions import MlflowException

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "ferroflow-system"
OPERATOR_SA = "ferroflow-operator"
STATE_DIR = Path(os.environ.get("FERROFLOW_E2E_STATE", "/tmp/ferroflow-e2e"))
CRDS = ("experiments.ferroflow.dev", "registeredmodels.ferroflow.dev", "modelversions.ferroflow.dev",
        "modeldeployments.ferroflow.dev", "projectruns.ferroflow.dev", "promotionpolicies.ferroflow.dev")


def condition(obj: dict, type_: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return {}


def current(obj: dict) -> bool:
    """The status describes the latest spec."""
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation")


def ready(obj: dict) -> bool:
    return current(obj) and condition(obj, "Ready").get("status") == "True"


def wait_ready(namespace: str, resource: str) -> dict:
    obj = wait_until(namespace, resource, lambda o: o is not None and ready(o), "Ready=True for the current generation")
    assert obj is not None
    return obj


def wait_gone(namespace: str, resource: str) -> None:
    wait_until(namespace, resource, lambda o: o is None, "deletion")


class Operator:
    """`ferroflow operator` as a child process with the ServiceAccount's kubeconfig."""

    def __init__(self, binary: str, store_uri: str, kubeconfig: Path, workdir: Path, name: str = "e2e-operator",
                 env: dict[str, str] | None = None):
        self.name = name
        # Operator settings beyond the defaults (e.g. FERROFLOW_TRACKING_URL for real Pods).
        self.env = env or {}
        self.binary = binary
        self.store_uri = store_uri
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.log_path = STATE_DIR / "logs" / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.starts = 0

    def start(self, expect_leader: bool = True) -> None:
        """Starts the process; returns once it leads (or, with expect_leader=False, once it
        answers as a follower)."""
        self.starts += 1
        address_file = self.workdir / f"{self.name}-{self.starts}.addr"
        cmd = [
            self.binary, "operator",
            "--backend-store-uri", self.store_uri,
            "--metrics-address", "127.0.0.1:0",
            "--address-file", str(address_file),
            "--lease-namespace", OPERATOR_NAMESPACE,
            "--identity", self.identity,
        ]
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), RUST_LOG="info,ferroflow=debug",
                   FERROFLOW_LOG_FORMAT="json", **self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir, env=env, start_new_session=True)
        deadline = time.monotonic() + WAIT_S
        last = "no address yet"
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            if address_file.exists() and address_file.read_text().strip():
                self.address = address_file.read_text().strip()
                try:
                    r = requests.get(f"http://{self.address}/leader", timeout=5)
                    if r.status_code == (200 if expect_leader else 503):
                        return
                    last = f"/leader -> {r.status_code} {r.text}"
                except requests.RequestException as e:
                    last = f"/leader -> {type(e).__name__}"
            if time.monotonic() > deadline:
                raise AssertionError(f"operator did not lead within {WAIT_S:.0f}s ({last}); log:\n{self.log_tail()}")
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate_within(self, seconds: float) -> int:
        """SIGTERM; the exit code, or a failure (after SIGKILL) when it takes longer than `seconds`."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"operator still running {seconds:.0f}s after SIGTERM; log:\n{self.log_tail()}")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)

    @property
    def identity(self) -> str:
        return f"{self.name}-{self.starts}"

    def leads(self) -> bool:
        return requests.get(f"http://{self.address}/leader", timeout=10).status_code == 200

    def metrics(self) -> str:
        return requests.get(f"http://{self.address}/metrics", timeout=10).text

    def log_tail(self, max_chars: int = 20000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-max_chars:]


def _service_account_kubeconfig(path: Path) -> None:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a bound token)."""
    token = kubectl("create", "token", OPERATOR_SA, "-n", OPERATOR_NAMESPACE, "--duration=2h").stdout.strip()
    raw = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = raw["clusters"][0]["cluster"]
    path.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": OPERATOR_SA}}],
        "current-context": "operator",
    }))


@pytest.fixture(scope="module")
def operator(server, tmp_path_factory):
    with running_operator(server, tmp_path_factory) as op:
        yield op


@contextmanager
def running_operator(server, tmp_path_factory, env: dict[str, str] | None = None):
    """The operator on the server's store, installed as config/ deploys it (CRDs, least-privilege
    RBAC), with `env` added to its environment; stopped (gracefully) afterwards."""
    if server.impl != "ferroflow":
        pytest.skip("the operator is ferroflow's own")
    if server.backend != "postgres":
        pytest.skip("the operator e2e runs on the postgres backend")
    if not (KUBECTL and KUBECONFIG):
        message = "FERROFLOW_KUBECTL/FERROFLOW_KUBECONFIG unset: start the e2e cluster with `eval \"$(e2e/cluster/up.sh)\"`"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so the operator e2e is required)")
        pytest.skip(message)
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    wait_established(*CRDS)
    apply("default", f"""
        apiVersion: v1
        kind: Namespace
        metadata:
          name: {OPERATOR_NAMESPACE}
        """)
    kubectl("apply", "-k", str(ROOT / "config" / "rbac"))
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = workdir / "kubeconfig"
    _service_account_kubeconfig(kubeconfig)
    # The operator runs with least privilege, not as cluster-admin.
    assert kubectl("auth", "can-i", "get", "secrets", "-A", check=False, kubeconfig=str(kubeconfig)).stdout.strip() == "no"
    assert kubectl("auth", "can-i", "create", "pods", "--subresource=exec", "-A", check=False,
                   kubeconfig=str(kubeconfig)).stdout.strip() == "no"
    # ProjectRun's Pods: exactly the verbs the reconciler uses.
    assert kubectl("auth", "can-i", "create", "pods", "-A", kubeconfig=str(kubeconfig)).stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "update", "pods", "-A", check=False,
                   kubeconfig=str(kubeconfig)).stdout.strip() == "no"
    # With retries, a Job runs the Pod: the same verbs.
    assert kubectl("auth", "can-i", "create", "jobs.batch", "-A", kubeconfig=str(kubeconfig)).stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "update", "jobs.batch", "-A", check=False,
                   kubeconfig=str(kubeconfig)).stdout.strip() == "no"
    # The ended Pod's log, stored as a run artifact: read only.
    assert kubectl("auth", "can-i", "get", "pods", "--subresource=log", "-A",
                   kubeconfig=str(kubeconfig)).stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "create", "pods", "--subresource=log", "-A", check=False,
                   kubeconfig=str(kubeconfig)).stdout.strip() == "no"
    assert kubectl("auth", "can-i", "patch", "modelversions.ferroflow.dev/status", "-A",
                   kubeconfig=str(kubeconfig)).stdout.strip() == "yes"
    # The operator runs beside the cluster: it reaches the server (to read a registered
    # version's MLmodel) on the host, not at the in-cluster URL its Pods get.
    op = Operator(_ferroflow_bin(), server.store_uri, kubeconfig, workdir,
                  env={"FERROFLOW_TRACKING_API_URL": server.url, **(env or {})})
    op.start()
    try:
        yield op
    finally:
        code = op.stop()
        # A graceful stop releases the lease and exits 0.
        assert code == 0, f"operator exited {code} on SIGTERM; log:\n{op.log_tail()}"


def _ferroflow_bin() -> str:
    binary = os.environ.get("FERROFLOW_BIN")
    assert binary, "FERROFLOW_BIN must name the ferroflow binary"
    return str(Path(binary).resolve())


def create_namespace(name: str) -> None:
    apply("default", f"""
        apiVersion: v1
        kind: Namespace
        metadata:
          name: {name}
          labels:
            e2e.ferroflow.dev/test: "true"
        """)


@pytest.fixture
def namespace(operator, request, monkeypatch):
    """A fresh namespace; the test's clients (mlflow, `ferroflow`, `api`) work in its workspace,
    where the operator puts what the namespace's resources declare."""
    name = f"gitops-{uuid.uuid4().hex[:8]}"
    create_namespace(name)
    monkeypatch.setenv("MLFLOW_WORKSPACE", name)
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(kubectl("get", "-n", name, "ferroflow", "-o", "yaml", check=False).stdout)
        print(kubectl("get", "events", "-n", name, check=False).stdout)
        print(operator.log_tail())
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def registered_model(model_name: str, aliases: dict[str, int], owned_metadata: bool = True) -> str:
    """The RegisteredModel manifest of the walk-through, as git would hold it."""
    lines = ["apiVersion: ferroflow.dev/v1alpha1", "kind: RegisteredModel", "metadata:", "  name: churn",
             "spec:", f"  modelName: {model_name}"]
    if owned_metadata:
        lines += ["  description: predicts churn", "  tags:", "    owner: growth"]
    lines += ["  aliases:"] + [f"    {alias}: {version}" for alias, version in aliases.items()]
    return "\n".join(lines) + "\n"


def _model_error(call) -> str:
    with pytest.raises(MlflowException) as caught:
        call()
    return str(caught.value)


def test_gitops_walkthrough(operator, namespace, tracking_uri, client, unique_name):
    import numpy as np

    experiment_name = f"exp-{unique_name}"
    model_name = f"model-{unique_name}"
    # Training code: two runs, each registers a version of the model.
    experiment_id = client.create_experiment(experiment_name)
    mlflow.set_experiment(experiment_id=experiment_id)
    first, x = fit_line(0.0)
    second, _ = fit_line(100.0)
    with mlflow.start_run():
        mlflow.sklearn.log_model(first, name="model", registered_model_name=model_name)
    with mlflow.start_run() as second_run:
        mlflow.sklearn.log_model(second, name="model", registered_model_name=model_name)

    # Git: the experiment, the model with its champion, and both versions adopted.
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: Experiment
        metadata:
          name: churn
        spec:
          experimentName: {experiment_name}
          description: churn experiments, managed in git
          tags:
            team: growth
          deletionPolicy: Delete
        ---
        apiVersion: ferroflow.dev/v1alpha1
        kind: RegisteredModel
        metadata:
          name: churn
        spec:
          modelName: {model_name}
          description: predicts churn
          tags:
            owner: growth
          aliases:
            champion: 1
        ---
        apiVersion: ferroflow.dev/v1alpha1
        kind: ModelVersion
        metadata:
          name: churn-1
        spec:
          modelRef:
            name: churn
          version: 1
          stage: None
        ---
        apiVersion: ferroflow.dev/v1alpha1
        kind: ModelVersion
        metadata:
          name: churn-2
        spec:
          modelRef:
            name: churn
          version: 2
          deletionPolicy: Delete
        """)
    experiment = wait_ready(namespace, "experiment.ferroflow.dev/churn")
    assert experiment["status"]["experimentId"] == experiment_id
    stored = client.get_experiment(experiment_id)
    assert stored.tags["team"] == "growth"
    assert stored.tags["mlflow.note.content"] == "churn experiments, managed in git"
    # Declared tags and the name belong to git; undeclared tags stay writable.
    refused = _model_error(lambda: client.set_experiment_tag(experiment_id, "team", "other"))
    assert f"Experiment {namespace}/churn" in refused
    refused = _model_error(lambda: client.rename_experiment(experiment_id, f"renamed-{unique_name}"))
    assert f"Experiment {namespace}/churn" in refused
    client.set_experiment_tag(experiment_id, "notes", "free")
    assert client.get_experiment(experiment_id).tags["notes"] == "free"

    model = wait_ready(namespace, "registeredmodel/churn")
    assert model["status"]["aliases"] == {"champion": 1}
    assert model["status"]["latestVersion"] == 2
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    stored_model = client.get_registered_model(model_name)
    assert stored_model.description == "predicts churn"
    # The declared tags, and the store's record of the owning resource.
    assert stored_model.tags == {"owner": "growth", "ferroflow.owner": f"{namespace}/RegisteredModel/churn"}
    champion = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    np.testing.assert_allclose(champion.predict(x), first.predict(x))

    v1 = wait_ready(namespace, "modelversion/churn-1")
    assert (v1["status"]["modelName"], v1["status"]["version"], v1["status"]["stage"]) == (model_name, 1, "None")
    assert v1["status"]["aliases"] == ["champion"]
    v2 = wait_ready(namespace, "modelversion/churn-2")
    assert v2["status"]["runId"] == second_run.info.run_id
    assert v2["status"]["downloadUri"]

    # Promote by pull request: None -> Staging -> Production, re-applying the edited YAML.
    for stage in ("Staging", "Production"):
        apply(namespace, f"""
            apiVersion: ferroflow.dev/v1alpha1
            kind: ModelVersion
            metadata:
              name: churn-1
            spec:
              modelRef:
                name: churn
              version: 1
              stage: {stage}
              archiveExistingVersions: true
            """)
        v1 = wait_until(namespace, "modelversion/churn-1",
                        lambda o: ready(o) and o["status"]["stage"] == stage, f"stage {stage}")
        assert v1["status"]["stageChangedTime"]
        assert client.get_model_version(model_name, "1").current_stage == stage
    by_stage = mlflow.pyfunc.load_model(f"models:/{model_name}/Production")
    np.testing.assert_allclose(by_stage.predict(x), first.predict(x))
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "reason=StageChanged", "-o", "json").stdout
    notes = [e.get("message") or e.get("note") for e in json.loads(events)["items"]]
    assert any("from Staging to Production" in (n or "") for n in notes), notes

    # What git owns, the REST API refuses, naming the resource; what it does not own stays open.
    refused = _model_error(lambda: client.transition_model_version_stage(model_name, "1", "Archived"))
    assert f"ModelVersion {namespace}/churn-1" in refused
    refused = _model_error(lambda: client.set_registered_model_alias(model_name, "champion", "2"))
    assert f"RegisteredModel {namespace}/churn" in refused
    client.set_model_version_tag(model_name, "2", "validated", "true")  # version 2 declares no tags
    assert client.get_model_version(model_name, "2").tags["validated"] == "true"

    # Move the champion in git: the same URI loads the other version.
    apply(namespace, registered_model(model_name, {"champion": 2, "challenger": 1}))
    model = wait_until(namespace, "registeredmodel/churn",
                       lambda o: ready(o) and o["status"].get("aliases") == {"champion": 2, "challenger": 1},
                       "champion on version 2")
    champion = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    np.testing.assert_allclose(champion.predict(x), second.predict(x))
    challenger = mlflow.pyfunc.load_model(f"models:/{model_name}@challenger")
    np.testing.assert_allclose(challenger.predict(x), first.predict(x))
    alias_events = kubectl("get", "events", "-n", namespace, "--field-selector", "reason=AliasMoved", "-o", "json").stdout
    assert any("moved from version 1 to 2" in (e.get("message") or e.get("note") or "")
               for e in json.loads(alias_events)["items"])

    # An alias naming a version that does not exist: Ready=False with a reason, no crash loop.
    apply(namespace, registered_model(model_name, {"champion": 2, "challenger": 9}))
    model = wait_until(namespace, "registeredmodel/churn",
                       lambda o: current(o) and condition(o, "Ready").get("reason") == "VersionNotFound",
                       "Ready=False, VersionNotFound")
    assert condition(model, "Ready")["status"] == "False"
    assert "challenger → 9" in condition(model, "Ready")["message"]
    assert condition(model, "Stalled")["status"] == "True"
    assert model["status"]["lastFailure"]["reason"] == "VersionNotFound"
    assert client.get_model_version_by_alias(model_name, "champion").version == "2"

    # A version registered from git exactly once, from the second run's files.
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: ModelVersion
        metadata:
          name: churn-3
        spec:
          modelRef:
            name: churn
          source: runs:/{second_run.info.run_id}/model
          runId: {second_run.info.run_id}
          stage: Staging
          description: registered by the operator
          tags:
            origin: git
        """)
    v3 = wait_ready(namespace, "modelversion/churn-3")
    assert v3["status"]["version"] == 3
    stored_v3 = client.get_model_version(model_name, "3")
    assert (stored_v3.current_stage, stored_v3.description, stored_v3.run_id) == (
        "Staging", "registered by the operator", second_run.info.run_id)
    assert stored_v3.tags == {"origin": "git", "ferroflow.owner": f"{namespace}/ModelVersion/churn-3"}
    # Now the alias to version 9 is fixed by registering nothing: point it at 3 and heal.
    apply(namespace, registered_model(model_name, {"champion": 2, "challenger": 3}, owned_metadata=False))
    model = wait_until(namespace, "registeredmodel/churn",
                       lambda o: ready(o) and o["status"].get("aliases") == {"champion": 2, "challenger": 3},
                       "healed aliases")
    assert "lastFailure" not in model["status"]
    # Description and tags are no longer declared: they stay as they were and are writable again.
    client.update_registered_model(model_name, description="edited through the API")
    assert client.get_registered_model(model_name).description == "edited through the API"

    # Deletion policies. Retain (churn-1): the version stays and is released to the API.
    kubectl("delete", "-n", namespace, "modelversion/churn-1", "--timeout=120s")
    assert client.get_model_version(model_name, "1").current_stage == "Production"
    assert "ferroflow.owner" not in client.get_model_version(model_name, "1").tags
    client.transition_model_version_stage(model_name, "1", "Archived")
    assert client.get_model_version(model_name, "1").current_stage == "Archived"
    # Delete (churn-2) while git still declares champion -> 2: the store refuses to drop the
    # champion, so the resource waits with a Warning naming the RegisteredModel.
    kubectl("delete", "-n", namespace, "modelversion/churn-2", "--wait=false")
    deadline = time.monotonic() + WAIT_S
    while True:
        blocked = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector",
                                     "reason=CleanupBlocked", "-o", "json").stdout)["items"]
        if blocked:
            break
        assert time.monotonic() < deadline, "no CleanupBlocked event for churn-2"
        time.sleep(0.2)
    assert f"RegisteredModel {namespace}/churn" in (blocked[0].get("message") or blocked[0].get("note"))
    assert "deletionTimestamp" in get(namespace, "modelversion/churn-2")["metadata"]
    assert client.get_model_version(model_name, "2").version == "2"
    # Moving the champion in git unblocks it: the version is deleted from the registry.
    apply(namespace, registered_model(model_name, {"champion": 3}, owned_metadata=False))
    wait_gone(namespace, "modelversion/churn-2")
    error = _model_error(lambda: client.get_model_version(model_name, "2"))
    assert "RESOURCE_DOES_NOT_EXIST" in error or "not found" in error
    # Delete (Experiment): soft-deleted, restorable like MLflow's own delete.
    kubectl("delete", "-n", namespace, "experiment/churn", "--timeout=120s")
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    client.restore_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    # Retain (RegisteredModel, the default): the model stays and its aliases become writable.
    kubectl("delete", "-n", namespace, "modelversion/churn-3", "registeredmodel/churn", "--timeout=120s")
    client.set_registered_model_alias(model_name, "champion", "1")
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    assert "ferroflow.owner" not in client.get_registered_model(model_name).tags

    metrics = operator.metrics()
    assert 'ferroflow_operator_reconciles_total{kind="ModelVersion"}' in metrics
    assert "ferroflow_operator_leader 1" in metrics


def test_kubectl_shows_printer_columns_and_short_names(operator, namespace, client, unique_name):
    model_name = f"model-{unique_name}"
    client.create_registered_model(model_name)
    client.create_model_version(model_name, "s3://bucket/churn/1")
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: RegisteredModel
        metadata:
          name: churn
        spec:
          modelName: {model_name}
          aliases:
            champion: 1
        ---
        apiVersion: ferroflow.dev/v1alpha1
        kind: ModelVersion
        metadata:
          name: churn-1
        spec:
          modelRef:
            name: churn
          version: 1
          stage: Staging
        """)
    wait_ready(namespace, "modelversion/churn-1")
    wait_ready(namespace, "registeredmodel/churn")
    for resource in ("modelversions", "mlmv"):
        lines = kubectl("get", resource, "-n", namespace).stdout.splitlines()
        assert lines[0].split() == ["NAME", "MODEL", "VERSION", "STAGE", "ALIASES", "READY", "AGE"], lines
        row = lines[1].split()
        assert row[:4] == ["churn-1", model_name, "1", "Staging"], lines
        assert "champion" in row[4] and row[5] == "True", lines
    lines = kubectl("get", "mlmodel", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "MODEL", "LATEST", "ALIASES", "READY", "AGE"], lines
    # The category lists every ferroflow kind at once.
    listed = kubectl("get", "ferroflow", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == ["modelversion.ferroflow.dev/churn-1", "registeredmodel.ferroflow.dev/churn"]


INVALID = [
    ("bad stage", """
        kind: ModelVersion
        metadata: {name: bad-stage}
        spec: {modelRef: {name: m}, version: 1, stage: Prod}
        """, 'Unsupported value: "Prod"'),
    ("both version and source", """
        kind: ModelVersion
        metadata: {name: both}
        spec: {modelRef: {name: m}, version: 1, source: "runs:/abc/model"}
        """, "set exactly one of version"),
    ("neither version nor source", """
        kind: ModelVersion
        metadata: {name: neither}
        spec: {modelRef: {name: m}}
        """, "set exactly one of version"),
    ("runId without source", """
        kind: ModelVersion
        metadata: {name: run-without-source}
        spec: {modelRef: {name: m}, version: 1, runId: abc}
        """, "runId goes with source"),
    ("version zero", """
        kind: ModelVersion
        metadata: {name: version-zero}
        spec: {modelRef: {name: m}, version: 0}
        """, "should be greater than or equal to 1"),
    ("reserved alias latest", """
        kind: RegisteredModel
        metadata: {name: alias-latest}
        spec: {aliases: {Latest: 1}}
        """, "'latest' and 'v<number>' are reserved"),
    ("reserved alias v3", """
        kind: RegisteredModel
        metadata: {name: alias-v3}
        spec: {aliases: {v3: 3}}
        """, "'latest' and 'v<number>' are reserved"),
    ("alias with a space", """
        kind: RegisteredModel
        metadata: {name: alias-space}
        spec: {aliases: {"my champion": 1}}
        """, "alias names may only contain"),
    ("alias to version 0", """
        kind: RegisteredModel
        metadata: {name: alias-zero}
        spec: {aliases: {champion: 0}}
        """, "alias versions are numbers from 1"),
    ("model name with a slash", """
        kind: RegisteredModel
        metadata: {name: slash}
        spec: {modelName: "team/churn"}
        """, "modelName cannot contain '/'"),
    ("bad deletion policy", """
        kind: Experiment
        metadata: {name: bad-policy}
        spec: {deletionPolicy: Forget}
        """, 'Unsupported value: "Forget"'),
    ("project run without an experiment", """
        kind: ProjectRun
        metadata: {name: no-experiment}
        spec: {image: python:3.12, projectDir: /app}
        """, "set exactly one of experimentRef"),
    ("project run with projectDir and source", """
        kind: ProjectRun
        metadata: {name: two-sources}
        spec: {experimentName: e, image: python:3.12, projectDir: /app, source: "runs:/abc/project"}
        """, "set exactly one of projectDir"),
    ("project run registering to two models", """
        kind: ProjectRun
        metadata: {name: two-models}
        spec: {experimentName: e, image: i, projectDir: /app, registerModel: {modelName: m, modelRef: {name: m}}}
        """, "set exactly one of modelRef"),
    ("project run with a numeric parameter", """
        kind: ProjectRun
        metadata: {name: numeric-parameter}
        spec: {experimentName: e, image: i, projectDir: /app, parameters: {alpha: 0.5}}
        """, "spec.parameters.alpha"),
]


@pytest.mark.parametrize("case,body,message", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifests_are_rejected_with_a_readable_message(operator, namespace, case, body, message):
    manifest = "apiVersion: ferroflow.dev/v1alpha1\n" + textwrap.dedent(body)
    done = kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest, check=False)
    assert done.returncode != 0, f"{case}: accepted\n{done.stdout}"
    assert message in done.stderr, f"{case}: {done.stderr}"
    assert "is invalid" in done.stderr


IMMUTABLE = [
    ("ModelVersion", "spec: {modelRef: {name: m}, version: 1}", "spec: {modelRef: {name: m}, version: 2}",
     "version is immutable"),
    ("ModelVersion", "spec: {modelRef: {name: m}, source: 'runs:/a/model'}",
     "spec: {modelRef: {name: m}, source: 'runs:/b/model'}", "source is immutable"),
    ("ModelVersion", "spec: {modelRef: {name: m}, version: 1}", "spec: {modelRef: {name: other}, version: 1}",
     "modelRef is immutable"),
    ("RegisteredModel", "spec: {modelName: churn-a}", "spec: {modelName: churn-b}", "modelName is immutable"),
    ("Experiment", "spec: {experimentName: exp-a}", "spec: {experimentName: exp-b}", "experimentName is immutable"),
    ("ProjectRun", "spec: {experimentName: e, image: i, projectDir: /app, parameters: {alpha: '0.5'}}",
     "spec: {experimentName: e, image: i, projectDir: /app, parameters: {alpha: '0.7'}}", "parameters are immutable"),
    ("ProjectRun", "spec: {experimentName: e, image: i:1, projectDir: /app}",
     "spec: {experimentName: e, image: i:2, projectDir: /app}", "image is immutable"),
]


@pytest.mark.parametrize("kind,before,after,message", IMMUTABLE, ids=[f"{c[0]}-{c[3].split()[0]}" for c in IMMUTABLE])
def test_changing_an_immutable_field_is_rejected(operator, namespace, kind, before, after, message):
    name = f"immutable-{uuid.uuid4().hex[:6]}"
    head = f"apiVersion: ferroflow.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\n"
    # Transition rules compare with the stored object: create it, then change it.
    kubectl("apply", "-n", namespace, "-f", "-", stdin=head + before)
    done = kubectl("apply", "-n", namespace, "-f", "-", stdin=head + after, check=False)
    assert done.returncode != 0, f"{kind}: change accepted\n{done.stdout}"
    assert message in done.stderr, done.stderr


def test_an_unreadable_stored_object_is_reported_and_does_not_stall_its_kind(operator, namespace, client, unique_name):
    """An Experiment stored while its CRD accepted anything (as after a schema change) cannot be
    read by the operator's types: it gets a Warning event saying why, and Experiments created
    after it are still reconciled (a watch that fails to decode one object would stall)."""
    crd_file = ROOT / "crds" / "experiments.ferroflow.dev.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    permissive = copy.deepcopy(crd)
    for version in permissive["spec"]["versions"]:
        version["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    bad = textwrap.dedent("""
        apiVersion: ferroflow.dev/v1alpha1
        kind: Experiment
        metadata: {name: unreadable}
        spec: {experimentName: 42, tags: not-a-map}
        """)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(permissive))
    try:
        # The apiserver serves the new schema moments after the CRD update: retry until it does.
        deadline = time.monotonic() + 60
        while kubectl("apply", "-n", namespace, "-f", "-", stdin=bad, check=False).returncode != 0:
            assert time.monotonic() < deadline, "the permissive schema never took effect"
            time.sleep(0.2)
    finally:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_file))
        wait_established("experiments.ferroflow.dev")

    def warning_events() -> list[dict]:
        done = kubectl("get", "events", "-n", namespace, "--field-selector",
                       "reason=InvalidSpec,involvedObject.name=unreadable", "-o", "json")
        return json.loads(done.stdout)["items"]

    deadline = time.monotonic() + WAIT_S
    while not warning_events():
        assert time.monotonic() < deadline, f"no InvalidSpec event for the unreadable Experiment\n{operator.log_tail()}"
        time.sleep(0.2)
    event = warning_events()[0]
    assert event["type"] == "Warning"
    message = event.get("message") or event.get("note") or ""
    # The field path comes first: which line of the manifest to fix.
    assert "cannot read this object" in message and "spec.experimentName: invalid type: integer `42`" in message, message
    assert "ferroflow.dev/cleanup" not in (get(namespace, "experiment/unreadable")["metadata"].get("finalizers") or [])

    name = f"after-{unique_name}"
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: Experiment
        metadata: {{name: after}}
        spec: {{experimentName: {name}}}
        """)
    status = wait_ready(namespace, "experiment/after")["status"]
    assert client.get_experiment_by_name(name).experiment_id == status["experimentId"]
    kubectl("delete", "-n", namespace, "experiment/unreadable", "--timeout=60s")
    wait_gone(namespace, "experiment/unreadable")


def test_operator_killed_mid_reconcile_converges_without_duplicates(operator, namespace, client, unique_name):
    """SIGKILL while 200 ModelVersions register; after a restart all are Ready and the store
    holds exactly 200 versions: registration is keyed by the resource uid."""
    count = 200
    model_name = f"model-{unique_name}"
    apply_versions(namespace, model_name, count)
    wait_registered(client, model_name, 20)
    operator.kill()
    in_flight = registered_count(client, model_name)
    assert in_flight < count, "all versions were registered before the kill; nothing was interrupted"

    operator.start()
    assert_one_version_per_resource(namespace, client, model_name, count)


def test_a_second_replica_waits_for_the_lease_and_takes_over(operator, namespace, client, unique_name):
    """Two replicas: one leads, the other waits; a graceful stop hands the Lease over at once."""
    standby = Operator(operator.binary, operator.store_uri, operator.kubeconfig, operator.workdir, name="e2e-standby",
                       env=operator.env)
    standby.start(expect_leader=False)
    try:
        assert operator.leads() and not standby.leads()
        assert "ferroflow_operator_leader 0" in standby.metrics()
        assert operator.stop() == 0
        deadline = time.monotonic() + WAIT_S
        while not standby.leads():
            assert time.monotonic() < deadline, f"the standby did not take over; log:\n{standby.log_tail()}"
            time.sleep(0.2)
        # The new leader reconciles.
        model_name = f"model-{unique_name}"
        apply(namespace, f"""
            apiVersion: ferroflow.dev/v1alpha1
            kind: RegisteredModel
            metadata:
              name: handover
            spec:
              modelName: {model_name}
              description: reconciled by the standby
            """)
        wait_ready(namespace, "registeredmodel/handover")
        assert client.get_registered_model(model_name).description == "reconciled by the standby"
        assert lease_holder().startswith("e2e-standby-")
    finally:
        assert standby.stop() == 0
        operator.start()


def lease_holder() -> str | None:
    lease = json.loads(kubectl("get", "lease", "ferroflow-operator", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
    return lease["spec"].get("holderIdentity")


def ferroflow_resources() -> list[str]:
    return kubectl("get", "ferroflow", "-A", "-o", "name").stdout.split()


def test_sigterm_stops_an_idle_operator_at_once_and_releases_the_lease(operator):
    """With no ferroflow resource in the cluster, SIGTERM ends the operator within seconds, exit
    0, Lease released: in a Pod an idle operator must not run out its grace period."""
    # Earlier tests leave resources in namespaces being deleted (or, after an apiserver restart,
    # already gone): delete them all; the running operator removes their finalizers.
    kubectl("delete", "ferroflow", "-A", "--all", "--wait=false")
    deadline = time.monotonic() + WAIT_S
    while left := ferroflow_resources():
        assert time.monotonic() < deadline, f"resources of earlier tests are still there: {left}"
        time.sleep(0.5)
    try:
        assert operator.terminate_within(10) == 0
        operator.start()
        assert lease_holder() == operator.identity
        assert operator.terminate_within(10) == 0
        assert lease_holder() is None
    finally:
        operator.start()


def test_sigterm_stops_a_busy_operator_promptly_and_its_work_resumes(operator, namespace, client, unique_name):
    """SIGTERM while 100 ModelVersions register: exit 0 within seconds, Lease released; the next
    leader finishes the work with one version per resource."""
    count = 100
    model_name = f"model-{unique_name}"
    apply_versions(namespace, model_name, count)
    wait_registered(client, model_name, 5)
    try:
        assert operator.terminate_within(10) == 0
        assert lease_holder() is None
    finally:
        operator.start()
    assert_one_version_per_resource(namespace, client, model_name, count)


def test_the_api_server_restarting_mid_reconcile_converges_without_duplicates(operator, namespace, client, unique_name):
    """The kube-apiserver is killed and restarted while 30 ModelVersions register: the operator's
    watches reconnect, every resource becomes Ready, one version each."""
    # A namespace deletion in progress across the restart can leave its objects behind (the
    # controller-manager's discovery is briefly incomplete): let earlier tests' finish first.
    deadline = time.monotonic() + WAIT_S
    while terminating := [ns["metadata"]["name"] for ns in json.loads(kubectl("get", "namespaces", "-o", "json").stdout)["items"]
                          if ns["status"].get("phase") == "Terminating"]:
        assert time.monotonic() < deadline, f"namespaces still terminating: {terminating}"
        time.sleep(0.5)
    count = 30
    model_name = f"model-{unique_name}"
    apply_versions(namespace, model_name, count)
    wait_registered(client, model_name, 1)
    done = subprocess.run(["bash", str(ROOT / "e2e" / "cluster" / "restart-apiserver.sh")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"restart-apiserver.sh exited {done.returncode}:\n{done.stderr}"
    if operator.proc is not None and operator.proc.poll() is not None:
        # An outage longer than the Lease ends leadership, as client-go's does; the kubelet would
        # restart the Pod.
        assert "lost Lease" in operator.log_tail(), operator.log_tail()
        operator.start()
    assert_one_version_per_resource(namespace, client, model_name, count)
    assert operator.leads()


def apply_versions(namespace: str, model_name: str, count: int) -> None:
    """A RegisteredModel `bulk` and `count` ModelVersions registering `source` (tagged by index)."""
    documents = [f"""
apiVersion: ferroflow.dev/v1alpha1
kind: RegisteredModel
metadata: {{name: bulk}}
spec: {{modelName: {model_name}}}
"""]
    for i in range(count):
        documents.append(f"""
apiVersion: ferroflow.dev/v1alpha1
kind: ModelVersion
metadata: {{name: bulk-{i}}}
spec: {{modelRef: {{name: bulk}}, source: "s3://bucket/bulk/{i}", tags: {{index: "{i}"}}}}
""")
    kubectl("apply", "-n", namespace, "-f", "-", stdin="---".join(documents))


def registered_count(client, model_name: str) -> int:
    return len(client.search_model_versions(f"name = '{model_name}'", max_results=1000))


def wait_registered(client, model_name: str, at_least: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while registered_count(client, model_name) < at_least:
        assert time.monotonic() < deadline, f"the operator registered fewer than {at_least} versions in time"
        time.sleep(0.1)


def assert_one_version_per_resource(namespace: str, client, model_name: str, count: int) -> None:
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "modelversions", "--all", f"--timeout={int(WAIT_S * 2)}s")
    versions = client.search_model_versions(f"name = '{model_name}'", max_results=1000)
    assert len(versions) == count
    assert sorted(int(v.version) for v in versions) == list(range(1, count + 1))
    # Each resource got its own version: the index tags are a permutation of 0..count-1.
    assert sorted(int(v.tags["index"]) for v in versions) == list(range(count))
    statuses = json.loads(kubectl("get", "modelversions", "-n", namespace, "-o", "json").stdout)["items"]
    assert sorted(o["status"]["version"] for o in statuses) == list(range(1, count + 1))
