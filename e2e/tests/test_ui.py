"""MLflow's own web UI, served by the server under test, in a real browser (issue #18).

Playwright drives Debian's `chromium` (FERROFLOW_CHROMIUM, default /usr/bin/chromium;
e2e/setup/chromium.sh installs it) against the session's server on each backend, seeded with
the mlflow client. Each page must show what it is for, make no failed request other than
`users/current` (404 without auth, on MLflow too) and log no error in the console. The same
tests pass against `mlflow server` (FERROFLOW_REFERENCE=mlflow), so they check the UI, not
ferroflow's quirks. A screenshot of every page is kept in
$FERROFLOW_E2E_STATE/screenshots/<impl>-<backend>/.
"""

from __future__ import annotations

import json
import os
import uuid
from urllib.parse import quote

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ui_helpers import chromium, ui_pages  # noqa: F401  (ui_pages: a fixture)

# Runs in the seeded experiment, as the acceptance asks: the runs table pages through
# them, the newest shows first.
RUNS = int(os.environ.get("FERROFLOW_E2E_UI_RUNS", "1000"))
STEPS = 100


class Seeded:
    """What the seed created, for the pages to show."""

    def __init__(self, experiment_id, experiment_name, run_ids, model_run_id, model_name):
        self.experiment_id = experiment_id
        self.experiment_name = experiment_name
        self.run_ids = run_ids  # run-0000, run-0001, ...
        self.model_run_id = model_run_id
        self.model_name = model_name


@pytest.fixture(scope="module")
def seeded(server) -> Seeded:
    client = MlflowClient(server.url)
    mlflow.set_tracking_uri(server.url)
    suffix = uuid.uuid4().hex[:8]
    name = f"ui-{suffix}"
    experiment_id = client.create_experiment(name)
    start = 1_700_000_000_000
    run_ids = []
    for i in range(RUNS):
        run_id = client.create_run(experiment_id, run_name=f"run-{i:04d}", start_time=start + i).info.run_id
        metrics = [Metric("loss", 1.0 / (1 + step) + (i % 17) / 100, start + step, step) for step in range(STEPS)]
        metrics.append(Metric("score", float(i), start, 0))
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param("lr", f"{0.001 * (1 + i):.3f}"), Param("depth", str(3 + i % 4))],
            tags=[RunTag("team", "vision")],
        )
        run_ids.append(run_id)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.linear_model import LogisticRegression

    with mlflow.start_run(experiment_id=experiment_id, run_name="with-model") as run:
        mlflow.log_text("hello from the artifact view\n", "notes.txt")
        figure = plt.figure(figsize=(2, 2))
        plt.plot([1, 3, 2])
        mlflow.log_figure(figure, "plot.png")
        plt.close(figure)
        features = np.array([[0.0], [1.0], [2.0], [3.0]])
        model = LogisticRegression().fit(features, [0, 0, 1, 1])
        signature = mlflow.models.infer_signature(features, model.predict(features))
        # Requirements given: inferring them imports the model in a subprocess (~10 s).
        logged = mlflow.sklearn.log_model(
            model, name="model", signature=signature, pip_requirements=["scikit-learn"]
        )
    model_name = f"ui-model-{suffix}"
    mlflow.register_model(logged.model_uri, model_name)
    mlflow.register_model(logged.model_uri, model_name)
    client.set_registered_model_alias(model_name, "champion", "2")
    client.set_registered_model_alias(model_name, "challenger", "1")
    # What ferroflow's operator writes on a version that ModelDeployment ml/churn-serving serves
    # through an alias (plain tags to MLflow's UI): where it serves, and the promotion record
    # that put it there.
    client.set_model_version_tag(model_name, "2", "ferroflow.deployment/ml.churn-serving", "serving")
    client.set_model_version_tag(model_name, "2", "ferroflow.deployment/ml.churn-serving.promotion", "17")
    return Seeded(experiment_id, name, run_ids, run.info.run_id, model_name)


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def ui(browser, server, ui_pages):
    return lambda name: ui_pages(browser, server, name)


def test_experiments_list_shows_the_experiment(ui, seeded):
    page = ui("experiments")
    view = page.open("/experiments")
    view.get_by_text(seeded.experiment_name, exact=True).wait_for()
    page.finish()


def test_runs_table_shows_runs_and_sorts_by_a_metric(ui, seeded):
    page = ui("runs-table")
    view = page.open(f"/experiments/{seeded.experiment_id}/runs")
    view.get_by_text(f"run-{RUNS - 1:04d}", exact=True).first.wait_for()
    # Ascending by `score` (= the run's index): run-0000 comes first.
    order = quote("metrics.`score`")
    view = page.open(f"/experiments/{seeded.experiment_id}/runs?orderByKey={order}&orderByAsc=true")
    first_row = view.locator(".ag-pinned-left-cols-container .ag-row[row-index='0'], .ag-center-cols-container .ag-row[row-index='0']")
    first_row.get_by_text("run-0000", exact=True).first.wait_for()
    page.finish()


def test_metric_chart_renders_points(ui, seeded):
    page = ui("runs-chart")
    view = page.page
    with view.expect_response(
        lambda r: "metrics/get-history-bulk-interval" in r.url and "metric_key=loss" in r.url
    ) as sampled:
        page.open(f"/experiments/{seeded.experiment_id}/runs?compareRunsMode=CHART")
    answer = sampled.value
    assert answer.status == 200
    points = answer.json()["metrics"]
    assert len(points) >= STEPS, "the shown runs' loss histories"
    assert {point["step"] for point in points} >= {0, STEPS - 1}, "first and last steps kept"
    view.locator(".js-plotly-plot path.js-line").first.wait_for()
    page.finish()


def test_compare_three_runs_shows_their_params_side_by_side(ui, seeded):
    page = ui("compare-runs")
    runs = json.dumps(seeded.run_ids[:3], separators=(",", ":"))
    view = page.open(f"/compare-runs?runs={runs}&experiments={json.dumps([seeded.experiment_id])}")
    view.get_by_text("Comparing 3 Runs").first.wait_for()
    for name in ("run-0000", "run-0001", "run-0002"):
        view.get_by_text(name, exact=True).first.wait_for()
    params = view.locator("tr", has_text="lr").filter(has_text="0.002").first
    params.wait_for()
    text = params.inner_text()
    assert all(value in text for value in ("0.001", "0.002", "0.003")), text
    page.finish()


def test_artifact_view_shows_the_text_file_and_the_image(ui, seeded):
    page = ui("artifacts")
    view = page.open(f"/experiments/{seeded.experiment_id}/runs/{seeded.model_run_id}/artifacts/notes.txt")
    view.get_by_text("hello from the artifact view").first.wait_for()
    view.get_by_text("plot.png", exact=True).first.click()
    image = view.locator("img[src^='blob:']").first
    image.wait_for()
    view.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    page.finish()


def test_models_list_and_model_page_show_versions_and_aliases(ui, seeded):
    page = ui("models")
    view = page.open("/models")
    # The list is paged by name and other tests' models share the database: filter to ours
    # with the page's own search box, as a user would.
    search = view.get_by_role("textbox").first
    search.fill(seeded.model_name)
    search.press("Enter")
    view.get_by_text(seeded.model_name, exact=True).first.wait_for()
    view.get_by_text("champion").first.wait_for()
    page.finish()
    page = ui("model")
    view = page.open(f"/models/{seeded.model_name}")
    view.get_by_text("Version 2", exact=True).first.wait_for()
    view.get_by_text("Version 1", exact=True).first.wait_for()
    view.get_by_text("challenger").first.wait_for()
    view.get_by_text("champion").first.wait_for()
    page.finish()


def test_version_page_shows_the_mlmodel_and_the_operators_tags(ui, seeded):
    page = ui("model-version")
    view = page.page
    with view.expect_response(lambda r: "/model-versions/get-artifact" in r.url) as mlmodel:
        page.open(f"/models/{seeded.model_name}/versions/2")
    assert mlmodel.value.status == 200
    # The schema section is read from the version's MLmodel file.
    view.get_by_text("Inputs (1)").first.wait_for()
    view.get_by_text("Outputs (1)").first.wait_for()
    view.get_by_text("ferroflow.deployment/ml.churn-serving", exact=True).first.wait_for()
    view.get_by_text("ferroflow.deployment/ml.churn-serving.promotion", exact=True).first.wait_for()
    view.get_by_text("champion").first.wait_for()
    page.finish()


def _sampled(api, run_ids, max_results, **step_range):
    r = api.get(
        "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
        [*(("run_ids", run_id) for run_id in run_ids), ("metric_key", "loss"),
         ("max_results", str(max_results)), *step_range.items()],
    )
    assert r.status_code == 200, r.text
    return [(run_ids.index(p["run_id"]), p["step"], p["timestamp"]) for p in r.json()["metrics"]]


def test_chart_sampling_is_by_point_keeping_the_last(api, client, experiment_id):
    """The charts' sampling: each run's points cut into `max_results` tiles, each tile's first
    point kept and the run's last point always; many values at one step count one by one."""
    steps = client.create_run(experiment_id).info.run_id
    client.log_batch(steps, metrics=[Metric("loss", float(i), 100 + i, i) for i in range(10)])
    one_step = client.create_run(experiment_id).info.run_id
    client.log_batch(one_step, metrics=[Metric("loss", float(i), 200 + i, 0) for i in range(5)])
    runs = [one_step, steps]
    assert _sampled(api, runs, 3) == [(0, 0, 200), (0, 0, 202), (0, 0, 204),
                                      (1, 0, 100), (1, 4, 104), (1, 9, 109)]
    assert _sampled(api, runs, 1) == [(0, 0, 204), (1, 9, 109)]
    assert _sampled(api, runs, 4, start_step="2", end_step="6") == [
        (1, 2, 102), (1, 4, 104), (1, 5, 105), (1, 6, 106)]


def test_graphql_get_run_answers_in_mlflows_shapes(api, client, experiment_id):
    run_id = client.create_run(experiment_id, run_name="gql").info.run_id
    client.log_batch(run_id, metrics=[Metric("loss", float("nan"), 5, 2)], params=[Param("p", "1")])
    query = """query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {
      mlflowGetRun(input: $data) {
        apiError { code message }
        run { info { runUuid runName status startTime }
              experiment { experimentId }
              modelVersions { version }
              data { metrics { key value step timestamp } params { key value } }
              inputs { datasetInputs { dataset { name } } } }
      }
    }"""
    r = api.post("/graphql", {"query": query, "variables": {"data": {"runId": run_id}},
                              "operationName": "GetRun"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["errors"] is None
    run = answer["data"]["mlflowGetRun"]["run"]
    assert answer["data"]["mlflowGetRun"]["apiError"] is None
    assert run["info"]["runUuid"] == run_id and run["info"]["runName"] == "gql"
    assert run["info"]["status"] == "RUNNING" and isinstance(run["info"]["startTime"], str)
    assert run["experiment"] == {"experimentId": experiment_id}
    assert run["modelVersions"] == []
    assert run["data"]["metrics"] == [{"key": "loss", "value": None, "step": "2", "timestamp": "5"}]
    assert run["data"]["params"] == [{"key": "p", "value": "1"}]
    assert run["inputs"] == {"datasetInputs": []}
    r = api.post("/graphql", {"query": query, "variables": {"data": {"runId": "absent"}}})
    assert r.json()["data"] == {"mlflowGetRun": None}
    assert len(r.json()["errors"]) == 1
