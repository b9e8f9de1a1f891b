"""ProjectRun against a real kube-apiserver with kwok Pods (issue #15).

The operator (test_gitops's fixture: its own ServiceAccount, the server's Postgres store)
creates the MLflow run first, then the Pod that runs it; kwok drives the Pod to Succeeded or
Failed when a test annotates it (`e2e.ferroflow.dev/outcome`, see e2e/cluster/kwok-stages.yaml).
"""

from __future__ import annotations

import json
import textwrap
import time

import os
import subprocess

from kubectl_helpers import KUBECONFIG, WAIT_S, apply, get, kubectl, wait_until
from test_gitops import _ferroflow_bin, condition, current, namespace, operator  # noqa: F401 (fixtures)

RUN_UID_TAG = "ferroflow.dev/project-run-uid"
OUTCOME = "e2e.ferroflow.dev/outcome"
# The projected service-account token both containers sign in to a tracking server with.
TOKEN_ENV = {"name": "FERROFLOW_TRACKING_TOKEN_FILE", "value": "/var/run/secrets/ferroflow/tracking/token"}
TOKEN_MOUNT = {"name": "tracking-token", "mountPath": "/var/run/secrets/ferroflow/tracking", "readOnly": True}


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
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking}, {"name": "MLFLOW_WORKSPACE", "value": namespace},
                        TOKEN_ENV],
                "volumeMounts": [{"name": "ferroflow-bin", "mountPath": "/ferroflow/bin"}, TOKEN_MOUNT],
            }],
            "containers": [{
                "name": "run",
                "image": "python:3.12",
                "command": ["/ferroflow/bin/ferroflow"],
                "args": ["run", "/app", "-e", "train", "-P", "alpha=0.5", "--run-id", run_id],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking}, {"name": "MLFLOW_WORKSPACE", "value": namespace},
                        TOKEN_ENV],
                "volumeMounts": [{"name": "ferroflow-bin", "mountPath": "/ferroflow/bin", "readOnly": True},
                                 TOKEN_MOUNT],
            }],
            "volumes": [{"name": "ferroflow-bin", "emptyDir": {}},
                        {"name": "tracking-token", "projected": {"sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 86400}}]}}],
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
    # kwok serves no logs: the run finished all the same, and the missing log is an event.
    assert "PodLogNotStored" in reasons, reasons
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


def log_model_as_the_pod_would(run_id: str) -> None:
    """What the project's `mlflow.sklearn.log_model(…, name="model")` does inside the Pod."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LinearRegression

    features = np.array([[0.0], [1.0], [2.0]])
    model = LinearRegression().fit(features, np.array([1.0, 3.0, 5.0]))
    with mlflow.start_run(run_id=run_id):
        mlflow.sklearn.log_model(model, name="model")


def versions_from(client, model: str, run_id: str) -> list:
    return [v for v in client.search_model_versions(f"name = '{model}'") if v.run_id == run_id]


def test_register_model_registers_the_runs_model_exactly_once_with_its_alias(
        operator, namespace, client, unique_name):  # noqa: F811
    model = f"model-{unique_name}"
    extra = f"  registerModel: {{modelName: {model}, alias: challenger}}"
    obj, pod = start(namespace, "trains", f"exp-{unique_name}", extra)
    run_id = obj["status"]["runId"]
    uid = obj["metadata"]["uid"]
    log_model_as_the_pod_would(run_id)
    set_outcome(namespace, pod["metadata"]["name"], "Succeeded")
    obj = wait_until(namespace, "projectrun/trains",
                     lambda o: o is not None and (o.get("status") or {}).get("registeredVersion") is not None,
                     "registeredVersion")
    assert phase(obj) == "Succeeded"
    assert condition(obj, "Ready")["status"] == "True"
    [version] = versions_from(client, model, run_id)
    assert int(version.version) == obj["status"]["registeredVersion"]
    assert version.tags[RUN_UID_TAG] == uid
    assert version.source.startswith("models:/m-"), version.source
    assert client.get_model_version_by_alias(model, "challenger").version == version.version
    reasons = {e.get("reason") for e in json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]}
    assert "ModelRegistered" in reasons, reasons

    # A crash after registering, before status recorded it: the restarted operator finds the
    # version by its tag instead of registering a second one.
    operator.kill()
    kubectl("patch", "-n", namespace, "projectrun/trains", "--subresource=status", "--type=json",
            "-p", '[{"op": "remove", "path": "/status/registeredVersion"}]')
    operator.start()
    obj = wait_until(namespace, "projectrun/trains",
                     lambda o: o is not None and (o.get("status") or {}).get("registeredVersion") is not None,
                     "registeredVersion again")
    assert obj["status"]["registeredVersion"] == int(version.version)
    assert [v.version for v in versions_from(client, model, run_id)] == [version.version]
    assert len(client.search_model_versions(f"name = '{model}'")) == 1


def test_a_run_without_a_model_at_the_artifact_path_says_so_and_registers_nothing(
        operator, namespace, client, unique_name):  # noqa: F811
    model = f"model-{unique_name}"
    obj, pod = start(namespace, "no-model", f"exp-{unique_name}", f"  registerModel: {{modelName: {model}}}")
    set_outcome(namespace, pod["metadata"]["name"], "Succeeded")
    obj = wait_until(namespace, "projectrun/no-model",
                     lambda o: o is not None and condition(o, "Ready").get("reason") == "LoggedModelNotFound",
                     "LoggedModelNotFound")
    assert phase(obj) == "Succeeded"
    assert "registeredVersion" not in obj["status"]
    assert "has no model at 'model'" in condition(obj, "Ready")["message"]
    assert client.get_run(obj["status"]["runId"]).info.status == "FINISHED"
    assert client.search_model_versions(f"name = '{model}'") == []
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert any(e.get("reason") == "LoggedModelNotFound" and e.get("type") == "Warning" for e in events), events


def _only_project_run(ns: str) -> dict | None:
    """The one ProjectRun in `ns` once its Pod runs, else None."""
    items = json.loads(kubectl("get", "projectruns", "-n", ns, "-o", "json").stdout)["items"]
    running = [item for item in items if phase(item) == "Running"]
    return running[0] if running else None


def _wait_for(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while (found := predicate()) is None:
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.2)
    return found


def test_ferroflow_run_backend_kubernetes_creates_a_project_run_and_exits_with_its_outcome(
        operator, namespace, client, unique_name):  # noqa: F811
    experiment = f"exp-{unique_name}"
    env = {**os.environ, "KUBECONFIG": KUBECONFIG}
    for outcome, code in (("Succeeded", 0), ("Failed", 1)):
        follower = subprocess.Popen(
            [_ferroflow_bin(), "run", "/app", "--backend", "kubernetes", "--image", "python:3.12",
             "-n", namespace, "-e", "train", "-P", "alpha=0.5", "--experiment-name", experiment],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            obj = _wait_for(lambda: _only_project_run(namespace), "running ProjectRun")
            assert obj["spec"] == {"experimentName": experiment, "image": "python:3.12", "projectDir": "/app",
                                   "entryPoint": "train", "parameters": {"alpha": "0.5"}}
            assert obj["metadata"]["name"].startswith("train-")
            set_outcome(namespace, obj["status"]["podName"], outcome)
            _, stderr = follower.communicate(timeout=WAIT_S)
        finally:
            follower.kill()
        name = obj["metadata"]["name"]
        assert follower.returncode == code, stderr
        assert f"Created ProjectRun {namespace}/{name}" in stderr
        assert f"ProjectRun {namespace}/{name}: Running, run {obj['status']['runId']}" in stderr
        assert f"ProjectRun {namespace}/{name}: {outcome}, run {obj['status']['runId']}" in stderr
        expected = "FINISHED" if outcome == "Succeeded" else "FAILED"
        assert client.get_run(obj["status"]["runId"]).info.status == expected
        kubectl("delete", "-n", namespace, f"projectrun/{name}")


def job_of(ns: str, name: str) -> dict | None:
    return get(ns, f"job/{name}-run")


def hold_then_admit(ns: str, name: str, outcome: str) -> None:
    """Gives the suspended ProjectRun's Job Pods the kwok outcome annotation, then admits it.

    The Job controller copies the template into each attempt, and a never-started suspended
    Job's template annotations may change (as Kueue changes them); a value that no kwok stage
    matches ("Hold") keeps a Job's Pod Running.
    """
    wait_until(ns, f"job/{name}-run", lambda o: o is not None, "the suspended Job")
    patch = {"spec": {"template": {"metadata": {"annotations": {OUTCOME: outcome}}}}}
    kubectl("patch", "-n", ns, f"job/{name}-run", "--type=merge", "-p", json.dumps(patch))
    kubectl("patch", "-n", ns, f"projectrun/{name}", "--type=merge", "-p", '{"spec":{"suspend":false}}')


def test_retries_make_a_job_that_runs_the_pod_and_ends_the_run(operator, namespace, client, unique_name):  # noqa: F811
    extra = "  backoffLimit: 2\n          activeDeadlineSeconds: 3600\n          ttlSecondsAfterFinished: 3600"
    apply(namespace, project_run("retried", f"exp-{unique_name}", extra))
    # kwok ends a Job's Pod Succeeded by itself.
    obj = wait_phase(namespace, "retried", "Succeeded")
    status = obj["status"]
    run_id, uid = status["runId"], obj["metadata"]["uid"]
    assert condition(obj, "Ready")["status"] == "True"
    assert get(namespace, "pod/retried-run") is None, "a Job runs it, not a bare Pod"
    job = job_of(namespace, "retried")
    assert job is not None
    owner = [{"apiVersion": "ferroflow.dev/v1alpha1", "kind": "ProjectRun", "name": "retried",
              "uid": uid, "controller": True, "blockOwnerDeletion": True}]
    labels = {"app.kubernetes.io/name": "mlflow-project", "ferroflow.dev/owner-kind": "ProjectRun",
              "ferroflow.dev/owner-uid": uid, "ferroflow.dev/run-id": run_id}
    contains(job, {
        "metadata": {"labels": labels, "ownerReferences": owner},
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 3600,
            "suspend": False,
            "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "run", "image": "python:3.12",
                                "args": ["run", "/app", "-e", "train", "-P", "alpha=0.5", "--run-id", run_id]}],
            }},
        },
    })
    assert "activeDeadlineSeconds" not in job["spec"]["template"]["spec"]
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    # The attempt that ran is the status' Pod, one of the Job's.
    pod = get(namespace, f"pod/{status['podName']}")
    assert pod is not None and pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    runs = client.search_runs([status["experimentId"]], filter_string=f"tags.`{RUN_UID_TAG}` = '{uid}'")
    assert [r.info.run_id for r in runs] == [run_id]
    reasons = {e.get("reason") for e in json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]}
    assert {"RunFinished", "PodLogNotStored"} <= reasons, reasons


def test_a_failed_attempt_is_retried_in_the_same_run_until_the_job_fails(operator, namespace, client, unique_name):  # noqa: F811
    apply(namespace, project_run("flaky", f"exp-{unique_name}", "  backoffLimit: 1\n          suspend: true"))
    obj = wait_until(namespace, "projectrun/flaky",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("reason") == "Suspended",
                     "Suspended")
    assert phase(obj) == "Pending"
    assert job_of(namespace, "flaky")["spec"]["suspend"] is True
    hold_then_admit(namespace, "flaky", "Failed")
    # The first attempt failed; the Job waits (10 s, its back-off) before the second.
    obj = wait_until(namespace, "projectrun/flaky",
                     lambda o: o is not None and "1 of 2 attempts failed" in condition(o, "Ready").get("message", ""),
                     "the first failed attempt")
    run_id = obj["status"]["runId"]
    assert phase(obj) in ("Pending", "Running"), obj["status"]
    assert client.get_run(run_id).info.status == "RUNNING"
    first = obj["status"]["podName"]
    obj = wait_phase(namespace, "flaky", "Failed")
    assert obj["status"]["podName"] != first, "the status names the last attempt"
    assert client.get_run(run_id).info.status == "FAILED"
    job = job_of(namespace, "flaky")
    assert job["status"]["failed"] == 2
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in job["status"]["conditions"])


def test_deleting_a_project_run_deletes_its_job_and_kills_the_run(operator, namespace, client, unique_name):  # noqa: F811
    apply(namespace, project_run("doomed-job", f"exp-{unique_name}", "  backoffLimit: 3\n          suspend: true"))
    hold_then_admit(namespace, "doomed-job", "Hold")
    obj = wait_phase(namespace, "doomed-job", "Running")
    run_id = obj["status"]["runId"]
    pod = obj["status"]["podName"]
    kubectl("delete", "-n", namespace, "projectrun/doomed-job", "--wait=false")
    wait_until(namespace, "projectrun/doomed-job", lambda o: o is None, "deletion")
    job = job_of(namespace, "doomed-job")
    assert job is None or job["metadata"].get("deletionTimestamp")
    # Background propagation: the garbage collector removes the attempt too.
    wait_until(namespace, f"pod/{pod}", lambda o: o is None or o["metadata"].get("deletionTimestamp"), "the Pod's deletion")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None
