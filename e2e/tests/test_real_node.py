"""Pods that really run: the real node of the e2e cluster (kubelet + containerd, e2e/cluster/node-up.sh).

A training Pod from the local Python image (e2e/images/python.sh) logs a run with the mlflow
client to the tracking server under test, which it reaches through the bridge address; a serving
Pod runs `mlflow models serve` and the test gets predictions from its Pod IP. A third Pod checks
the guards from inside: no route out of the bridge, no resolver, MLflow telemetry off.

The server under test listens on loopback only; a relay in this process listens on the bridge
address and forwards each connection to it (see `bridge_url`), so Pods never need a server bound
to 0.0.0.0.

Needs FERROFLOW_KUBECTL, FERROFLOW_KUBECONFIG and the FERROFLOW_E2E_NODE_* / _PYTHON_IMAGE
variables `eval "$(e2e/cluster/up.sh)"` prints; skipped without them (failed when CI is set) or
with FERROFLOW_E2E_REAL_NODE=0 (the switch that also keeps up.sh from starting the node).
Runs on the first selected backend only: what is under test is the node, not the store.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from helpers import fit_line
from kubectl_helpers import KUBECONFIG, KUBECTL, apply, get, kubectl, wait_until

NODE_NAME = os.environ.get("FERROFLOW_E2E_NODE_NAME")
NODE_IP = os.environ.get("FERROFLOW_E2E_NODE_IP")
NODE_SUBNET = os.environ.get("FERROFLOW_E2E_NODE_SUBNET")
BRIDGE = os.environ.get("FERROFLOW_E2E_NODE_BRIDGE")
PYTHON_IMAGE = os.environ.get("FERROFLOW_E2E_PYTHON_IMAGE")
TAINT = "ferroflow.dev/real-node"
# Python start-up in a Pod takes 4-8 s on an idle machine; this one is shared with builds.
POD_WAIT_S = float(os.environ.get("FERROFLOW_E2E_POD_WAIT", "240"))
# An address outside every range the node routes (TEST-NET-2, never assigned).
OUTSIDE_ADDRESS = "198.51.100.7"


@pytest.fixture(scope="module")
def real_node():
    if os.environ.get("FERROFLOW_E2E_REAL_NODE") == "0":
        pytest.skip("FERROFLOW_E2E_REAL_NODE=0: the cluster runs without its real node")
    missing = [name for name, value in [
        ("FERROFLOW_KUBECTL", KUBECTL), ("FERROFLOW_KUBECONFIG", KUBECONFIG),
        ("FERROFLOW_E2E_NODE_NAME", NODE_NAME), ("FERROFLOW_E2E_NODE_IP", NODE_IP),
        ("FERROFLOW_E2E_PYTHON_IMAGE", PYTHON_IMAGE),
    ] if not value]
    if missing:
        message = (f"{', '.join(missing)} unset: start the e2e cluster with its real node "
                   "with `eval \"$(e2e/cluster/up.sh)\"`")
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so the real node is required)")
        pytest.skip(message)
    return NODE_NAME


@pytest.fixture
def one_backend(request, backend):
    """Run once, on the first backend selected: the store is not what these tests are about."""
    first = request.config.getoption("--backends").split(",")[0].strip()
    if backend != first:
        pytest.skip(f"real-node tests run on the {first} backend only")
    return backend


class Relay:
    """Listens on the bridge address and copies each connection to and from the server on
    loopback: Pods reach the server under test without it listening anywhere but 127.0.0.1."""

    def __init__(self, listen_host: str, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server((listen_host, 0))
        self.url = f"http://{listen_host}:{self.listener.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed.set()
        self.listener.close()


@pytest.fixture
def bridge_url(server, real_node, one_backend):
    """The server under test as Pods see it: http://<bridge address>:<relay port>."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    relay = Relay(NODE_IP, (host, int(port)))
    yield relay.url
    relay.close()


@pytest.fixture
def namespace(real_node, request):
    name = f"real-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    yield name
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(kubectl("get", "pods", "-n", name, "-o", "wide", check=False).stdout)
        print(kubectl("get", "events", "-n", name, check=False).stdout)
    # Wait: the Pods' containers and networks are gone when the namespace is.
    kubectl("delete", "namespace", name, "--timeout=120s", check=False)


def pod_manifest(name: str, command: list[str], env: dict[str, str] | None = None,
                 volumes: list[dict] | None = None, mounts: list[dict] | None = None,
                 restart: str = "Never", probe: dict | None = None) -> str:
    container = {
        "name": "main",
        "image": PYTHON_IMAGE,
        # Images are imported into the node's containerd, never pulled.
        "imagePullPolicy": "Never",
        "command": command,
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "volumeMounts": mounts or [],
        "resources": {"limits": {"memory": "1Gi", "cpu": "1"}},
    }
    if probe:
        container["readinessProbe"] = probe
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            # Only Pods that ask for the real node land there; kwok carries every other Pod.
            "nodeSelector": {TAINT: "true"},
            "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "restartPolicy": restart,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
            "volumes": volumes or [],
        },
    }
    return json.dumps(pod)


def script_volume(namespace: str, name: str, script: str) -> tuple[list[dict], list[dict]]:
    """A ConfigMap holding the script, mounted at /scripts (the kubelet fetches it)."""
    kubectl("create", "configmap", name, "-n", namespace, f"--from-literal=main.py={textwrap.dedent(script)}")
    return ([{"name": "scripts", "configMap": {"name": name}}],
            [{"name": "scripts", "mountPath": "/scripts", "readOnly": True}])


def wait_finished(namespace: str, pod: str) -> dict:
    obj = wait_until(namespace, f"pod/{pod}",
                     lambda o: o is not None and o["status"].get("phase") in ("Succeeded", "Failed"),
                     "phase Succeeded or Failed", timeout=POD_WAIT_S)
    assert obj is not None
    return obj


def logs(namespace: str, pod: str) -> str:
    return kubectl("logs", "-n", namespace, f"pod/{pod}").stdout


def test_real_node_is_ready_beside_the_kwok_nodes(real_node):
    table = kubectl("get", "nodes", "-o", "wide").stdout
    print(table)
    nodes = {n["metadata"]["name"]: n for n in json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]}

    def is_ready(node: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

    real = nodes[NODE_NAME]
    assert is_ready(real), real["status"]["conditions"]
    assert {"key": TAINT, "effect": "NoSchedule"} in [
        {k: t[k] for k in ("key", "effect")} for t in real["spec"].get("taints", [])
    ]
    assert real["metadata"]["labels"].get(TAINT) == "true"
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert [a["address"] for a in real["status"]["addresses"] if a["type"] == "InternalIP"] == [NODE_IP]
    kwok = [n for n in nodes.values() if n["metadata"].get("labels", {}).get("type") == "kwok"]
    assert kwok and all(is_ready(n) for n in kwok), table
    for line in table.splitlines()[1:]:
        assert line.split()[1] == "Ready", table


def test_training_pod_logs_a_run_to_the_server_on_the_host(bridge_url, client, namespace, unique_name):
    volumes, mounts = script_volume(namespace, "train", """
        import os, sys
        import mlflow
        from sklearn.linear_model import LinearRegression

        mlflow.set_experiment(os.environ["EXPERIMENT"])
        with mlflow.start_run() as run:
            model = LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
            mlflow.log_param("fit_intercept", model.fit_intercept)
            mlflow.log_metric("slope", float(model.coef_[0]))
            mlflow.set_tag("node", os.environ["NODE_NAME"])
        print("RUN_ID", run.info.run_id, "on", sys.version.split()[0], "mlflow", mlflow.__version__)
    """)
    apply(namespace, pod_manifest(
        "train", ["python3", "/scripts/main.py"],
        env={"MLFLOW_TRACKING_URI": bridge_url, "EXPERIMENT": unique_name, "NODE_NAME": NODE_NAME},
        volumes=volumes, mounts=mounts,
    ))
    pod = wait_finished(namespace, "train")
    output = logs(namespace, "train")
    print(output)
    assert pod["status"]["phase"] == "Succeeded", output
    assert pod["spec"]["nodeName"] == NODE_NAME
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0
    assert pod["status"]["podIP"].startswith(NODE_IP.rsplit(".", 1)[0] + ".")

    words = next(line for line in output.splitlines() if line.startswith("RUN_ID ")).split()
    assert words[4:6] == ["mlflow", "3.17.2"]
    run = client.get_run(words[1])
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name(unique_name).experiment_id
    assert run.data.params == {"fit_intercept": "True"}
    assert run.data.metrics["slope"] == pytest.approx(2.0)
    assert run.data.tags["node"] == NODE_NAME


def test_serving_pod_answers_predictions_at_its_pod_ip(real_node, one_backend, namespace, tmp_path):
    import mlflow.sklearn

    model, inputs = fit_line(3.0)
    model_dir = tmp_path / "model"
    # cloudpickle: the image has it (skops, the default format here, is not in the image).
    mlflow.sklearn.save_model(model, model_dir, serialization_format="cloudpickle")
    apply(namespace, pod_manifest(
        "serve",
        ["mlflow", "models", "serve", "-m", "/model", "--env-manager", "local", "-h", "0.0.0.0", "-p", "8080"],
        volumes=[{"name": "model", "hostPath": {"path": str(model_dir), "type": "Directory"}}],
        mounts=[{"name": "model", "mountPath": "/model", "readOnly": True}],
        restart="Always",
        probe={"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": 1, "failureThreshold": 600},
    ))
    pod = wait_until(namespace, "pod/serve",
                     lambda o: o is not None and any(c["type"] == "Ready" and c["status"] == "True"
                                                     for c in o["status"].get("conditions", [])),
                     "Ready", timeout=POD_WAIT_S)
    ip = pod["status"]["podIP"]
    assert pod["spec"]["nodeName"] == NODE_NAME
    r = requests.post(f"http://{ip}:8080/invocations", json={"inputs": inputs.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == pytest.approx([3.0, 5.0, 7.0])


def test_guards_pods_reach_nothing_outside_the_bridge(real_node, one_backend, namespace):
    # From inside a Pod: a connection out of the bridge fails at once (no route), the routing
    # table has no default route, there is no resolver, MLflow telemetry is off.
    volumes, mounts = script_volume(namespace, "probe", f"""
        import json, os, socket, time
        started = time.monotonic()
        try:
            socket.create_connection(("{OUTSIDE_ADDRESS}", 80), timeout=10).close()
            outcome = "connected"
        except OSError as e:
            outcome = e.errno
        elapsed = time.monotonic() - started
        with open("/proc/net/route") as f:
            destinations = [line.split()[1] for line in f.readlines()[1:]]
        with open("/etc/resolv.conf") as f:
            resolv = f.read()
        print(json.dumps({{"outcome": outcome, "elapsed": elapsed, "destinations": destinations,
                           "resolv": resolv, "telemetry": os.environ.get("MLFLOW_DISABLE_TELEMETRY"),
                           "dnt": os.environ.get("DO_NOT_TRACK")}}))
    """)
    apply(namespace, pod_manifest("probe", ["python3", "/scripts/main.py"], volumes=volumes, mounts=mounts))
    pod = wait_finished(namespace, "probe")
    output = logs(namespace, "probe")
    print(output)
    assert pod["status"]["phase"] == "Succeeded", output
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen["outcome"] == errno.ENETUNREACH, seen
    assert seen["elapsed"] < 1.0, seen
    # /proc/net/route lists destinations as little-endian hex: no 00000000 (default) route.
    assert "00000000" not in seen["destinations"], seen
    routed = {socket.inet_ntoa(bytes.fromhex(d)[::-1]) for d in seen["destinations"]}
    assert routed == {NODE_SUBNET.split("/")[0], "10.96.0.0"}, seen
    # The kubelet has no resolver to give (resolvConf ""): at most the Pod's own loopback.
    nameservers = [line.split()[1] for line in seen["resolv"].splitlines() if line.startswith("nameserver")]
    assert all(ip.startswith("127.") for ip in nameservers), seen
    assert (seen["telemetry"], seen["dnt"]) == ("true", "true"), seen

    # On the host: the e2e table drops forwarded traffic that leaves the bridge; the bridge is no
    # gateway, so forwarding stays as it was before the node started.
    table = subprocess.run(["nft", "list", "table", "inet", f"ferroflow_e2e_{BRIDGE}"],
                           capture_output=True, text=True, check=True).stdout
    print(table)
    assert f'iifname "{BRIDGE}" oifname != "{BRIDGE}"' in table and "drop" in table
    record = Path(os.environ.get("FERROFLOW_E2E_HOST_SETTINGS_RECORD", "/run/ferroflow-e2e/host-settings.before"))
    before = dict(line.split("=", 1) for line in record.read_text().split())
    now = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    print(f"net.ipv4.ip_forward before the node: {before['net.ipv4.ip_forward']}, now: {now}")
    assert now == before["net.ipv4.ip_forward"]


def test_ferroflow_image_serves_with_the_dockerfiles_defaults(request, real_node, one_backend, namespace):
    # ferroflow's own image (e2e/images/ferroflow.sh: the binary under test, the Dockerfile's
    # entrypoint, command and user), run with nothing but the image's defaults.
    binary = request.config.getoption("--ferroflow-bin")
    if not binary:
        pytest.skip("needs FERROFLOW_BIN: the image packs the binary under test")
    images = Path(__file__).resolve().parents[1] / "images"
    built = subprocess.run(["bash", str(images / "ferroflow.sh"), binary],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    archive, ref = built.stdout.split()[-2:]
    imported = subprocess.run(["bash", str(images / "import.sh"), archive, ref],
                              capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    pod = json.loads(pod_manifest("ferroflow", [], probe={
        "httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 1, "failureThreshold": 300}, restart="Always"))
    container = pod["spec"]["containers"][0]
    container["image"] = ref
    del container["command"]
    apply(namespace, json.dumps(pod))
    obj = wait_until(namespace, "pod/ferroflow",
                     lambda o: o is not None and any(c["type"] == "Ready" and c["status"] == "True"
                                                     for c in o["status"].get("conditions", [])),
                     "Ready", timeout=POD_WAIT_S)
    from mlflow.tracking import MlflowClient

    in_pod = MlflowClient(f"http://{obj['status']['podIP']}:5000")
    experiment_id = in_pod.create_experiment("made-in-a-pod")
    assert in_pod.get_experiment_by_name("made-in-a-pod").experiment_id == experiment_id
    assert obj["spec"]["nodeName"] == NODE_NAME
