"""PromotionPolicy against the real API server, the operator and the mlflow client (issue #19):
a policy on `champion` requiring `val_auc >= 0.9` and `approved=true` refuses a 0.85 version
through the client (message naming the rule and 0.85) and through a RegisteredModel edit in git
(Ready=False PolicyDenied, alias unchanged), and lets a 0.93 approved version through on both
paths; the refusals are in the history; the schema refuses malformed policies at apply time.
The operator's retries of a refused spec are recorded once; a version registered by a
ModelVersion resource is judged by its MLmodel as one registered through the client; with
`--auth kubernetes`, a four-eyes rule refuses the creator's own approval through the client.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time

import mlflow
import pytest
from kubectl_helpers import KUBECONFIG, KUBECTL, WAIT_S, apply, kubectl, wait_until
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from test_gitops import _ferroflow_bin, condition, current, namespace, operator  # noqa: F401 (fixtures)
from test_kubernetes_auth import call, running_auth_server

PROMOTIONS = "/api/2.0/ferroflow/promotions"


def gate(name: str, model: str) -> str:
    return f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: PromotionPolicy
        metadata:
          name: {name}
        spec:
          models: ["{model}"]
          aliases: [champion]
          rules:
            - metric: {{name: val_auc, min: 0.9}}
            - tag: {{key: approved, value: "true"}}
        """


def registered_model(name: str, model: str, champion: int | None) -> str:
    aliases = f"aliases: {{champion: {champion}}}" if champion else "aliases: {}"
    return f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: RegisteredModel
        metadata:
          name: {name}
        spec:
          modelName: {model}
          {aliases}
        """


def _version(client, experiment_id: str, model: str, auc: float) -> str:
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "val_auc", auc)
    client.set_terminated(run.info.run_id)
    return client.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id).version


def _policy_ready(ns: str, name: str) -> None:
    obj = wait_until(ns, f"promotionpolicy/{name}",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("status") == "True",
                     "policy Ready")
    assert obj is not None


def test_a_policy_gates_the_client_and_git_paths_alike(operator, namespace, client, server, api, unique_name):  # noqa: F811
    model = f"gated-{unique_name}"[:200]
    apply(namespace, gate("gate", model))
    _policy_ready(namespace, "gate")
    client.create_registered_model(model)
    experiment_id = client.create_experiment(f"{model}-runs")
    weak = _version(client, experiment_id, model, 0.85)
    strong = _version(client, experiment_id, model, 0.93)

    # Through the client: refused, naming the rule and the value seen.
    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_alias(model, "champion", weak)
    assert refused.value.error_code == "PERMISSION_DENIED"
    assert "val_auc >= 0.9 failed: val_auc = 0.85" in refused.value.message
    assert "tag approved = true failed" in refused.value.message
    assert f"[{namespace}/gate]" in refused.value.message

    # The dry run says the same without moving anything; the CLI exits 3.
    check = api.post(f"{PROMOTIONS}/check", json={"name": model, "target": "champion", "version": weak})
    assert check.status_code == 200, check.text
    assert check.json()["allowed"] is False
    cli = subprocess.run([_ferroflow_bin(), "promotions", "check", model, "champion", weak,
                          "--tracking-uri", server.url], capture_output=True, text=True, timeout=60, check=False)
    assert cli.returncode == 3, cli.stdout + cli.stderr
    assert "FAIL" in cli.stdout and "refused" in cli.stdout

    # Through git: the RegisteredModel declares champion -> the weak version.
    apply(namespace, registered_model("churn", model, int(weak)))
    obj = wait_until(namespace, "registeredmodel/churn",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("reason") == "PolicyDenied",
                     "Ready=False PolicyDenied")
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and "val_auc = 0.85" in ready["message"], ready
    assert client.get_registered_model(model).aliases == {}

    # The strong version, approved, passes on the git path.
    client.set_model_version_tag(model, strong, "approved", "true")
    apply(namespace, registered_model("churn", model, int(strong)))
    obj = wait_until(namespace, "registeredmodel/churn",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("status") == "True",
                     "Ready with champion on the strong version")
    assert obj is not None
    assert client.get_model_version_by_alias(model, "champion").version == strong

    history = api.get(PROMOTIONS, params={"name": model, "target": "champion"}).json()["promotions"]
    refusals = [e for e in history if not e["allowed"]]
    assert {e["path"] for e in refusals} == {"api", "operator"}
    assert all(e["to_version"] == int(weak) for e in refusals)
    allowed = [e for e in history if e["allowed"]]
    assert [(e["to_version"], e["path"], e["actor"]) for e in allowed] == [
        (int(strong), "operator", f"{namespace}/RegisteredModel/churn")]
    assert all(r["passed"] for r in allowed[0]["results"]) and len(allowed[0]["results"]) == 2

    # Deleting the policy lifts the gate (the operator forgets it through its finalizer).
    subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, "-n", namespace, "delete", "promotionpolicy/gate",
                    "--wait=true", "--timeout=60s"], check=True, capture_output=True, timeout=90)
    after = api.post(f"{PROMOTIONS}/check", json={"name": model, "target": "champion", "version": weak}).json()
    assert after == {"allowed": True, "results": []}


def _events(ns: str, kind: str, name: str) -> list[dict]:
    listed = json.loads(kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    return [e for e in listed if e.get("involvedObject", {}).get("kind") == kind
            and e.get("involvedObject", {}).get("name") == name]


def _wait_event(ns: str, kind: str, name: str, reason: str, text: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [e for e in _events(ns, kind, name)
                 if e.get("reason") == reason and text in (e.get("message") or e.get("note") or "")]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {reason} event with {text!r}: {_events(ns, kind, name)}"
        time.sleep(0.2)


def _latest(obj: dict | None, alias: str) -> dict:
    return ((obj or {}).get("status", {}).get("promotions", {}).get(alias) or [{}])[0]


def _gated_weak_and_approved_strong(namespace: str, client, model: str) -> tuple[str, str]:
    """`model` guarded by the `gate` policy, with a 0.85 version and an approved 0.93 one."""
    apply(namespace, gate("gate", model))
    _policy_ready(namespace, "gate")
    client.create_registered_model(model)
    experiment_id = client.create_experiment(f"{model}-runs")
    weak = _version(client, experiment_id, model, 0.85)
    strong = _version(client, experiment_id, model, 0.93)
    client.set_model_version_tag(model, strong, "approved", "true")
    return weak, strong


def test_the_registered_model_status_and_events_tell_each_move_and_denial(operator, namespace, client, api,  # noqa: F811
                                                                          unique_name):
    model = f"told-{unique_name}"[:200]
    weak, strong = _gated_weak_and_approved_strong(namespace, client, model)
    apply(namespace, registered_model("told", model, None).replace("aliases: {}", ""))
    obj = wait_until(namespace, "registeredmodel/told",
                     lambda o: o is not None and current(o) and condition(o, "Ready").get("status") == "True", "Ready")
    assert obj is not None and "promotions" not in obj["status"]

    # A move through the client: in the status and told by an Event.
    client.set_registered_model_alias(model, "challenger", weak)
    obj = wait_until(namespace, "registeredmodel/told",
                     lambda o: _latest(o, "challenger").get("toVersion") == int(weak), "challenger in status")
    entry = _latest(obj, "challenger")
    assert (entry["actor"], entry["path"], entry["allowed"]) == ("anonymous", "api", True), entry
    assert "fromVersion" not in entry and entry["time"].endswith("Z")
    _wait_event(namespace, "RegisteredModel", "told", "AliasMoved",
                f"alias 'challenger' of model '{model}' set to version {weak} by anonymous (api)")

    # A denial through the client: a Warning naming the rule and the value seen.
    with pytest.raises(MlflowException):
        client.set_registered_model_alias(model, "champion", weak)
    event = _wait_event(namespace, "RegisteredModel", "told", "PolicyDenied",
                        f"[{namespace}/gate] val_auc >= 0.9 failed: val_auc = 0.85")
    assert event["type"] == "Warning"
    obj = wait_until(namespace, "registeredmodel/told",
                     lambda o: _latest(o, "champion").get("allowed") is False, "the denial in status")
    assert f"[{namespace}/gate] val_auc >= 0.9 failed: val_auc = 0.85" in _latest(obj, "champion")["failedRules"]

    # A move through a spec edit: in the status too, naming the resource.
    apply(namespace, registered_model("told", model, int(strong)).replace(
        f"champion: {strong}", f"champion: {strong}, challenger: {weak}"))
    obj = wait_until(namespace, "registeredmodel/told",
                     lambda o: _latest(o, "champion").get("allowed") is True, "the spec's move in status")
    entry = _latest(obj, "champion")
    assert (entry["toVersion"], entry["actor"], entry["path"]) == (
        int(strong), f"{namespace}/RegisteredModel/told", "operator"), entry
    assert [e["allowed"] for e in obj["status"]["promotions"]["champion"]] == [True, False]
    _wait_event(namespace, "RegisteredModel", "told", "AliasMoved",
                f"alias 'champion' of model '{model}' set to version {strong} by {namespace}/RegisteredModel/told (operator)")
    history = api.get(PROMOTIONS, params={"name": model}).json()["promotions"]
    assert obj["status"]["lastPromotionId"] == max(e["id"] for e in history)


def _promote_when_allowed(client, model: str, version: str, waiting_on: str) -> list[str]:
    """Sets champion to `version`, retrying while the only refusal is `waiting_on` (a dwell
    rule), until a deadline; returns the refusals seen before it was allowed."""
    refusals = []
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            client.set_registered_model_alias(model, "champion", version)
            return refusals
        except MlflowException as refused:
            assert refused.error_code == "PERMISSION_DENIED", refused.message
            assert waiting_on in refused.message and refused.message.count(" failed: ") == 1, refused.message
            refusals.append(refused.message)
        assert time.monotonic() < deadline, f"still refused: {refusals[-1]}"
        time.sleep(0.2)


def test_relative_and_dwell_rules_through_the_client(operator, namespace, client, unique_name):  # noqa: F811
    model = f"dwell-{unique_name}"[:200]
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: PromotionPolicy
        metadata:
          name: steady
        spec:
          models: ["{model}"]
          aliases: [champion]
          rules:
            - metric: {{name: val_auc, maxRegression: 0.005}}
            - predecessor: {{alias: challenger, minDuration: 3s}}
        """)
    _policy_ready(namespace, "steady")
    client.create_registered_model(model)
    experiment_id = client.create_experiment(f"{model}-runs")
    first = _version(client, experiment_id, model, 0.9)
    worse = _version(client, experiment_id, model, 0.8)
    better = _version(client, experiment_id, model, 0.95)
    dwell = "held alias 'challenger' for at least 3s failed"

    # Not challenger at all: refused, whatever its metric.
    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_alias(model, "champion", first)
    assert "does not hold alias 'challenger'" in refused.value.message

    # Challenger for less than 3 s: refused; allowed once it has held it long enough.
    client.set_registered_model_alias(model, "challenger", first)
    held_from = time.monotonic()
    refusals = _promote_when_allowed(client, model, first, dwell)
    assert time.monotonic() - held_from >= 2.5
    assert refusals and re.search(r"held alias 'challenger' for [0-2]s", refusals[0]), refusals

    # Worse than the incumbent by more than 0.005: refused naming both values, also after the dwell.
    client.set_registered_model_alias(model, "challenger", worse)
    relative = (f"[{namespace}/steady] val_auc >= incumbent - 0.005 failed: "
                f"val_auc = 0.8; incumbent version {first}: val_auc = 0.9")
    deadline = time.monotonic() + WAIT_S
    while True:
        with pytest.raises(MlflowException) as refused:
            client.set_registered_model_alias(model, "champion", worse)
        assert relative in refused.value.message, refused.value.message
        if dwell not in refused.value.message:
            break
        assert time.monotonic() < deadline, refused.value.message
        time.sleep(0.2)
    assert client.get_model_version_by_alias(model, "champion").version == first

    # Better, and challenger long enough: champion.
    client.set_registered_model_alias(model, "challenger", better)
    _promote_when_allowed(client, model, better, dwell)
    assert client.get_model_version_by_alias(model, "champion").version == better


class Echo(mlflow.pyfunc.PythonModel):
    """No type hints: MLflow infers no signature from it unless given an input example."""

    def predict(self, context, model_input, params=None):
        return model_input


def _documented_policy(namespace: str, model: str) -> None:
    """PromotionPolicy `documented`: champion of `model` needs a signature or an input example."""
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: PromotionPolicy
        metadata:
          name: documented
        spec:
          models: ["{model}"]
          aliases: [champion]
          rules:
            - modelMetadata: {{anyOf: [signature, inputExample]}}
        """)
    _policy_ready(namespace, "documented")


def test_a_model_metadata_rule_needs_a_signature_or_an_input_example(operator, namespace, client, experiment_id,  # noqa: F811
                                                                    unique_name):
    import pandas as pd

    model = f"documented-{unique_name}"[:200]
    _documented_policy(namespace, model)
    with mlflow.start_run(experiment_id=experiment_id):
        bare = mlflow.pyfunc.log_model(name="bare", python_model=Echo(), registered_model_name=model)
        documented = mlflow.pyfunc.log_model(name="documented", python_model=Echo(),
                                             input_example=pd.DataFrame({"x": [1.0, 2.0]}),
                                             registered_model_name=model)
    # What the MLmodel files say, as MLflow reads them back.
    assert mlflow.models.get_model_info(bare.model_uri).signature is None
    assert mlflow.models.get_model_info(documented.model_uri).saved_input_example_info is not None

    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_alias(model, "champion", bare.registered_model_version)
    assert refused.value.error_code == "PERMISSION_DENIED"
    assert (f"[{namespace}/documented] model has a signature or an input example failed: "
            "MLmodel has neither a signature nor an input example") in refused.value.message
    client.set_registered_model_alias(model, "champion", documented.registered_model_version)
    assert client.get_model_version_by_alias(model, "champion").version == str(documented.registered_model_version)


def test_operator_retries_of_a_refused_spec_are_recorded_once(operator, namespace, client, api,  # noqa: F811
                                                               unique_name):
    model = f"retried-{unique_name}"[:200]
    weak, strong = _gated_weak_and_approved_strong(namespace, client, model)
    client.set_registered_model_alias(model, "champion", strong)

    def declare(description: str) -> dict:
        apply(namespace, f"""
            apiVersion: ferroflow.dev/v1alpha1
            kind: RegisteredModel
            metadata:
              name: retried
            spec:
              modelName: {model}
              description: {description}
              aliases: {{champion: {weak}}}
            """)
        obj = wait_until(namespace, "registeredmodel/retried",
                         lambda o: o is not None and current(o) and condition(o, "Ready").get("reason") == "PolicyDenied",
                         f"Ready=False PolicyDenied for {description!r}")
        assert obj is not None
        return obj

    # Each spec edit makes the operator try the refused move again: six reconciles, one entry.
    for attempt in range(6):
        obj = declare(f"attempt {attempt}")
    history = api.get(PROMOTIONS, params={"name": model, "target": "champion"}).json()["promotions"]
    assert [(e["path"], e["allowed"], e["to_version"]) for e in history] == [
        ("api", True, int(strong)), ("operator", False, int(weak))], history
    # The status keeps the allowed move it would otherwise have pushed out.
    assert [(e["allowed"], e["toVersion"]) for e in obj["status"]["promotions"]["champion"]] == [
        (False, int(weak)), (True, int(strong))]
    assert client.get_model_version_by_alias(model, "champion").version == strong


def test_a_model_version_resource_is_judged_by_its_mlmodel(operator, namespace, client, experiment_id,  # noqa: F811
                                                           tmp_path, unique_name):
    """A version a ModelVersion resource registers has its MLmodel read by the operator through
    the tracking server, as one registered through the client: modelMetadata lets the one with
    an input example through, not the bare one nor one without an MLmodel."""
    import pandas as pd

    model = f"declared-{unique_name}"[:200]
    _documented_policy(namespace, model)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        for name, example in (("bare", None), ("documented", pd.DataFrame({"x": [1.0, 2.0]}))):
            mlflow.pyfunc.save_model(tmp_path / name, python_model=Echo(), input_example=example)
            mlflow.log_artifacts(str(tmp_path / name), name)
    apply(namespace, registered_model("declared", model, None).replace("aliases: {}", ""))
    versions = {}
    for name in ("bare", "documented", "empty"):
        apply(namespace, f"""
            apiVersion: ferroflow.dev/v1alpha1
            kind: ModelVersion
            metadata:
              name: {name}
            spec:
              modelRef: {{name: declared}}
              source: runs:/{run.info.run_id}/{name}
              runId: {run.info.run_id}
            """)
        obj = wait_until(namespace, f"modelversion/{name}",
                         lambda o: o is not None and current(o) and condition(o, "Ready").get("status") == "True",
                         f"ModelVersion {name} Ready")
        assert obj is not None
        versions[name] = str(obj["status"]["version"])

    for name, seen in (("bare", "MLmodel has neither a signature nor an input example"),
                       ("empty", "the version's files hold no MLmodel")):
        with pytest.raises(MlflowException) as refused:
            client.set_registered_model_alias(model, "champion", versions[name])
        assert (f"[{namespace}/documented] model has a signature or an input example failed: {seen}"
                in refused.value.message), refused.value.message
    client.set_registered_model_alias(model, "champion", versions["documented"])
    assert client.get_model_version_by_alias(model, "champion").version == versions["documented"]


def _account(namespace: str, name: str) -> str:
    """A ServiceAccount of `namespace` that may register and promote there; a fresh token."""
    kubectl("create", "serviceaccount", name, "-n", namespace)
    for role in ("ferroflow-editor", "ferroflow-promoter"):
        kubectl("create", "rolebinding", f"{name}-{role}", "-n", namespace, f"--clusterrole={role}",
                f"--serviceaccount={namespace}:{name}")
    return kubectl("create", "token", name, "-n", namespace, "--duration=10m").stdout.strip()


def test_four_eyes_refuses_the_creators_own_approval_through_the_client(  # noqa: F811
        operator, namespace, server, monkeypatch, tmp_path, unique_name):
    """With `--auth kubernetes` on the operator's store: alice registers a version and approves
    it herself, so moving champion is refused; bob approves it, and the move passes."""
    model = f"four-eyes-{unique_name}"[:200]
    apply(namespace, f"""
        apiVersion: ferroflow.dev/v1alpha1
        kind: PromotionPolicy
        metadata:
          name: four-eyes
        spec:
          models: ["{model}"]
          aliases: [champion]
          rules:
            - tag: {{key: approved, value: "true", fourEyes: true}}
        """)
    _policy_ready(namespace, "four-eyes")
    tokens = {name: _account(namespace, name) for name in ("alice", "bob")}
    alice_user, bob_user = (f"system:serviceaccount:{namespace}:{name}" for name in ("alice", "bob"))
    with running_auth_server(_ferroflow_bin(), server.backend, server.store_uri, tmp_path / "artifacts", tmp_path,
                             name=f"ferroflow-auth-{namespace}") as auth:
        def as_user(name: str) -> MlflowClient:
            monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens[name])
            return MlflowClient(tracking_uri=auth.url)

        alice = as_user("alice")
        alice.create_registered_model(model)
        version = alice.create_model_version(model, "s3://models/four-eyes/1").version
        alice.set_model_version_tag(model, version, "approved", "true")
        with pytest.raises(MlflowException) as refused:
            alice.set_registered_model_alias(model, "champion", version)
        assert refused.value.error_code == "PERMISSION_DENIED"
        assert (f"[{namespace}/four-eyes] tag approved = true, set by someone other than the version's creator "
                f"failed: tag approved = true, set by {alice_user}, the version's creator") in refused.value.message
        assert alice.get_registered_model(model).aliases == {}

        as_user("bob").set_model_version_tag(model, version, "approved", "true")
        alice = as_user("alice")
        alice.set_registered_model_alias(model, "champion", version)
        assert alice.get_model_version_by_alias(model, "champion").version == version

        r = call(auth, "GET", PROMOTIONS, tokens["bob"], None, {"name": model, "target": "champion"})
        assert r.status_code == 200, r.text
        history = r.json()["promotions"]
        assert [(e["actor"], e["path"], e["allowed"]) for e in history] == [
            (alice_user, "api", False), (alice_user, "api", True)], history
        assert history[1]["results"][0]["observed"] == (f"tag approved = true, set by {bob_user} (version created by {alice_user})"), history


@pytest.mark.parametrize("spec,message", [
    ("models: [a]\nrules: [{tag: {key: approved}}]", "name at least one alias or stage"),
    ("models: []\naliases: [champion]\nrules: [{tag: {key: approved}}]", "models"),
    ("models: [a]\naliases: [champion]\nrules: []", "rules"),
    ("models: [a]\naliases: [champion]\nrules: [{}]", "a rule is exactly one of metric, tag"),
    ("models: [a]\naliases: [champion]\nrules: [{tag: {key: a}, metric: {name: m, min: 1}}]",
     "a rule is exactly one of metric, tag"),
    ("models: [a]\naliases: [champion]\nrules: [{tag: {key: a}, modelMetadata: {anyOf: [signature]}}]",
     "a rule is exactly one of metric, tag"),
    ("models: [a]\naliases: [champion]\nrules: [{modelMetadata: {anyOf: []}}]", "anyOf"),
    ("models: [a]\naliases: [champion]\nrules: [{modelMetadata: {anyOf: [schema]}}]", "Unsupported value"),
    ("models: [a]\naliases: [champion]\nrules: [{modelMetadata: {anyOf: [signature, signature]}}]",
     "at most once each"),
    ("models: [a]\naliases: [champion]\nrules: [{metric: {name: auc}}]", "needs min, max or maxRegression"),
    ("models: [a]\naliases: [champion]\nrules: [{metric: {name: auc, min: 0.9, max: 0.5}}]", "min must not exceed max"),
    ("models: [a]\naliases: [champion]\nrules: [{predecessor: {alias: challenger, minDuration: 1week}}]",
     "minDuration"),
    ("models: [a]\naliases: [champion]\nrules: [{predecessor: {alias: challenger, stage: Staging}}]",
     "exactly one of alias or stage"),
    ("models: [a]\naliases: [\"bad alias\"]\nrules: [{tag: {key: approved}}]", "spec.aliases[0]"),
    ("models: [a]\nstages: [Live]\nrules: [{tag: {key: approved}}]", "Unsupported value"),
])
def test_the_schema_refuses_malformed_policies(operator, namespace, spec, message):  # noqa: F811
    manifest = "apiVersion: ferroflow.dev/v1alpha1\nkind: PromotionPolicy\nmetadata:\n  name: bad\nspec:\n" + \
        textwrap.indent(spec, "  ") + "\n"
    result = subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, "-n", namespace, "apply", "-f", "-"],
                            input=manifest, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
