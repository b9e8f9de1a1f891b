"""MLflow's web UI with what only a cluster gives (issue #18), in Chromium as test_ui.py drives it.

- Kubernetes auth through the UI's own convention: the bundle sends every cookie named
  `mlflow-request-header-<Name>` as header `<Name>` on its REST calls, GraphQL and artifact
  downloads, so an SSO proxy (or a user) sets `mlflow-request-header-Authorization` to
  `Bearer <token>`. `ferroflow server --auth kubernetes` on the e2e API server, accounts and
  tokens as in test_kubernetes_auth.py.
- The owner tag: a RegisteredModel and a ModelVersion applied with kubectl, reconciled by the
  operator (as in test_gitops.py, postgres backend), show which resource owns them as tag
  `ferroflow.owner` on the model and version pages; the API refuses to overwrite it.

Needs FERROFLOW_KUBECTL and FERROFLOW_KUBECONFIG from `eval "$(e2e/cluster/up.sh)"`; skipped
without them (failed when CI is set), and against MLflow's own server (neither exists there).
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

import mlflow
import pytest
from helpers import fit_line
from kubectl_helpers import apply
from mlflow.exceptions import MlflowException
from test_gitops import namespace, operator, registered_model, wait_ready  # noqa: F401 (fixtures)
from test_kubernetes_auth import as_account, auth_server, identities  # noqa: F401 (fixtures)
from ui_helpers import ALLOWED_FAILURE, chromium, ui_pages  # noqa: F401 (a fixture)

AUTH_COOKIE = "mlflow-request-header-Authorization"
# The UI has no workspace picker (server-info says workspaces are off on /ajax-api); the same
# cookie convention sends the workspace header.
WORKSPACE_COOKIE = "mlflow-request-header-X-MLFLOW-WORKSPACE"
OWNER_TAG = "ferroflow.owner"
# What the UI calls without a token and the server answers openly: the bundle, server-info.
PUBLIC = ("/static-files/", "/ajax-api/3.0/mlflow/server-info", "/favicon.ico", "/manifest.json")


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def alice_run(auth_server, identities):
    """alice (editor in team-a) trains through the client with her token: an experiment in her
    namespace's workspace, a run with a metric and a text file."""
    with pytest.MonkeyPatch.context() as patch:
        alice = as_account(patch, auth_server, identities["alice"])
        name = f"ui-auth-{uuid.uuid4().hex[:8]}"
        experiment_id = alice.create_experiment(name)
        run = alice.create_run(experiment_id, run_name="signed-in")
        alice.log_metric(run.info.run_id, "auc", 0.93)
        alice.log_text(run.info.run_id, "read with the cookie's token\n", "notes.txt")
        alice.set_terminated(run.info.run_id)
    return name, experiment_id, run.info.run_id


def test_the_ui_calls_with_the_cookies_token_and_is_refused_without(browser, ui_pages, auth_server, identities,
                                                                    alice_run):
    name, experiment_id, run_id = alice_run
    # URL-encoded, as a proxy writes it (cookie values hold no space); the bundle decodes it.
    cookies = {AUTH_COOKIE: quote(f"Bearer {identities['alice']}")}

    page = ui_pages(browser, auth_server, "auth-experiments", cookies)
    page.open("/experiments").get_by_text(name, exact=True).wait_for()
    page.finish()
    page = ui_pages(browser, auth_server, "auth-run", cookies)
    view = page.open(f"/experiments/{experiment_id}/runs/{run_id}")
    view.get_by_text("signed-in").first.wait_for()
    view.get_by_text("auc", exact=True).first.wait_for()
    page.finish()
    # The artifact viewer downloads the file itself: that call carries the token too.
    page = ui_pages(browser, auth_server, "auth-artifact", cookies)
    page.open(f"/experiments/{experiment_id}/runs/{run_id}/artifacts/notes.txt")
    page.page.get_by_text("read with the cookie's token").first.wait_for()
    page.finish()

    # No cookie: every call that reads data is refused 401 (users/current is not served: 404
    # with or without a token, as on MLflow without its auth app), the bundle and server-info
    # are open, and nothing of alice's shows.
    page = ui_pages(browser, auth_server, "auth-refused")
    view = page.page
    with view.expect_response(lambda r: "/experiments/search" in r.url) as searched:
        page.open("/experiments")
    assert searched.value.status == 401
    assert searched.value.json()["error_code"] == "UNAUTHENTICATED"
    view.get_by_text("Authentication required").first.wait_for()
    page.keep_screenshot()
    assert view.get_by_text(name, exact=True).count() == 0
    api_calls = [(status, url) for status, _, url in page.responses if "/ajax-api/" in url or url.endswith("/graphql")]
    allowed = [(status, url) for status, url in api_calls
               if not any(part in url for part in PUBLIC) and not ALLOWED_FAILURE.search(url.split("?", 1)[0])]
    assert allowed and all(status == 401 for status, _ in allowed), allowed


def test_model_and_version_pages_show_the_owning_resource(browser, ui_pages, server, operator, namespace,
                                                          tracking_uri, client, unique_name):
    model_name = f"owned-{unique_name}"
    mlflow.set_experiment(f"owned-{unique_name}")
    model, _ = fit_line(1.0)
    with mlflow.start_run():
        # Requirements given: inferring them imports the model in a subprocess (~10 s).
        logged = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    mlflow.register_model(logged.model_uri, model_name)
    apply(namespace, registered_model(model_name, {"champion": 1}, owned_metadata=False))
    apply(namespace, """
        apiVersion: ferroflow.dev/v1alpha1
        kind: ModelVersion
        metadata:
          name: churn-1
        spec:
          modelRef:
            name: churn
          version: 1
        """)
    wait_ready(namespace, "registeredmodel/churn")
    wait_ready(namespace, "modelversion/churn-1")
    model_owner = f"{namespace}/RegisteredModel/churn"
    version_owner = f"{namespace}/ModelVersion/churn-1"
    assert client.get_registered_model(model_name).tags == {OWNER_TAG: model_owner}
    assert client.get_model_version(model_name, "1").tags == {OWNER_TAG: version_owner}
    # The resource declares no tags, yet the owner tag is its own: the API may not overwrite it.
    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_tag(model_name, OWNER_TAG, "team-b/RegisteredModel/mine")
    assert f"RegisteredModel {namespace}/churn" in str(refused.value)
    with pytest.raises(MlflowException) as refused:
        client.delete_model_version_tag(model_name, "1", OWNER_TAG)
    assert f"ModelVersion {namespace}/churn-1" in str(refused.value)

    # The resources declare into their namespace's workspace: the UI reaches it by the cookie.
    in_namespace = {WORKSPACE_COOKIE: namespace}
    page = ui_pages(browser, server, "owned-model", in_namespace)
    view = page.open(f"/models/{model_name}")
    view.get_by_text(OWNER_TAG, exact=True).first.wait_for()
    view.get_by_text(model_owner, exact=True).first.wait_for()
    view.get_by_text("champion").first.wait_for()
    page.finish()
    page = ui_pages(browser, server, "owned-model-version", in_namespace)
    view = page.open(f"/models/{model_name}/versions/1")
    view.get_by_text(OWNER_TAG, exact=True).first.wait_for()
    view.get_by_text(version_owner, exact=True).first.wait_for()
    view.get_by_text("champion").first.wait_for()
    page.finish()
