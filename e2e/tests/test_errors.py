"""Error cases through the real mlflow client: the client's control flow depends on these codes."""

from __future__ import annotations

import uuid

import pytest
from helpers import mlflow_error
from mlflow.entities import Metric, Param, RunTag


def test_missing_run(client):
    missing = uuid.uuid4().hex
    with mlflow_error("RESOURCE_DOES_NOT_EXIST", match=missing):
        client.get_run(missing)
    with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.log_param(missing, "p", "v")
    with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.set_terminated(missing)


def test_missing_experiment(client):
    with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_experiment("987654321")
    with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.create_run("987654321")


def test_duplicate_experiment(client, unique_name):
    exp_id = client.create_experiment(unique_name)
    with mlflow_error("RESOURCE_ALREADY_EXISTS", match=unique_name):
        client.create_experiment(unique_name)
    # a deleted experiment still holds its name
    client.delete_experiment(exp_id)
    with mlflow_error("RESOURCE_ALREADY_EXISTS"):
        client.create_experiment(unique_name)


def test_param_key_over_250_chars(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "k" * 250, "ok")
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.log_param(run_id, "k" * 251, "v")
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.log_batch(run_id, params=[Param("q" * 251, "v")])
    assert client.get_run(run_id).data.params == {"k" * 250: "ok"}


def test_param_value_over_6000_chars_is_truncated(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    long_value = "".join(chr(ord("a") + i % 26) for i in range(7000))
    client.log_param(run_id, "long", long_value)
    client.log_batch(run_id, params=[Param("long-batch", long_value)])
    client.log_param(run_id, "exact", "x" * 6000)
    params = client.get_run(run_id).data.params
    assert params["long"] == long_value[:6000]
    assert params["long-batch"] == long_value[:6000]
    assert params["exact"] == "x" * 6000


def test_changed_param_value_rejected(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "lr", "0.1")
    with mlflow_error("INVALID_PARAMETER_VALUE", match="lr"):
        client.log_param(run_id, "lr", "0.2")
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.log_batch(run_id, params=[Param("lr", "0.3")])
    assert client.get_run(run_id).data.params == {"lr": "0.1"}


def test_invalid_metric_and_tag_keys(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    for bad in ("a*b", "../up", "m" * 251):
        with mlflow_error("INVALID_PARAMETER_VALUE"):
            client.log_metric(run_id, bad, 1.0)
        with mlflow_error("INVALID_PARAMETER_VALUE"):
            client.set_tag(run_id, bad, "v")
    # allowed characters: alphanumerics, _ - . space / :
    client.log_metric(run_id, "ok_key-1.2 with/slash:colon", 1.0)
    assert client.get_run(run_id).data.metrics == {"ok_key-1.2 with/slash:colon": 1.0}


def test_log_batch_is_validated_before_writing(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.log_batch(run_id, metrics=[Metric("fine", 1.0, 1000, 0)],
                         params=[Param("good", "v"), Param("bad" * 100, "v")],
                         tags=[RunTag("t", "v")])
    data = client.get_run(run_id).data
    assert data.metrics == {} and data.params == {}
    assert "t" not in data.tags


BAD_FILTERS = [
    "foo.bar = 'x'",                    # unknown entity prefix
    "metrics.acc = 'high'",             # quoted value for a metric
    "params.lr = 0.1",                  # unquoted value for a param
    "params.lr > '0.1'",                # ordering comparator on a string
    "metrics.acc IS NULL",              # IS NULL on a metric
    "attributes.status IN ('FAILED')",  # IN on an attribute other than run_id
    "attributes.nope = 'x'",            # unknown attribute
    "metrics.acc >",                    # no value
    "params.a = 'x' OR params.b = 'y'",  # OR is not part of the grammar
]


@pytest.mark.parametrize("flt", BAD_FILTERS)
def test_bad_run_filter(client, experiment_id, flt):
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_runs([experiment_id], filter_string=flt)


@pytest.mark.parametrize("flt", ["name > 'x'", "tags.a > 'b'", "bogus = 'x'", "name = "])
def test_bad_experiment_filter(client, flt):
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_experiments(filter_string=flt)


def test_bad_order_by(client, experiment_id):
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_runs([experiment_id], order_by=["metrics.acc SIDEWAYS"])
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_runs([experiment_id], order_by=["nope.acc"])


def test_bad_page_token(client, experiment_id):
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_runs([experiment_id], page_token="not-a-token")


def test_writes_to_deleted_run_rejected(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "before", "1")
    client.delete_run(run_id)
    for write in (
        lambda: client.log_param(run_id, "p", "v"),
        lambda: client.log_metric(run_id, "m", 1.0),
        lambda: client.set_tag(run_id, "t", "v"),
        lambda: client.log_batch(run_id, metrics=[Metric("m", 1.0, 1000, 0)]),
    ):
        with mlflow_error("INVALID_PARAMETER_VALUE", match="active"):
            write()
    client.restore_run(run_id)
    data = client.get_run(run_id).data
    assert data.params == {"before": "1"} and data.metrics == {}


def test_run_in_deleted_experiment_rejected(client, experiment_id):
    client.delete_experiment(experiment_id)
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.create_run(experiment_id)


def test_rename_onto_existing_name(client, unique_name):
    a = client.create_experiment(unique_name + "-a")
    client.create_experiment(unique_name + "-b")
    with mlflow_error("BAD_REQUEST"):  # MLflow: BAD_REQUEST here, not RESOURCE_ALREADY_EXISTS
        client.rename_experiment(a, unique_name + "-b")
    assert client.get_experiment(a).name == unique_name + "-a"


def test_empty_experiment_name_rejected(client):
    with mlflow_error("INVALID_PARAMETER_VALUE"):
        client.create_experiment("")
