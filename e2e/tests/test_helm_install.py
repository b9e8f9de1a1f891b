"""`helm install`, `helm upgrade` and `helm uninstall` of charts/ferroflow into the e2e cluster.
kwok plays the kubelets (e2e/cluster/README.md): Deployment Pods become Running and Ready and a
Job's Pods succeed, so these tests show what the API server and the controllers do with the
chart (rollouts, hooks, Services, what uninstall leaves), not the image running.
Needs FERROFLOW_KUBECTL and FERROFLOW_KUBECONFIG (`eval "$(e2e/cluster/up.sh)"`); skipped
without them (failed when CI is set)."""

from __future__ import annotations

import os
import uuid
from datetime import datetime

import pytest
from helm_helpers import CHART, helm
from kubectl_helpers import KUBECONFIG, KUBECTL, get, kubectl, wait_until

CRDS = ("experiments.ferroflow.dev", "registeredmodels.ferroflow.dev", "modelversions.ferroflow.dev")


@pytest.fixture
def namespace():
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


def test_install_upgrade_uninstall_on_an_external_database(namespace):
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


def test_sqlite_trial_is_one_pod_on_a_kept_volume(namespace):
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
