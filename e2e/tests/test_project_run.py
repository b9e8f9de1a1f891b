"""ProjectRun against a real kube-apiserver with kwok Pods (issue #15).

The operator (test_gitops's fixture: its own ServiceAccount, the server's Postgres store)
creates the MLflow run first, then the Pod that runs it; kwok drives the Pod to Succeeded or
Failed when a test annotates it (`e2e.ferroflow.dev/outcome`, see e2e/cluster/kwok-stages.yaml).
"""

from __future__ import annotations

import json
import textwrap
import time

from kubectl_helpers import WAIT_S, apply, get, kubectl, wait_until
from test_gitops import condition, current, namespace, operator  # noqa: F401 (fixtures)

RUN_UID_TAG = "ferroflow.dev/project-run-uid"
OUTCOME = "e2e.ferroflow.dev/outcome"


def project_run(name: str, experiment: str, extra: str = "") -> str:
    return f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: ProjectRun
        metadata:
          name: {name}
        spec:
          experimentName: {experiment}
          image: python:3.12
          projectDir: /app
          entryPoint: train
          parameters:
            alpha: "0.5"
        {extra}"""


def phase(obj: dict | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def wait_phase(ns: str, name: str, expected: str) -> dict:
    obj = wait_until(ns, f"projectrun/{name}", lambda o: o is not None and current(o) and phase(o) == expected,
                     f"phase {expected}")
    assert obj is not None
    return obj


def set_outcome(ns: str, pod: str, outcome: str) -> None:
    kubectl("annotate", "-n", ns, f"pod/{pod}", f"{OUTCOME}={outcome}")


def contains(actual, expected, path: str = "") -> None:
    """`expected` is a part of `actual`: the API server adds defaults, never removes what we set."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing in {json.dumps(actual)[:500]}"
            contains(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        # The ServiceAccount admission plugin adds the API token volume and its mounts.
        if isinstance(actual, list):
            actual = [item for item in actual
                      if not (isinstance(item, dict) and str(item.get("name", "")).startswith("kube-api-access-"))]
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            contains(a, e, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def start(ns: str, name: str, experiment: str, extra: str = "") -> tuple[dict, dict]:
    """Applies a ProjectRun and waits for its run and its Running Pod."""
    apply(ns, project_run(name, experiment, extra))
    obj = wait_phase(ns, name, "Running")
    pod = get(ns, f"pod/{obj['status']['podName']}")
    assert pod is not None
    return obj, pod


def test_a_project_run_creates_its_run_then_a_pod_and_finishes(operator, namespace, client, unique_name):  # noqa: F811
    experiment = f"exp-{unique_name}"
    obj, pod = start(namespace, "train", experiment)
    status = obj["status"]
    run_id = status["runId"]
    uid = obj["metadata"]["uid"]
    assert status["experimentName"] == experiment
    assert status["podName"] == "train-run"
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "train"
    assert run.data.tags[RUN_UID_TAG] == uid
    assert client.get_experiment_by_name(experiment).experiment_id == status["experimentId"]

    tracking = "http://ferroflow.ferroflow-system.svc:5000/"
    contains(pod, {
        "metadata": {
            "labels": {
                "app.kubernetes.io/name": "mlflow-project",
                "app.kubernetes.io/component": "run",
                "app.kubernetes.io/instance": "train",
                "app.kubernetes.io/managed-by": "ferroflow-operator",
                "app.kubernetes.io/part-of": "ferroflow",
                "ferroflow.dev/owner-kind": "ProjectRun",
                "ferroflow.dev/owner-name": "train",
                "ferroflow.dev/owner-uid": uid,
                "ferroflow.dev/run-id": run_id,
            },
            "ownerReferences": [{"apiVersion": "ferroflow.dev/v1alpha1", "kind": "ProjectRun", "name": "train",
                                 "uid": uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "prepare",
                "command": ["/usr/local/bin/ferroflow"],
                "args": ["project-init", "--binary-to", "/ferroflow/bin/ferroflow"],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking}],
                "volumeMounts": [{"name": "ferroflow-bin", "mountPath": "/ferroflow/bin"}],
            }],
            "containers": [{
                "name": "run",
                "image": "python:3.12",
                "command": ["/ferroflow/bin/ferroflow"],
                "args": ["run", "/app", "-e", "train", "-P", "alpha=0.5", "--run-id", run_id],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking}],
                "volumeMounts": [{"name": "ferroflow-bin", "mountPath": "/ferroflow/bin", "readOnly": True}],
            }],
            "volumes": [{"name": "ferroflow-bin", "emptyDir": {}}],
        },
    })
    assert pod["spec"]["initContainers"][0]["image"].startswith("ghcr.io/ferroflow/ferroflow:")

    set_outcome(namespace, pod["metadata"]["name"], "Succeeded")
    obj = wait_phase(namespace, "train", "Succeeded")
    assert condition(obj, "Ready")["status"] == "True"
    assert obj["status"]["startTime"] and obj["status"]["completionTime"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.end_time is not None
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    reasons = {e.get("reason") for e in json.loads(events)["items"]}
    assert {"RunStarted", "RunFinished"} <= reasons, reasons
    # Exactly one run for the resource.
    runs = client.search_runs([status["experimentId"]], filter_string=f"tags.`{RUN_UID_TAG}` = '{uid}'")
    assert [r.info.run_id for r in runs] == [run_id]


def test_a_failed_pod_fails_the_run_and_the_runners_own_status_stands(operator, namespace, client, unique_name):  # noqa: F811
    experiment = f"exp-{unique_name}"
    obj, pod = start(namespace, "fails", experiment)
    set_outcome(namespace, pod["metadata"]["name"], "Failed")
    obj = wait_phase(namespace, "fails", "Failed")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Failed", ready
    # Over: neither under way nor waiting for a human.
    assert condition(obj, "Stalled")["status"] == "False"
    assert condition(obj, "Progressing")["status"] == "False"
    assert client.get_run(obj["status"]["runId"]).info.status == "FAILED"

    # The runner ended this one itself (FINISHED) before its Pod was reported Failed.
    obj, pod = start(namespace, "runner-ended", experiment)
    run_id = obj["status"]["runId"]
    client.set_terminated(run_id, "FINISHED")
    set_outcome(namespace, pod["metadata"]["name"], "Failed")
    wait_phase(namespace, "runner-ended", "Failed")
    assert client.get_run(run_id).info.status == "FINISHED"


def test_deleting_a_running_project_run_kills_the_pod_and_the_run(operator, namespace, client, unique_name):  # noqa: F811
    obj, pod = start(namespace, "doomed", f"exp-{unique_name}")
    run_id = obj["status"]["runId"]
    kubectl("delete", "-n", namespace, "projectrun/doomed", "--wait=false")
    wait_until(namespace, "projectrun/doomed", lambda o: o is None, "deletion")
    assert get(namespace, f"pod/{pod['metadata']['name']}") is None or \
        get(namespace, f"pod/{pod['metadata']['name']}")["metadata"].get("deletionTimestamp")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None


def test_a_suspended_project_run_has_its_run_but_no_pod_until_resumed(operator, namespace, client, unique_name):  # noqa: F811
    apply(namespace, project_run("queued", f"exp-{unique_name}", "  suspend: true"))
    obj = wait_until(namespace, "projectrun/queued",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("reason") == "Suspended",
                     "Suspended")
    assert phase(obj) == "Pending"
    assert get(namespace, "pod/queued-run") is None
    kubectl("patch", "-n", namespace, "projectrun/queued", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    obj = wait_phase(namespace, "queued", "Running")
    assert client.get_run(obj["status"]["runId"]).info.status == "RUNNING"


def test_restarting_the_operator_mid_reconcile_of_50_project_runs_makes_exactly_50_runs(
        operator, namespace, client, unique_name):  # noqa: F811
    count = 50
    experiment = f"exp-{unique_name}"
    kubectl("apply", "-n", namespace, "-f", "-",
            stdin="\n---\n".join(textwrap.dedent(project_run(f"batch-{i}", experiment)) for i in range(count)))
    # Kill as soon as the first run exists, so reconciles are in flight.
    deadline = time.monotonic() + WAIT_S
    while True:
        found = client.get_experiment_by_name(experiment)
        if found is not None and client.search_runs([found.experiment_id], max_results=1):
            break
        assert time.monotonic() < deadline, "no run was created in time"
        time.sleep(0.05)
    operator.kill()
    operator.start()
    for index in range(count):
        wait_phase(namespace, f"batch-{index}", "Running")
    runs = client.search_runs([found.experiment_id], max_results=1000)
    assert len(runs) == count
    assert len({run.data.tags[RUN_UID_TAG] for run in runs}) == count


def test_an_experiment_ref_puts_the_run_in_that_resources_experiment(operator, namespace, client, unique_name):  # noqa: F811
    experiment = f"exp-{unique_name}"
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: Experiment
        metadata:
          name: fraud
        spec:
          experimentName: {experiment}
        """)
    apply(namespace, """
        apiVersion: ferroflow.dev/v1alpha1
        kind: ProjectRun
        metadata:
          name: by-ref
        spec:
          experimentRef: {name: fraud}
          image: python:3.12
          projectDir: /app
        """)
    obj = wait_phase(namespace, "by-ref", "Running")
    found = client.get_experiment_by_name(experiment)
    assert obj["status"]["experimentId"] == found.experiment_id
    assert obj["status"]["experimentName"] == experiment
    assert client.get_run(obj["status"]["runId"]).info.experiment_id == found.experiment_id


def test_a_pod_of_the_same_name_that_is_not_ours_is_left_alone(operator, namespace, client, unique_name):  # noqa: F811
    apply(namespace, """
        apiVersion: v1
        kind: Pod
        metadata:
          name: squat-run
        spec:
          containers: [{name: main, image: busybox}]
        """)
    apply(namespace, project_run("squat", f"exp-{unique_name}"))
    obj = wait_until(namespace, "projectrun/squat",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("reason") == "InvalidSpec",
                     "InvalidSpec")
    assert "squat-run" in condition(obj, "Ready")["message"]
    pod = get(namespace, "pod/squat-run")
    assert not pod["metadata"].get("ownerReferences")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["main"]
