"""The Helm chart (charts/ferroflow, charts/ferroflow-crds) and the kustomize install
(config/default): lint, the refusals, every rendered object accepted by the e2e API server in a
server-side dry run, RBAC equal to config/rbac, and kustomize giving the chart's objects.
The golden renders are checked by `make generate-check` (charts/generate.sh).
Needs FERROFLOW_KUBECTL and FERROFLOW_KUBECONFIG (`eval "$(e2e/cluster/up.sh)"`) for the dry
runs; skipped without them (failed when CI is set)."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import yaml
from helm_helpers import CHART, CRDS_CHART, ROOT, helm, helm_binary, template
from kubectl_helpers import KUBECONFIG, KUBECTL, kubectl, wait_established
from test_gitops import CRDS

VALUES = {
    "default": [],
    "sqlite-trial": ["--values", str(CHART / "ci" / "sqlite-trial-values.yaml")],
    "production": ["--values", str(CHART / "ci" / "production-values.yaml")],
}
# Kinds of other projects' CRDs, which the e2e API server does not serve.
NOT_SERVED = {"ServiceMonitor", "HTTPRoute"}


def needs_cluster():
    if not (KUBECTL and KUBECONFIG):
        if os.environ.get("CI"):
            pytest.fail("FERROFLOW_KUBECTL/FERROFLOW_KUBECONFIG not set in CI")
        pytest.skip("no e2e cluster (FERROFLOW_KUBECTL/FERROFLOW_KUBECONFIG)")


@pytest.fixture
def scratch_namespace():
    needs_cluster()
    name = f"chart-check-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.mark.parametrize("values", VALUES)
def test_lint(values):
    done = helm("lint", "--strict", str(CHART), *VALUES[values])
    assert "0 chart(s) failed" in done.stdout
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CRDS_CHART)).stdout


def test_sqlite_refuses_more_than_one_replica_with_a_clear_message():
    done = helm("template", "x", str(CHART), "--set", "replicaCount=2", check=False)
    assert done.returncode != 0
    assert "replicaCount is 2 but the store is SQLite" in done.stderr
    assert "mlflow.backendStoreUriFrom" in done.stderr, "the message names the way out"
    # The same with a database is fine.
    objects = template("--set", "replicaCount=2", *VALUES["production"][:2])
    assert any(o["kind"] == "Deployment" and o["spec"]["replicas"] == 2 for o in objects)


def test_external_database_needs_a_shared_artifacts_destination():
    done = helm("template", "x", str(CHART), "--set", "mlflow.backendStoreUri=postgresql://h/db", check=False)
    assert done.returncode != 0
    assert "mlflow.artifactsDestination is required" in done.stderr


def test_secure_defaults_and_modes():
    default = {(o["kind"], o["metadata"]["name"]): o for o in template()}
    server = default[("Deployment", "ferroflow")]
    assert server["spec"]["strategy"] == {"type": "Recreate"}, "SQLite: one Pod at a time"
    pod = server["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["FERROFLOW_LOG_FORMAT"] == "json"
    assert [c["name"] for c in pod["containers"]] == ["server", "operator"], "the operator shares the SQLite volume"
    assert ("Job", "ferroflow-migrate") not in default, "SQLite migrates at server start"
    assert default[("PersistentVolumeClaim", "ferroflow")]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    production = {(o["kind"], o["metadata"]["name"]): o for o in template(*VALUES["production"])}
    server = production[("Deployment", "ferroflow")]
    assert server["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    uri = next(e for e in server["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert uri["valueFrom"]["secretKeyRef"] == {"name": "ferroflow-db", "key": "uri"}
    job = production[("Job", "ferroflow-migrate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    operator = production[("Deployment", "ferroflow-operator")]
    assert operator["spec"]["replicas"] == 2
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["FERROFLOW_TRACKING_URL"]["value"] == "http://ferroflow.ferroflow-system.svc:5000"
    assert env["FERROFLOW_SERVING_IMAGE"]["value"] == "ghcr.io/ferroflow/serving:0.1.0"
    assert ("PodDisruptionBudget", "ferroflow") in production


def test_chart_crds_are_the_generated_ones_and_the_crds_chart_keeps_them():
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.ferroflow.dev.yaml"))
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == generated
    for name in generated:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text()
    done = helm("template", "crds", str(CRDS_CHART))
    crds = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert len(crds) == len(generated)
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def rules_by_name(objects: list[dict]) -> dict[tuple[str, str], list]:
    return {(o["kind"], o["metadata"]["name"]): o["rules"] for o in objects if o["kind"] in ("ClusterRole", "Role")}


def test_rbac_is_config_rbac():
    config = rules_by_name(
        [d for f in sorted((ROOT / "config" / "rbac").glob("*role.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    )
    chart = rules_by_name(template())
    assert chart == config


def kinds_and_names(objects: list[dict]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def kustomize_build(overlay: str = "default") -> list[dict]:
    needs_cluster()
    done = kubectl("kustomize", str(ROOT / "config" / overlay))
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_kustomize_default_is_the_chart_default():
    kustomized = kinds_and_names(o for o in kustomize_build() if o["kind"] != "Namespace")
    assert kustomized == kinds_and_names(template("--include-crds"))


def test_kustomize_auth_is_the_chart_with_kubernetes_auth():
    objects = kustomize_build("auth")
    kustomized = kinds_and_names(o for o in objects if o["kind"] != "Namespace")
    assert kustomized == kinds_and_names(template("--include-crds", "--set", "auth.mode=kubernetes"))
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding"
                   and o["roleRef"]["name"] == "system:auth-delegator")
    server = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "ferroflow")
    pod = server["spec"]["template"]["spec"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": "ferroflow-system"}]
    container = next(c for c in pod["containers"] if c["name"] == "server")
    assert container["args"][-2:] == ["--auth", "kubernetes"]


def dry_run(objects: list[dict], namespace: str) -> set[str]:
    """Server-side dry run of `objects` moved into `namespace`; the kinds not served are skipped."""
    served = []
    for obj in objects:
        if obj["kind"] in NOT_SERVED or obj["kind"] == "Namespace":
            continue
        obj = json.loads(json.dumps(obj))
        if obj["metadata"].get("namespace"):
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects") or []:
            subject["namespace"] = namespace
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            obj["metadata"]["name"] += f"-{namespace}"
        served.append(obj)
    stream = "\n---\n".join(yaml.safe_dump(o) for o in served)
    done = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=chart-check", "--force-conflicts", "-f", "-", stdin=stream)
    assert done.stdout.count("(server dry run)") == len(served), done.stdout
    return {o["kind"] for o in served}


@pytest.mark.parametrize("values", VALUES)
def test_every_rendered_object_passes_a_server_side_dry_run(values, scratch_namespace):
    objects = template("--include-crds", *VALUES[values], namespace=scratch_namespace)
    kinds = dry_run(objects, scratch_namespace)
    assert {"Deployment", "Service", "ClusterRole", "CustomResourceDefinition"} <= kinds
    if values == "production":
        assert {"Job", "Ingress", "NetworkPolicy", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("overlay", ["default", "auth"])
def test_kustomize_passes_a_server_side_dry_run(overlay, scratch_namespace):
    kinds = dry_run(kustomize_build(overlay), scratch_namespace)
    assert {"Deployment", "PersistentVolumeClaim", "CustomResourceDefinition"} <= kinds


def test_samples_pass_a_server_side_dry_run(scratch_namespace):
    kubectl("apply", "--server-side", "-k", str(ROOT / "config" / "crd"))
    wait_established(*CRDS)
    done = kubectl("apply", "--dry-run=server", "-n", scratch_namespace, "-k", str(ROOT / "config" / "samples"))
    assert done.stdout.count("(server dry run)") == 3, done.stdout


def test_helm_is_the_pinned_version():
    done = helm("version", "--short")
    go_mod = (ROOT / "e2e" / "cluster" / "helm" / "go.mod").read_text()
    pinned = next(line.split()[1] for line in go_mod.splitlines() if line.strip().startswith("helm.sh/helm/v3 "))
    assert done.stdout.strip().startswith(pinned), (done.stdout, pinned, helm_binary())
