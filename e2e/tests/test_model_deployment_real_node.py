"""ModelDeployment serving for real on the e2e cluster's real node (issue #14): the operator's
Pods download a scikit-learn model the mlflow client registered (init container from ferroflow's
image, e2e/images/ferroflow.sh) and serve it with `mlflow models serve` from the Python image
(e2e/images/python.sh). An alias move rolls out a new version with no failed request; a version
whose model cannot load is rolled back from its crash-looping Pods while the previous version
keeps answering. The whole loop of issue #15 too: a ProjectRun trains e2e/projects/sklearn-train
in a Pod, registers its model with alias `challenger`, and a ModelDeployment serves it.

The operator needs the Postgres store (registry changes made through the REST API reach it by
NOTIFY), so these tests run on the postgres backend, unlike the other real-node tests: the
server under test listens on loopback and a relay on the bridge address (test_real_node.Relay)
lets the Pods reach it. There is no kube-proxy on the node, so a poller plays the Service: each
request goes to a ready endpoint of the ModelDeployment's Service, read from its EndpointSlices.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import requests
from helpers import fit_line
from kubectl_helpers import KUBECONFIG, KUBECTL, apply, get, kubectl, wait_until
from test_gitops import _ferroflow_bin, condition, running_operator
from test_helm_install import Poller, ServiceClient, ferroflow_image
from test_model_deployment import events, model_deployment, serving, wait_tag, wait_template
from test_project_run import phase
from test_real_node import NODE_IP, NODE_NAME, POD_WAIT_S, PYTHON_IMAGE, TAINT, Relay, real_node  # noqa: F401

# What a request costs at most, and how often the poller sends one.
POLL_INTERVAL_S = 0.1
INPUTS = [[0.0], [1.0], [2.0]]
# The example project the whole-loop test trains (issue #15).
SKLEARN_PROJECT = Path(__file__).resolve().parent.parent / "projects" / "sklearn-train"
# The spec lines of a resource whose Pods run in the Python image on the real node (small
# requests: the node has 2 cores for every test's Pods).
ON_THE_REAL_NODE = f"""\
  image: {PYTHON_IMAGE}
  nodeSelector: {{"{TAINT}": "true"}}
  tolerations: [{{key: "{TAINT}", operator: Exists, effect: NoSchedule}}]
  resources: {{requests: {{cpu: 100m, memory: 256Mi}}, limits: {{cpu: "1", memory: 1Gi}}}}
"""
# Each version's offset (fit_line: y = 2x + offset): its predictions tell it apart.
OFFSETS = {1: 1.0, 2: 10.0}


def predictions(version: int) -> list[float]:
    return [2 * x[0] + OFFSETS[version] for x in INPUTS]


@pytest.fixture(scope="module")
def serving_operator(server, real_node, tmp_path_factory):
    """The operator with the settings real Pods need: the server as Pods reach it (a relay on
    the bridge address) and ferroflow's image of the binary under test for the init container."""
    if server.backend != "postgres":
        pytest.skip("the operator's e2e runs on the postgres backend")
    binary = _ferroflow_bin()
    repository, tag = ferroflow_image(binary)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    relay = Relay(NODE_IP, (host, int(port)))
    env = {"FERROFLOW_TRACKING_URL": relay.url, "FERROFLOW_IMAGE": f"{repository}:{tag}"}
    try:
        with running_operator(server, tmp_path_factory, env=env) as op:
            yield op
    finally:
        relay.close()


@pytest.fixture
def namespace(serving_operator, request, monkeypatch):
    name = f"serve-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    # The test's clients work in the namespace's workspace, where its resources' models are.
    monkeypatch.setenv("MLFLOW_WORKSPACE", name)
    yield name
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(kubectl("get", "pods,deployments,replicasets,endpointslices", "-n", name, "-o", "wide",
                      check=False).stdout)
        print(kubectl("get", "modeldeployments", "-n", name, "-o", "yaml", check=False).stdout)
        print(kubectl("get", "events", "-n", name, check=False).stdout)
        print(serving_operator.log_tail())
    # Foreground: returns once the Deployments' Pods are gone (their containers and networks
    # with them). The namespace is deleted after: its controller, seeing Pods still
    # terminating, would check again only after their whole grace period.
    kubectl("delete", "modeldeployments", "--all", "-n", name, "--cascade=foreground",
            "--timeout=120s", check=False)
    kubectl("delete", "namespace", name, "--timeout=120s", check=False)


def log_version(model_name: str, offset: float) -> None:
    import mlflow.sklearn

    model, _ = fit_line(offset)
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name,
                                 pip_requirements=["scikit-learn"])


def log_unloadable_version(model_name: str, tmp_path) -> None:
    """A model whose pickle names a module only this process has: loading it in the image fails
    with ModuleNotFoundError, as a model trained with a team's own feature code would."""
    import importlib

    import mlflow.sklearn
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    module = f"ff_features_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("def doubled(x):\n    return x * 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        features = importlib.import_module(module)
        line, _ = fit_line(100.0)
        pipeline = make_pipeline(FunctionTransformer(features.doubled), line)
        with mlflow.start_run():
            mlflow.sklearn.log_model(pipeline, name="model", registered_model_name=model_name,
                                     serialization_format="cloudpickle", pip_requirements=["scikit-learn"])
    finally:
        sys.path.remove(str(tmp_path))


def answered_version(address: str, response: requests.Response) -> int | str:
    """Which version answered, by its predictions (the text when it is none of them)."""
    got = response.json().get("predictions")
    for version in OFFSETS:
        if got == pytest.approx(predictions(version)):
            return version
    return f"{address}: {response.text[:200]}"


def pods_of(namespace: str, name: str) -> list[dict]:
    listed = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"ferroflow.dev/model-deployment={name}",
                                "-o", "json").stdout)["items"]
    return [p for p in listed if p["metadata"].get("deletionTimestamp") is None]


def pod_version(pod: dict) -> str:
    return pod["metadata"]["annotations"]["ferroflow.dev/model-version"]


def only_version_runs(namespace: str, name: str, version: int, replicas: int) -> bool:
    """Every Pod of the ModelDeployment (terminating ones too) runs `version`, `replicas` ready."""
    listed = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"ferroflow.dev/model-deployment={name}",
                                "-o", "json").stdout)["items"]
    ready = [p for p in listed if any(c["type"] == "Ready" and c["status"] == "True"
                                      for c in p["status"].get("conditions", []))]
    return (all(pod_version(p) == str(version) for p in listed) and len(listed) == replicas
            and len(ready) == replicas)


class ServerExits:
    """How each deleted Pod's `server` container ended, from a watch on the Pods: the exit code
    the kubelet reported once the Pod was being deleted (137 = killed when its grace period ran
    out, i.e. it ignored SIGTERM)."""

    def __init__(self, namespace: str, name: str):
        self.exits: dict[str, int] = {}
        self._watch = subprocess.Popen(
            [KUBECTL, f"--kubeconfig={KUBECONFIG}", "get", "pods", "-n", namespace, "-l",
             f"ferroflow.dev/model-deployment={name}", "--watch", "-o", "json"],
            stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        decoder = json.JSONDecoder()
        pending = ""
        for line in self._watch.stdout:
            pending += line
            while pending.strip():
                try:
                    pod, end = decoder.raw_decode(pending.lstrip())
                except ValueError:
                    break  # an object split over lines: wait for the rest
                pending = pending.lstrip()[end:]
                if pod["metadata"].get("deletionTimestamp") is None:
                    continue
                for status in pod.get("status", {}).get("containerStatuses", []):
                    terminated = status.get("state", {}).get("terminated")
                    if status["name"] == "server" and terminated:
                        self.exits[pod["metadata"]["name"]] = terminated["exitCode"]

    def wait_for(self, pods: list[str], timeout: float = 60) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while not all(pod in self.exits for pod in pods):
            assert time.monotonic() < deadline, f"no exit seen for {pods}: {self.exits}"
            time.sleep(0.2)
        return {pod: self.exits[pod] for pod in pods}

    def close(self):
        self._watch.terminate()
        self._watch.wait(timeout=10)
        self._thread.join(timeout=10)


def poll(namespace: str, service: str) -> tuple[Poller, list]:
    """A Service client polling /invocations every 100 ms; also the answers in order."""
    order: list = []

    def answer(address, response):
        version = answered_version(address, response)
        order.append(version)
        return version

    client = ServiceClient(namespace, service, port=8080)
    return Poller(client, "/invocations", interval=POLL_INTERVAL_S, json={"inputs": INPUTS}, answer=answer), order


def test_pods_serve_the_alias_roll_out_its_moves_without_a_failed_request_and_roll_back_an_unloadable_version(
        serving_operator, namespace, client, tracking_uri, unique_name, tmp_path):
    model_name = f"serve-{unique_name}"
    mlflow.set_experiment(model_name)
    log_version(model_name, OFFSETS[1])
    log_version(model_name, OFFSETS[2])
    log_unloadable_version(model_name, tmp_path)
    client.set_registered_model_alias(model_name, "champion", "1")

    name = "churn"
    apply(namespace, model_deployment(name, f"""\
  modelName: {model_name}
  alias: champion
  replicas: 2
{ON_THE_REAL_NODE}"""))
    wait_until(namespace, f"modeldeployment/{name}", lambda o: serving(o, 1), "serving version 1",
               timeout=POD_WAIT_S * 2)
    pods = pods_of(namespace, name)
    assert len(pods) == 2 and all(p["spec"]["nodeName"] == NODE_NAME for p in pods)
    for pod in pods:
        r = requests.post(f"http://{pod['status']['podIP']}:8080/invocations", json={"inputs": INPUTS}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == pytest.approx(predictions(1))
    wait_tag(client, model_name, 1, namespace, name, "serving")

    # The alias moves through the client: a rolling update to version 2 while a client polls.
    exits = ServerExits(namespace, name)
    poller, order = poll(namespace, name)
    client.set_registered_model_alias(model_name, "champion", "2")
    wait_template(namespace, f"{name}-champion", 2)
    wait_until(namespace, f"modeldeployment/{name}", lambda o: serving(o, 2), "serving version 2",
               timeout=POD_WAIT_S * 2)
    wait_until(namespace, f"deployment/{name}-champion",
               lambda o: only_version_runs(namespace, name, 2, 2), "only version 2's Pods", timeout=POD_WAIT_S)
    # The poller must see the endpoints settle on version 2.
    deadline = time.monotonic() + 30
    while order[-10:] != [2] * 10:
        assert time.monotonic() < deadline, f"answers did not settle on version 2: {order[-20:]}"
        time.sleep(0.2)
    total = poller.finish()
    print(f"alias move 1 -> 2: {total} answers {poller.answers}, {len(poller.failures)} failed requests")
    assert poller.failures == [], poller.failures[:20]
    assert set(poller.answers) == {1, 2}, poller.answers
    # Version 1 answered until version 2 took over; never back.
    first_two = order.index(2)
    assert set(order[:first_two]) == {1}
    assert total >= 50, "too few requests to say anything about the rollout"
    wait_tag(client, model_name, 2, namespace, name, "serving")
    # Version 1's servers stopped on SIGTERM (after the drain), not killed at the end of the
    # grace period: `mlflow models serve` is not the container's PID 1 (shareProcessNamespace).
    stopped = exits.wait_for([p["metadata"]["name"] for p in pods])
    exits.close()
    assert all(code in (0, 143) for code in stopped.values()), stopped
    wait_tag(client, model_name, 1, namespace, name, None)

    # Version 3 cannot load: its Pods crash-loop, the operator rolls back to version 2, which
    # answers every request meanwhile.
    poller, order = poll(namespace, name)
    started = time.monotonic()
    client.set_registered_model_alias(model_name, "champion", "3")
    wait_template(namespace, f"{name}-champion", 3)
    md = wait_until(namespace, f"modeldeployment/{name}",
                    lambda o: condition(o, "Ready").get("reason") == "RolledBack", "RolledBack",
                    timeout=POD_WAIT_S)
    rolled_back_in = time.monotonic() - started
    ready = condition(md, "Ready")
    assert ready["status"] == "False"
    assert condition(md, "Stalled")["status"] == "True"
    assert condition(md, "Stalled")["reason"] == "RolledBack"
    assert "version 3" in ready["message"] and "rolled back to version 2" in ready["message"], ready
    # Why, from the Pods: the container's crashes and its last log line (MLflow's own wrapper
    # exception ends the log; the ModuleNotFoundError is above it).
    # (At least two crashes; CrashLoopBackOff is named when the Pod was seen backing off.)
    assert re.search(r"container server crashed \d+ times(, CrashLoopBackOff)?; last exit code 1",
                     ready["message"]), ready
    assert md["status"]["servingVersion"] == 2 and md["status"]["resolvedVersion"] == 3
    assert md["status"]["legs"][0]["failedVersion"] == 3
    # Far sooner than the progress deadline (600 s): the Pods told.
    assert rolled_back_in < 300, f"rolled back after {rolled_back_in:.0f}s"
    wait_template(namespace, f"{name}-champion", 2)
    warnings = [e for e in events(namespace, name) if e.get("reason") == "RolledBack"]
    assert warnings and warnings[0]["type"] == "Warning", warnings
    wait_until(namespace, f"deployment/{name}-champion",
               lambda o: only_version_runs(namespace, name, 2, 2), "version 3's Pods gone", timeout=POD_WAIT_S)
    # Not tried again while the alias stays: no Pod of version 3 comes back.
    before = get(namespace, f"deployment/{name}-champion")
    with pytest.raises(AssertionError, match="not reached"):
        wait_until(namespace, f"deployment/{name}-champion",
                   lambda o: o["metadata"]["generation"] != before["metadata"]["generation"]
                   or any(pod_version(p) == "3" for p in pods_of(namespace, name)),
                   "version 3 tried again", timeout=15)
    total = poller.finish()
    print(f"rollback of unloadable version 3 after {rolled_back_in:.0f}s: {total} answers {poller.answers}, "
          f"{len(poller.failures)} failed requests")
    assert poller.failures == [], poller.failures[:20]
    assert poller.answers == {2: total}, poller.answers
    wait_tag(client, model_name, 3, namespace, name, "rolled-back")
    wait_tag(client, model_name, 2, namespace, name, "serving")
    assert client.get_model_version_by_alias(model_name, "champion").version == "3"


def test_a_project_run_trains_on_the_real_node_registers_a_challenger_that_a_model_deployment_serves(
        serving_operator, namespace, client, tracking_uri, unique_name, tmp_path):
    """The whole loop of issue #15: train (ProjectRun) -> register (registerModel) -> serve
    (ModelDeployment following the alias), in real Pods."""
    import mlflow.sklearn
    from sklearn.datasets import load_diabetes

    # The project reaches the Pod as `source`: its files logged to a run of this server, which
    # the init container downloads through ferroflow (the Python image does not hold it).
    mlflow.set_experiment(f"sources-{unique_name}")
    with mlflow.start_run() as source_run:
        mlflow.log_artifacts(str(SKLEARN_PROJECT), "project")
    model_name = f"loop-{unique_name}"
    experiment = f"train-{unique_name}"
    apply(namespace, f"""\
apiVersion: ferroflow.dev/v1alpha1
kind: ProjectRun
metadata:
  name: train
spec:
  experimentName: {experiment}
  source: runs:/{source_run.info.run_id}/project
  parameters: {{alpha: "0.3"}}
  registerModel: {{modelName: {model_name}, artifactPath: model, alias: challenger}}
{ON_THE_REAL_NODE}""")
    obj = wait_until(namespace, "projectrun/train", lambda o: phase(o) in ("Succeeded", "Failed", "Killed"),
                     "the run's end", timeout=POD_WAIT_S * 2)
    status = obj["status"]
    run_id = status["runId"]
    # The Pod's log is stored before the phase is: it says why, should the run have failed.
    log = Path(client.download_artifacts(run_id, "ferroflow/pod.log", str(tmp_path))).read_text()
    assert phase(obj) == "Succeeded", (status, log[-3000:])
    assert "trained ElasticNet(alpha=0.3, l1_ratio=0.1)" in log
    assert get(namespace, f"pod/{status['podName']}")["spec"]["nodeName"] == NODE_NAME
    status = wait_until(namespace, "projectrun/train",
                        lambda o: o["status"].get("registeredVersion") is not None, "registeredVersion")["status"]

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["alpha"] == "0.3"
    assert {"rmse", "mae", "r2"} <= set(run.data.metrics), run.data.metrics
    assert run.data.tags["label"] == "demo run"
    assert "ferroflow/pod.log" in [a.path for a in client.list_artifacts(run_id, "ferroflow")]
    [logged] = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert logged.name == "model"

    version = client.get_model_version_by_alias(model_name, "challenger")
    assert int(version.version) == status["registeredVersion"]
    assert version.run_id == run_id

    apply(namespace, model_deployment("loop", f"""\
  modelName: {model_name}
  alias: challenger
  replicas: 1
{ON_THE_REAL_NODE}"""))
    wait_until(namespace, "modeldeployment/loop", lambda o: serving(o, int(version.version)),
               f"serving version {version.version}", timeout=POD_WAIT_S * 2)
    [pod] = pods_of(namespace, "loop")
    rows = load_diabetes().data[:3].tolist()
    r = requests.post(f"http://{pod['status']['podIP']}:8080/invocations", json={"inputs": rows}, timeout=30)
    assert r.status_code == 200, r.text
    # The trained model's own answers, loaded here from the registry.
    expected = mlflow.sklearn.load_model(f"models:/{model_name}@challenger").predict(rows).tolist()
    assert r.json()["predictions"] == pytest.approx(expected)
