"""ModelDeployment against a real kube-apiserver, controller-manager and scheduler, with kwok
Pods (they turn Ready by themselves, see e2e/cluster/kwok-stages.yaml) and the real mlflow
client on the Postgres store the operator shares with the tracking server (issue #14).

Serving for real (Pods that download and serve a scikit-learn model) needs the real node; these
tests check what the operator does with the objects it owns: the Deployments a traffic leg
runs, the version in their Pod template, the Services and HTTPRoute, status and events, the
registry tags that say where a version serves, and the automatic rollback of a rollout the
Deployment controller gives up on (made to fail here by a ResourceQuota).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from kubectl_helpers import WAIT_S, apply, get, kubectl, wait_until
from test_gitops import condition, namespace, operator, registered_model, wait_ready  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
VERSION_ANNOTATION = "ferroflow.dev/model-version"
URI_ANNOTATION = "ferroflow.dev/model-uri"


def _package_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match
    return match.group(1)


def register(client, model_name: str, count: int) -> None:
    client.create_registered_model(model_name)
    for i in range(count):
        client.create_model_version(model_name, f"s3://bucket/{model_name}/{i + 1}")


def model_deployment(name: str, spec: str) -> str:
    return f"apiVersion: ferroflow.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n{spec}"


def serving(obj: dict | None, version: int) -> bool:
    """Ready for the current generation and serving `version` on every leg."""
    if obj is None:
        return False
    status = obj.get("status") or {}
    return (
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and condition(obj, "Ready").get("status") == "True"
        and status.get("servingVersion") == version
    )


def template_version(namespace: str, deployment: str) -> str | None:
    obj = get(namespace, f"deployment/{deployment}")
    if obj is None:
        return None
    return obj["spec"]["template"]["metadata"].get("annotations", {}).get(VERSION_ANNOTATION)


def wait_template(namespace: str, deployment: str, version: int) -> dict:
    obj = wait_until(
        namespace,
        f"deployment/{deployment}",
        lambda o: o is not None
        and o["spec"]["template"]["metadata"].get("annotations", {}).get(VERSION_ANNOTATION) == str(version),
        f"Pod template on version {version}",
    )
    assert obj is not None
    return obj


def events(namespace: str, name: str) -> list[dict]:
    listed = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e for e in listed if e.get("involvedObject", {}).get("name") == name
            and e.get("involvedObject", {}).get("kind") == "ModelDeployment"]


def wait_event(namespace: str, name: str, reason: str, text: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [e for e in events(namespace, name) if e.get("reason") == reason and text in (e.get("message") or e.get("note") or "")]
        if found:
            return
        assert time.monotonic() < deadline, f"no {reason} event with {text!r}: {events(namespace, name)}"
        time.sleep(0.2)


def is_subset(expected, actual, path: str = "") -> None:
    """Every field of `expected` is in `actual` with the same value (lists item by item): the
    object as the builder made it, with what the API server defaults added around it."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing in {json.dumps(actual)[:2000]}"
            is_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            is_subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: {actual!r} != {expected!r}"


def labels(md: dict, leg: str | None) -> dict:
    labels = {
        "app.kubernetes.io/component": "serving",
        "app.kubernetes.io/instance": md["metadata"]["name"],
        "app.kubernetes.io/managed-by": "ferroflow-operator",
        "app.kubernetes.io/name": "mlflow-model-server",
        "app.kubernetes.io/part-of": "ferroflow",
        "ferroflow.dev/model-deployment": md["metadata"]["name"],
        "ferroflow.dev/owner-kind": "ModelDeployment",
        "ferroflow.dev/owner-name": md["metadata"]["name"],
        "ferroflow.dev/owner-uid": md["metadata"]["uid"],
    }
    if leg:
        labels["ferroflow.dev/leg"] = leg
    return labels


def owner_references(md: dict) -> list[dict]:
    return [{
        "apiVersion": "ferroflow.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": md["metadata"]["name"],
        "uid": md["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }]


def expected_deployment(md: dict, leg: str, replicas: int, model_name: str, version: int) -> dict:
    """The Deployment the builder makes with the operator's default settings (see the Rust
    builder's tests for the same object)."""
    name = md["metadata"]["name"]
    uri = f"models:/{model_name}/{version}"
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

    def ping(period, timeout, failures):
        return {"httpGet": {"path": "/ping", "port": "http"}, "periodSeconds": period,
                "timeoutSeconds": timeout, "failureThreshold": failures}

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{name}-{leg}",
            "namespace": md["metadata"]["namespace"],
            "labels": labels(md, leg),
            "ownerReferences": owner_references(md),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"ferroflow.dev/model-deployment": name, "ferroflow.dev/leg": leg}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {
                    "labels": labels(md, leg),
                    "annotations": {VERSION_ANNOTATION: str(version), URI_ANNOTATION: uri},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "shareProcessNamespace": True,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [{
                        "name": "download",
                        "image": f"ghcr.io/ferroflow/ferroflow:{_package_version()}",
                        "command": ["/usr/local/bin/ferroflow", "model", "download", uri, "/downloads/model"],
                        # The model is in the workspace of the resource's namespace.
                        "env": [{"name": "MLFLOW_TRACKING_URI",
                                 "value": "http://ferroflow.ferroflow-system.svc:5000"},
                                {"name": "MLFLOW_WORKSPACE", "value": md["metadata"]["namespace"]},
                                # A service-account token for a tracking server with auth on.
                                {"name": "FERROFLOW_TRACKING_TOKEN_FILE",
                                 "value": "/var/run/secrets/ferroflow/tracking/token"}],
                        "volumeMounts": [{"name": "model", "mountPath": "/downloads"},
                                         {"name": "tracking-token", "readOnly": True,
                                          "mountPath": "/var/run/secrets/ferroflow/tracking"}],
                        "securityContext": restricted,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                    }],
                    "containers": [{
                        "name": "server",
                        "image": "ghcr.io/mlflow/mlflow:v3.17.2",
                        "command": ["mlflow", "models", "serve", "-m", "/model", "--env-manager", "local",
                                    "-h", "0.0.0.0", "-p", "8080", "-w", "1", "-t", "60"],
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"}],
                        "volumeMounts": [{"name": "model", "mountPath": "/model", "subPath": "model",
                                          "readOnly": True}],
                        "startupProbe": ping(5, 2, 120),
                        "readinessProbe": ping(5, 2, 3),
                        "livenessProbe": ping(10, 5, 3),
                        "securityContext": restricted,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                    }],
                    "volumes": [{"name": "model", "emptyDir": {}},
                                {"name": "tracking-token", "projected": {"sources": [
                                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}}]}}],
                },
            },
        },
    }


def expected_service(md: dict, leg: str | None) -> dict:
    name = md["metadata"]["name"]
    selector = {"ferroflow.dev/model-deployment": name}
    if leg:
        selector["ferroflow.dev/leg"] = leg
    return {
        "metadata": {"name": f"{name}-{leg}" if leg else name, "labels": labels(md, leg),
                     "ownerReferences": owner_references(md)},
        "spec": {"selector": selector,
                 "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]},
    }


def tag_of(client, model_name: str, version: int, namespace: str, name: str) -> str | None:
    return client.get_model_version(model_name, str(version)).tags.get(f"ferroflow.deployment/{namespace}.{name}")


def wait_tag(client, model_name: str, version: int, namespace: str, name: str, value: str | None) -> None:
    deadline = time.monotonic() + WAIT_S
    while (found := tag_of(client, model_name, version, namespace, name)) != value:
        assert time.monotonic() < deadline, f"version {version} tag is {found!r}, expected {value!r}"
        time.sleep(0.2)


def test_follows_the_alias_moved_in_git(operator, namespace, client, unique_name):  # noqa: F811
    model_name = f"md-{unique_name}"
    register(client, model_name, 2)
    apply(namespace, registered_model(model_name, {"champion": 1}, owned_metadata=False))
    wait_ready(namespace, "registeredmodel/churn")
    apply(namespace, model_deployment("churn", "  modelRef: {name: churn}\n  alias: champion\n  replicas: 2\n"))

    md = wait_until(namespace, "modeldeployment/churn", lambda o: serving(o, 1), "serving version 1")
    status = md["status"]
    assert status["resolvedVersion"] == 1
    assert status["modelName"] == model_name
    assert status["modelUri"] == f"models:/{model_name}/1"
    assert status["url"] == f"http://churn.{namespace}.svc:8080"
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert status["legs"] == [{
        "name": "champion", "deployment": "churn-champion", "weight": 100, "resolvedVersion": 1,
        "servingVersion": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
    }]
    assert condition(md, "Stalled").get("status") == "False"
    is_subset(expected_deployment(md, "champion", 2, model_name, 1), get(namespace, "deployment/churn-champion"))
    is_subset(expected_service(md, None), get(namespace, "service/churn"))
    # One leg: no per-leg Service; the HTTPRoute sends everything to the Service.
    assert get(namespace, "service/churn-champion") is None
    route = get(namespace, "httproute/churn")
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "churn", "port": 8080, "weight": 100}]
    # No Gateway named, none set on the operator: the route attaches to none.
    assert "parentRefs" not in route["spec"]
    wait_event(namespace, "churn", "RolloutComplete", "version 1")
    wait_tag(client, model_name, 1, namespace, "churn", "serving")
    columns = kubectl("get", "-n", namespace, "mldeploy", "churn", "--no-headers").stdout.split()
    assert columns[:6] == ["churn", model_name, "champion", "1", "2", "Reconciled"]

    # Git moves the alias: a rolling update to version 2, then Ready on it.
    apply(namespace, registered_model(model_name, {"champion": 2}, owned_metadata=False))
    wait_template(namespace, "churn-champion", 2)
    md = wait_until(namespace, "modeldeployment/churn", lambda o: serving(o, 2), "serving version 2")
    assert md["status"]["modelUri"] == f"models:/{model_name}/2"
    wait_event(namespace, "churn", "RolloutStarted", "version 2")
    wait_event(namespace, "churn", "RolloutComplete", "version 2")
    replica_sets = json.loads(kubectl("get", "replicasets", "-n", namespace, "-l",
                                      "ferroflow.dev/leg=champion", "-o", "json").stdout)["items"]
    assert len(replica_sets) == 2, "a move is an ordinary rolling update: a new ReplicaSet"
    # The registry says where each version serves.
    wait_tag(client, model_name, 2, namespace, "churn", "serving")
    wait_tag(client, model_name, 1, namespace, "churn", None)

    # Deleting the resource takes its children with it (the garbage collector).
    kubectl("delete", "-n", namespace, "modeldeployment/churn")
    for child in ("deployment/churn-champion", "service/churn", "httproute/churn"):
        wait_until(namespace, child, lambda o: o is None, f"{child} garbage-collected")
    deadline = time.monotonic() + WAIT_S
    while kubectl("get", "-n", namespace, "pods", "-l", "ferroflow.dev/model-deployment=churn",
                  "-o", "name").stdout.strip():
        assert time.monotonic() < deadline, "the Pods were not garbage-collected in time"
        time.sleep(0.2)
    # The registry forgets it too (the finalizer): version 2 no longer says it serves here.
    wait_tag(client, model_name, 2, namespace, "churn", None)
    wait_until(namespace, "modeldeployment/churn", lambda o: o is None, "the ModelDeployment gone")


def promotion_tag(client, model_name: str, version: int, namespace: str, name: str) -> str | None:
    return client.get_model_version(model_name, str(version)).tags.get(
        f"ferroflow.deployment/{namespace}.{name}.promotion")


def wait_promotion_tag(client, model_name: str, version: int, namespace: str, name: str, value: str | None) -> None:
    deadline = time.monotonic() + WAIT_S
    while (found := promotion_tag(client, model_name, version, namespace, name)) != value:
        assert time.monotonic() < deadline, f"version {version} promotion tag is {found!r}, expected {value!r}"
        time.sleep(0.2)


def test_follows_the_alias_moved_through_the_api(operator, namespace, client, api, unique_name):  # noqa: F811
    model_name = f"md-{unique_name}"
    register(client, model_name, 3)
    client.set_registered_model_alias(model_name, "champion", "1")
    apply(namespace, model_deployment("api", f"  modelName: {model_name}\n  alias: champion\n"))
    wait_until(namespace, "modeldeployment/api", lambda o: serving(o, 1), "serving version 1")

    started = time.monotonic()
    client.set_registered_model_alias(model_name, "champion", "3")
    wait_template(namespace, "api-champion", 3)
    moved_in = time.monotonic() - started
    md = wait_until(namespace, "modeldeployment/api", lambda o: serving(o, 3), "serving version 3")
    assert md["status"]["resolvedVersion"] == 3
    # The store's NOTIFY wakes the resource: far sooner than any resync.
    assert moved_in < 10, f"the Deployment took {moved_in:.1f}s to follow the alias"
    # The served version names the history entry that made it champion: who, how, which rules.
    history = api.get("/api/2.0/ferroflow/promotions", params={"name": model_name, "target": "champion"}).json()
    to_three = [e for e in history["promotions"] if e["to_version"] == 3 and e["allowed"]][-1]
    assert (to_three["actor"], to_three["path"], to_three["from_version"]) == ("anonymous", "api", 1)
    wait_tag(client, model_name, 3, namespace, "api", "serving")
    wait_promotion_tag(client, model_name, 3, namespace, "api", str(to_three["id"]))

    # Suspended: an alias move changes nothing until resumed.
    kubectl("patch", "-n", namespace, "modeldeployment/api", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_until(namespace, "modeldeployment/api",
               lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"], "suspend observed")
    before = get(namespace, "deployment/api-champion")
    client.set_registered_model_alias(model_name, "champion", "2")
    # A negative: for five times the latency target (1 s at p99) the Deployment must not change.
    with pytest.raises(AssertionError, match="not reached"):
        wait_until(namespace, "deployment/api-champion",
                   lambda o: o["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"],
                   "a change while suspended", timeout=5)
    assert template_version(namespace, "api-champion") == "3"
    kubectl("patch", "-n", namespace, "modeldeployment/api", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_template(namespace, "api-champion", 2)
    wait_until(namespace, "modeldeployment/api", lambda o: serving(o, 2), "serving version 2")
    history = api.get("/api/2.0/ferroflow/promotions", params={"name": model_name, "target": "champion"}).json()
    wait_promotion_tag(client, model_name, 2, namespace, "api", str(history["promotions"][-1]["id"]))
    wait_promotion_tag(client, model_name, 3, namespace, "api", None)

    # The alias removed: AliasNotFound, and the running Deployment stays as it is.
    client.delete_registered_model_alias(model_name, "champion")
    md = wait_until(namespace, "modeldeployment/api",
                    lambda o: condition(o, "Ready").get("reason") == "AliasNotFound", "AliasNotFound")
    assert condition(md, "Ready")["status"] == "False"
    assert "champion" in condition(md, "Ready")["message"]
    deployment = get(namespace, "deployment/api-champion")
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] == "2"
    assert deployment["status"].get("readyReplicas") == 1
    assert md["status"]["servingVersion"] == 2


def test_two_legs_split_by_weight_and_a_dropped_leg_is_pruned(operator, namespace, client, unique_name):  # noqa: F811
    model_name = f"md-{unique_name}"
    register(client, model_name, 2)
    client.set_registered_model_alias(model_name, "champion", "1")
    client.set_registered_model_alias(model_name, "challenger", "2")
    spec = (f"  modelName: {model_name}\n  replicas: 10\n  traffic:\n"
            "  - {alias: champion, weight: 90}\n  - {alias: challenger, weight: 10}\n"
            "  gateway: {name: models, namespace: gateways, sectionName: http}\n")
    apply(namespace, model_deployment("split", spec))
    md = wait_until(namespace, "modeldeployment/split", lambda o: serving(o, 1), "both legs serving")
    legs = {leg["name"]: leg for leg in md["status"]["legs"]}
    assert legs["champion"]["servingVersion"] == 1 and legs["champion"]["replicas"] == 9
    assert legs["challenger"]["servingVersion"] == 2 and legs["challenger"]["replicas"] == 1
    assert md["status"]["readyReplicas"] == 10
    is_subset(expected_deployment(md, "champion", 9, model_name, 1), get(namespace, "deployment/split-champion"))
    is_subset(expected_deployment(md, "challenger", 1, model_name, 2), get(namespace, "deployment/split-challenger"))
    for leg in (None, "champion", "challenger"):
        is_subset(expected_service(md, leg), get(namespace, f"service/split-{leg}" if leg else "service/split"))
    route = get(namespace, "httproute/split")
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("split-champion", 90), ("split-challenger", 10)]
    # Attached to the Gateway the resource names (the API server adds the defaults).
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "models", "namespace": "gateways", "sectionName": "http"}]
    wait_tag(client, model_name, 1, namespace, "split", "serving")
    wait_tag(client, model_name, 2, namespace, "split", "serving")

    # Promotion done: back to one alias; the challenger's objects go.
    kubectl("patch", "-n", namespace, "modeldeployment/split", "--type=json", "-p", json.dumps([
        {"op": "remove", "path": "/spec/traffic"},
        {"op": "add", "path": "/spec/alias", "value": "champion"},
    ]))
    for child in ("deployment/split-challenger", "service/split-challenger", "service/split-champion"):
        wait_until(namespace, child, lambda o: o is None, f"{child} pruned")
    route = wait_until(namespace, "httproute/split",
                       lambda o: len(o["spec"]["rules"][0]["backendRefs"]) == 1, "one backend")
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == "split"
    wait_until(namespace, "modeldeployment/split", lambda o: serving(o, 1), "serving version 1")
    wait_tag(client, model_name, 2, namespace, "split", None)


def test_a_version_that_cannot_roll_out_is_rolled_back(operator, namespace, client, unique_name):  # noqa: F811
    model_name = f"md-{unique_name}"
    register(client, model_name, 2)
    client.set_registered_model_alias(model_name, "champion", "1")
    apply(namespace, model_deployment("guard", f"  modelName: {model_name}\n  alias: champion\n"
                                               "  progressDeadlineSeconds: 30\n"))
    wait_until(namespace, "modeldeployment/guard", lambda o: serving(o, 1), "serving version 1")
    # A quota of one Pod: the new version's surge Pod is refused, so its rollout makes no
    # progress and the Deployment controller gives up after the progress deadline.
    apply(namespace, """
        apiVersion: v1
        kind: ResourceQuota
        metadata: {name: one-pod}
        spec: {hard: {pods: "1"}}
        """)
    wait_until(namespace, "resourcequota/one-pod",
               lambda o: (o.get("status") or {}).get("used", {}).get("pods") == "1", "quota usage counted")

    client.set_registered_model_alias(model_name, "champion", "2")
    wait_template(namespace, "guard-champion", 2)
    md = wait_until(namespace, "modeldeployment/guard",
                    lambda o: condition(o, "Ready").get("reason") == "RolledBack", "RolledBack", timeout=WAIT_S + 60)
    ready = condition(md, "Ready")
    assert ready["status"] == "False"
    assert "version 2" in ready["message"] and "rolled back to version 1" in ready["message"]
    assert condition(md, "Stalled")["status"] == "True"
    assert condition(md, "Stalled")["reason"] == "RolledBack"
    assert md["status"]["servingVersion"] == 1
    assert md["status"]["resolvedVersion"] == 2
    assert md["status"]["legs"][0]["failedVersion"] == 2
    wait_template(namespace, "guard-champion", 1)
    wait_event(namespace, "guard", "RolledBack", "version 2")
    wait_tag(client, model_name, 2, namespace, "guard", "rolled-back")
    wait_tag(client, model_name, 1, namespace, "guard", "serving")
    # The alias is git's or the API's, never the operator's.
    assert client.get_model_version_by_alias(model_name, "champion").version == "2"

    # The alias moves again: the failure is forgotten.
    kubectl("delete", "-n", namespace, "resourcequota/one-pod")
    client.set_registered_model_alias(model_name, "champion", "1")
    md = wait_until(namespace, "modeldeployment/guard",
                    lambda o: serving(o, 1) and condition(o, "Ready").get("reason") == "Reconciled", "Ready again")
    assert "failedVersion" not in md["status"]["legs"][0]
    wait_tag(client, model_name, 2, namespace, "guard", None)
