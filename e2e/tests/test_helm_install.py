"""`helm install`, `helm upgrade` and `helm uninstall` of charts/ferroflow into the e2e cluster.
kwok plays the kubelets (e2e/cluster/README.md): Deployment Pods become Running and Ready and a
Job's Pods succeed, so these tests show what the API server and the controllers do with the
chart (rollouts, hooks, Services, what uninstall leaves), not the image running.
Needs FERROFLOW_KUBECTL and FERROFLOW_KUBECONFIG (`eval "$(e2e/cluster/up.sh)"`); skipped
without them (failed when CI is set)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from datetime import datetime
from urllib.parse import urlsplit

import pytest
import requests
from helm_helpers import CHART, helm
from kubectl_helpers import KUBECONFIG, KUBECTL, get, kubectl, wait_until

CRDS = ("experiments.ferroflow.dev", "registeredmodels.ferroflow.dev", "modelversions.ferroflow.dev")


@pytest.fixture
def helm_namespace():
    if not (KUBECTL and KUBECONFIG):
        if os.environ.get("CI"):
            pytest.fail("FERROFLOW_KUBECTL/FERROFLOW_KUBECONFIG not set in CI")
        pytest.skip("no e2e cluster (FERROFLOW_KUBECTL/FERROFLOW_KUBECONFIG)")
    name = f"helm-e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    helm("uninstall", "ff", "--namespace", name, "--wait", check=False)
    kubectl("delete", "namespace", name, "--wait=false")


def external_database(namespace: str) -> list[str]:
    """An external-Postgres install: the URI in a Secret (kwok's Pods never dial it)."""
    uri = os.environ.get("FERROFLOW_TEST_PG_URL", "postgresql://postgres@db.invalid:5432/postgres")
    kubectl("create", "secret", "generic", "ferroflow-db", "-n", namespace, f"--from-literal=uri={uri}")
    return [
        "--set", "mlflow.backendStoreUriFrom.name=ferroflow-db",
        "--set", "mlflow.backendStoreUriFrom.key=uri",
        "--set", "mlflow.artifactsDestination=s3://e2e-bucket/ferroflow",
        "--set", "replicaCount=2",
    ]


def install(namespace: str, *args: str, command: str = "install"):
    return helm(command, "ff", str(CHART), "--namespace", namespace, "--wait", "--timeout", "180s", *args)


def available(deployment: dict | None) -> bool:
    if not deployment:
        return False
    status = deployment.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return (
        conditions.get("Available") == "True"
        and status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == deployment["spec"]["replicas"]
        and status.get("availableReplicas") == deployment["spec"]["replicas"]
    )


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def job_completed(job: dict | None) -> bool:
    return bool(job) and any(
        c["type"] == "Complete" and c["status"] == "True" for c in (job.get("status") or {}).get("conditions") or []
    )


def newest_replica_set(namespace: str, deployment: dict) -> dict:
    revision = deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    sets = get(namespace, "replicasets")["items"]
    return next(
        rs for rs in sets
        if rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision") == revision
        and any(o["name"] == deployment["metadata"]["name"] for o in rs["metadata"].get("ownerReferences") or [])
    )


def test_install_upgrade_uninstall_on_an_external_database(helm_namespace):
    namespace = helm_namespace
    database = external_database(namespace)
    install(namespace, *database)

    server = get(namespace, "deployment/ff-ferroflow")
    operator = get(namespace, "deployment/ff-ferroflow-operator")
    assert available(server) and available(operator), (server["status"], operator["status"])
    assert server["spec"]["replicas"] == 2 and operator["spec"]["replicas"] == 2
    job = get(namespace, "job/ff-ferroflow-migrate")
    assert job_completed(job), job["status"]
    first_job_uid = job["metadata"]["uid"]
    # The hook ran before the server's Pods existed.
    first_set = newest_replica_set(namespace, server)
    assert when(job["status"]["completionTime"]) <= when(first_set["metadata"]["creationTimestamp"])
    # Both replicas are behind the one Service.
    slices = get(namespace, "endpointslices")["items"]
    ready = [
        e for s in slices if s["metadata"]["labels"].get("kubernetes.io/service-name") == "ff-ferroflow"
        for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
    ]
    assert len(ready) == 2, slices
    # Leader election has its RBAC in the release namespace.
    role = get(namespace, "role/ff-ferroflow-operator-leader-election")
    assert role["rules"][0]["resources"] == ["leases"]

    # An upgrade with a changed value: the hook Job runs again (a new one), and completes
    # before the new ReplicaSet is created; the rollout ends Available.
    install(namespace, *database, "--set", "logFormat=text", command="upgrade")
    server = get(namespace, "deployment/ff-ferroflow")
    assert available(server), server["status"]
    env = {e["name"]: e.get("value") for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERROFLOW_LOG_FORMAT"] == "text"
    job = get(namespace, "job/ff-ferroflow-migrate")
    assert job["metadata"]["uid"] != first_job_uid, "the upgrade ran the migration hook again"
    assert job_completed(job)
    second_set = newest_replica_set(namespace, server)
    assert second_set["metadata"]["uid"] != first_set["metadata"]["uid"], "the value change rolled the server"
    assert when(job["status"]["completionTime"]) <= when(second_set["metadata"]["creationTimestamp"])
    assert when(job["metadata"]["creationTimestamp"]) >= when(first_set["metadata"]["creationTimestamp"])

    helm("uninstall", "ff", "--namespace", namespace, "--wait")
    wait_until(namespace, "deployment/ff-ferroflow", lambda d: d is None, "the server's removal")
    assert get(namespace, "deployment/ff-ferroflow-operator") is None
    assert get(namespace, "secret/ferroflow-db") is not None, "the database Secret is the user's"
    for crd in CRDS:
        assert kubectl("get", "crd", crd, check=False).returncode == 0, f"uninstall removed {crd}"


def test_sqlite_trial_is_one_pod_on_a_kept_volume(helm_namespace):
    namespace = helm_namespace
    # No provisioner in the e2e cluster: a static volume for the claim to bind to.
    volume = f"{namespace}-data"
    kubectl("apply", "-f", "-", stdin=f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {volume}}}
spec:
  capacity: {{storage: 10Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {{namespace: {namespace}, name: ff-ferroflow}}
  hostPath: {{path: /tmp/{volume}}}
""")
    try:
        install(namespace, "--set", "storage.storageClassName=")
        server = get(namespace, "deployment/ff-ferroflow")
        assert available(server), server["status"]
        assert server["spec"]["strategy"]["type"] == "Recreate"
        pod = server["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == ["server", "operator"]
        assert pod["serviceAccountName"] == "ff-ferroflow-operator"
        assert get(namespace, "job/ff-ferroflow-migrate") is None, "no hook: the server migrates SQLite itself"
        refused = helm("upgrade", "ff", str(CHART), "--namespace", namespace, "--set", "replicaCount=2", check=False)
        assert refused.returncode != 0 and "SQLite is one file on one volume" in refused.stderr
        assert get(namespace, "deployment/ff-ferroflow")["spec"]["replicas"] == 1

        helm("uninstall", "ff", "--namespace", namespace, "--wait")
        claim = get(namespace, "pvc/ff-ferroflow")
        assert claim is not None, "the SQLite volume outlives the release"
        assert claim["status"]["phase"] == "Bound"
    finally:
        kubectl("delete", "pvc", "ff-ferroflow", "-n", namespace, "--wait=false", check=False)
        kubectl("delete", "pv", volume, "--wait=false", check=False)


# --- The chart with the image it ships, on the real node -----------------------------------

# Imported for their fixtures and helpers: the real node's settings and the loopback relay.
from test_real_node import NODE_IP, NODE_NAME, POD_WAIT_S, TAINT, Relay, namespace, real_node  # noqa: E402,F401

# How long a polling client waits for one answer. A slow answer (two cores shared with the
# suite's other lanes and with Pods loading models) is not a failed request; a refused or reset
# connection, or a status other than 200, is.
REQUEST_TIMEOUT_S = 30


def ferroflow_image(binary: str) -> tuple[str, str]:
    """e2e/images/ferroflow.sh's image of `binary`, imported into the node: (repository, tag)."""
    images = CHART.parents[1] / "e2e" / "images"
    built = subprocess.run(["bash", str(images / "ferroflow.sh"), binary], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    archive, ref = built.stdout.split()[-2:]
    imported = subprocess.run(["bash", str(images / "import.sh"), archive, ref], capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    return tuple(ref.rsplit(":", 1))


class ServiceClient:
    """Requests to a Service as kube-proxy would send them: spread over its ready endpoints,
    read from its EndpointSlices. (The e2e node runs no kube-proxy, so there is no virtual IP.)
    Each request opens a new connection, as a client behind kube-proxy gets a new backend per
    connection."""

    def __init__(self, namespace: str, service: str, port: int = 5000):
        self.namespace, self.service, self.port = namespace, service, port
        self.endpoints: list[str] = []
        self.turn = 0
        self.refresh()

    def refresh(self):
        slices = get(self.namespace, "endpointslices")["items"]
        self.endpoints = sorted(
            address
            for s in slices if s["metadata"]["labels"].get("kubernetes.io/service-name") == self.service
            for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
            for address in e["addresses"]
        )

    def get(self, path: str) -> tuple[str, requests.Response]:
        return self.request("GET", path)

    def request(self, method: str, path: str, **kw) -> tuple[str, requests.Response]:
        assert self.endpoints, f"service {self.service} has no ready endpoint"
        self.turn += 1
        address = self.endpoints[self.turn % len(self.endpoints)]
        return address, requests.request(method, f"http://{address}:{self.port}{path}", timeout=REQUEST_TIMEOUT_S,
                                         headers={"Connection": "close"}, **kw)


class Poller:
    """Polls the server through ServiceClient in a thread, every `interval` seconds; counts
    answers per Pod (or per `answer(address, response)`) and failures. With `json`, POSTs it."""

    def __init__(self, client: ServiceClient, path: str, interval: float = 0.02, json: dict | None = None,
                 answer=None):
        self.client, self.path, self.interval, self.json = client, path, interval, json
        self.answer = answer or (lambda address, response: address)
        self.answers: dict = {}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        last_refresh = 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_refresh > 0.5:
                self.client.refresh()
                last_refresh = time.monotonic()
            try:
                if self.json is None:
                    address, response = self.client.get(self.path)
                else:
                    address, response = self.client.request("POST", self.path, json=self.json)
                if response.status_code == 200:
                    key = self.answer(address, response)
                    self.answers[key] = self.answers.get(key, 0) + 1
                else:
                    self.failures.append(f"{address}: {response.status_code} {response.text[:200]}")
            except (requests.RequestException, AssertionError) as error:
                self.failures.append(repr(error))
            time.sleep(self.interval)

    def finish(self) -> int:
        self.stop.set()
        self.thread.join(timeout=30)
        return sum(self.answers.values())


def metric(text: str, series: str) -> float:
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " ")), 0.0)


def server_pods(namespace: str) -> list[dict]:
    pods = get(namespace, "pods")["items"]
    return [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/component") == "server"
            and p["metadata"].get("deletionTimestamp") is None]


@pytest.fixture
def release(namespace):
    """A release name of this test's own, uninstalled before the namespace is deleted: its
    ClusterRoles would otherwise outlive it and block the next install."""
    name = f"ff{namespace[-6:]}"
    yield name
    helm("uninstall", name, "--namespace", namespace, "--wait", check=False)


@pytest.fixture
def pod_database(real_node):
    """A fresh Postgres database, reached by Pods through a relay on the bridge address."""
    admin = os.environ.get("FERROFLOW_TEST_PG_URL")
    if not admin:
        if os.environ.get("CI"):
            pytest.fail("FERROFLOW_TEST_PG_URL is not set in CI")
        pytest.skip("needs FERROFLOW_TEST_PG_URL")
    from conftest import _PostgresDatabase

    database = _PostgresDatabase(admin)
    parts = urlsplit(database.url)
    relay = Relay(NODE_IP, (parts.hostname, parts.port or 5432))
    port = relay.listener.getsockname()[1]
    user = f"{parts.username}@" if parts.username else ""
    yield f"postgresql://{user}{NODE_IP}:{port}{parts.path}"
    relay.close()
    database.drop()


@pytest.fixture
def node_values(request, namespace, pod_database) -> list[str]:
    """helm values for an install on the real node: the image of the binary under test, the
    database URI in a Secret, every Pod on the node."""
    binary = request.config.getoption("--ferroflow-bin")
    if not binary:
        pytest.skip("needs FERROFLOW_BIN: the image packs the binary under test")
    repository, tag = ferroflow_image(binary)
    kubectl("create", "secret", "generic", "ferroflow-db", "-n", namespace, f"--from-literal=uri={pod_database}")
    on_the_node = [
        f'{prefix}nodeSelector={{"{TAINT}": "true"}}' for prefix in ("", "operator.")
    ] + [
        f'{prefix}tolerations=[{{"key": "{TAINT}", "operator": "Exists", "effect": "NoSchedule"}}]'
        for prefix in ("", "operator.")
    ]
    return [
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
        "--set", "mlflow.backendStoreUriFrom.name=ferroflow-db", "--set", "mlflow.backendStoreUriFrom.key=uri",
        # Runs are logged here, not artifacts: a local folder per Pod is enough.
        "--set", "mlflow.artifactsDestination=/tmp/artifacts",
        *(arg for value in on_the_node for arg in ("--set-json", value)),
    ]


def test_the_image_on_the_real_node_serves_spreads_and_rolls_without_a_failed_request(
    namespace, release, node_values
):
    values = [
        *node_values,
        "--set", "replicaCount=2",
        "--set-json", 'resources={"limits": {"memory": "512Mi"}}',
        # The operator on the node is the next test's (it needs the relay to the API server).
        "--set", "operator.enabled=false",
    ]
    helm("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", f"{POD_WAIT_S:.0f}s", *values,
         timeout=POD_WAIT_S + 60)
    job = get(namespace, f"job/{release}-ferroflow-migrate")
    assert job_completed(job), job["status"]
    pods = server_pods(namespace)
    assert len(pods) == 2 and all(p["spec"]["nodeName"] == NODE_NAME for p in pods)
    first, second = (p["status"]["podIP"] for p in pods)

    # The mlflow client on the host logs a run through one Pod; the other reads it back.
    from mlflow.tracking import MlflowClient

    before = requests.get(f"http://{first}:5000/metrics", timeout=REQUEST_TIMEOUT_S).text
    writer = MlflowClient(f"http://{first}:5000")
    experiment_id = writer.create_experiment(f"helm-{namespace}")
    run = writer.create_run(experiment_id)
    writer.log_metric(run.info.run_id, "accuracy", 0.93, step=1)
    writer.set_terminated(run.info.run_id)
    reader = MlflowClient(f"http://{second}:5000")
    assert reader.get_metric_history(run.info.run_id, "accuracy")[0].value == 0.93
    after = requests.get(f"http://{first}:5000/metrics", timeout=REQUEST_TIMEOUT_S).text
    created = 'ferroflow_http_requests_total{method="POST",route="/api/2.0/mlflow/runs/create",status="200"}'
    assert metric(after, created) - metric(before, created) == 1, after
    assert metric(after, "ferroflow_store_up") == 1

    # Requests through the Service spread over both replicas, then keep being answered while
    # an upgrade with a changed value rolls them (readiness, preStop sleep, drain).
    poller = Poller(ServiceClient(namespace, f"{release}-ferroflow"), f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}")
    deadline = time.monotonic() + 30
    while len(poller.answers) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(poller.answers) == 2, f"requests went to {poller.answers} only"
    helm("upgrade", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", f"{POD_WAIT_S:.0f}s",
         *values, "--set", "logFormat=text", timeout=POD_WAIT_S + 60)
    # A little traffic on the new Pods too.
    settle = time.monotonic() + 3
    while time.monotonic() < settle:
        time.sleep(0.1)
    answered = poller.finish()
    print(f"answers during the upgrade, per Pod IP: {poller.answers}")
    assert poller.failures == [], f"{len(poller.failures)} failed of {answered + len(poller.failures)}: {poller.failures[:5]}"
    new_pods = server_pods(namespace)
    new_ips = {p["status"]["podIP"] for p in new_pods}
    assert len(new_pods) == 2 and new_ips.isdisjoint({first, second}), "the upgrade replaced both Pods"
    assert all(poller.answers.get(ip, 0) > 0 for ip in new_ips), poller.answers
    assert all(poller.answers.get(ip, 0) > 0 for ip in (first, second)), poller.answers
    # The data is in the store, not the Pods.
    assert MlflowClient(f"http://{sorted(new_ips)[0]}:5000").get_run(run.info.run_id).info.status == "FINISHED"

    # Killing a replica loses no acknowledged write: the store is the only state. Steps are
    # logged through the Service while one Pod is killed without grace; a step counts as
    # acknowledged only when answered 200.
    client = ServiceClient(namespace, f"{release}-ferroflow")
    victim = sorted(new_pods, key=lambda p: p["metadata"]["name"])[0]
    acknowledged, refused, step = [], 0, 0
    killed_at = None
    while len(acknowledged) < 60 and step < 600:
        step += 1
        if step == 20:
            kubectl("delete", "pod", victim["metadata"]["name"], "-n", namespace, "--grace-period=0", "--force")
            killed_at = step
        if step % 5 == 0:
            client.refresh()
        try:
            _, response = client.request("POST", "/api/2.0/mlflow/runs/log-metric", json={
                "run_id": run.info.run_id, "key": "loss", "value": step, "timestamp": 1700000000000 + step, "step": step})
            if response.status_code == 200:
                acknowledged.append(step)
            else:
                refused += 1
        except requests.RequestException:
            refused += 1
    assert killed_at and len(acknowledged) >= 60, (acknowledged, refused)
    stored = {m.step for m in MlflowClient(f"http://{client.endpoints[0]}:5000").get_metric_history(run.info.run_id, "loss")}
    assert set(acknowledged) <= stored, sorted(set(acknowledged) - stored)
    print(f"killed {victim['metadata']['name']} at step {killed_at}: {len(acknowledged)} acknowledged, {refused} refused")


@pytest.fixture
def api_for_pods(real_node):
    """The API server as Pods here can reach it: a relay on the bridge address, named
    kubernetes.default.svc (a name its serving certificate holds) by a host alias, since the
    node runs no kube-proxy to route the `kubernetes` Service's address."""
    server = next(line.split("server:", 1)[1].strip() for line in open(KUBECONFIG) if "server:" in line)
    parts = urlsplit(server)
    relay = Relay(NODE_IP, (parts.hostname, parts.port))
    port = relay.listener.getsockname()[1]
    yield [
        "--set-json", f'operator.hostAliases=[{{"ip": "{NODE_IP}", "hostnames": ["kubernetes.default.svc"]}}]',
        "--set-json", 'operator.env=[{"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes.default.svc"}, '
                      f'{{"name": "KUBERNETES_SERVICE_PORT", "value": "{port}"}}]',
    ]
    relay.close()


def test_the_operator_on_the_real_node_holds_the_lease_and_reconciles_the_samples(
    namespace, release, node_values, api_for_pods, monkeypatch
):
    helm("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", f"{POD_WAIT_S:.0f}s",
         *node_values, *api_for_pods, timeout=POD_WAIT_S + 60)
    operators = [p for p in get(namespace, "pods")["items"]
                 if p["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"]
    assert len(operators) == 2 and all(p["spec"]["nodeName"] == NODE_NAME for p in operators)
    lease = wait_until(namespace, f"lease/{release}-ferroflow-operator",
                       lambda o: o is not None and (o.get("spec") or {}).get("holderIdentity"), "a holder")
    assert lease["spec"]["holderIdentity"] in {p["metadata"]["name"] for p in operators}

    kubectl("apply", "-n", namespace, "-k", str(CHART.parents[1] / "config" / "samples"))
    try:
        for resource in ("experiment/fraud-detection", "registeredmodel/fraud-classifier", "modelversion/fraud-classifier-1"):
            wait_until(namespace, resource, lambda o: o is not None and any(
                c["type"] == "Ready" and c["status"] == "True" for c in (o.get("status") or {}).get("conditions") or []),
                "Ready", timeout=POD_WAIT_S)
        from mlflow.tracking import MlflowClient

        server = next(p for p in get(namespace, "pods")["items"]
                      if p["metadata"]["labels"].get("app.kubernetes.io/component") == "server")
        client = MlflowClient(f"http://{server['status']['podIP']}:5000")
        # The samples reconcile into their namespace's workspace.
        monkeypatch.setenv("MLFLOW_WORKSPACE", namespace)
        assert client.get_experiment_by_name("fraud-detection").tags["team"] == "risk"
        version = client.get_model_version("fraud-classifier", "1")
        assert version.current_stage == "Staging"
        leader = next(p for p in operators if p["metadata"]["name"] == lease["spec"]["holderIdentity"])
        text = requests.get(f"http://{leader['status']['podIP']}:8080/metrics", timeout=REQUEST_TIMEOUT_S).text
        assert metric(text, "ferroflow_operator_leader") == 1
        assert 'ferroflow_operator_reconciles_total{kind="ModelVersion"}' in text
    finally:
        # While the operator runs: it removes its finalizers, so the namespace can go.
        kubectl("delete", "-n", namespace, "-k", str(CHART.parents[1] / "config" / "samples"), "--timeout=60s", check=False)
