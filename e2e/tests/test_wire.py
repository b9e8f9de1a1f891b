"""Raw HTTP: the wire details clients other than the Python one (and the UI) depend on."""

from __future__ import annotations

import json
import sys
import uuid

import pytest
from helpers import now_ms


def _ok(r):
    assert r.status_code == 200, f"{r.request.method} {r.url} -> {r.status_code}: {r.text[:500]}"
    return r.json()


def _error(r, status, code):
    assert r.status_code == status, f"{r.request.method} {r.url} -> {r.status_code}: {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body["error_code"] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def _create_experiment(api, name=None):
    return _ok(api.post("experiments/create", {"name": name or f"wire-{uuid.uuid4().hex}"}))[
        "experiment_id"]


def _create_run(api, exp_id, **fields):
    return _ok(api.post("runs/create", {"experiment_id": exp_id, **fields}))["run"]


def test_health_and_version(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.text.strip() == "OK"
    r = api.get("/version")
    assert r.status_code == 200 and r.text.strip()


def test_int64_fields_are_json_numbers(api):
    exp_id = _create_experiment(api)
    assert isinstance(exp_id, str) and exp_id.isdigit()
    exp = _ok(api.get("experiments/get", {"experiment_id": exp_id}))["experiment"]
    assert type(exp["creation_time"]) is int and type(exp["last_update_time"]) is int
    assert exp["lifecycle_stage"] == "active"

    run = _create_run(api, exp_id, start_time=1_700_000_000_123, run_name="wire")
    info = run["info"]
    assert info["start_time"] == 1_700_000_000_123 and type(info["start_time"]) is int
    assert info["status"] == "RUNNING"  # enums by name
    assert info["run_id"] == info["run_uuid"]
    assert info["run_name"] == "wire"
    assert {"key": "mlflow.runName", "value": "wire"} in run["data"]["tags"]  # tags are lists

    _ok(api.post("runs/log-metric", {"run_id": info["run_id"], "key": "m", "value": 0.5,
                                     "timestamp": 1_700_000_000_999, "step": 3_000_000_000}))
    hist = _ok(api.get("metrics/get-history", {"run_id": info["run_id"], "metric_key": "m"}))
    [m] = hist["metrics"]
    assert m == {"key": "m", "value": 0.5, "timestamp": 1_700_000_000_999, "step": 3_000_000_000}
    assert type(m["timestamp"]) is int and type(m["step"]) is int

    got = _ok(api.get("runs/get", {"run_id": info["run_id"]}))["run"]
    assert got["data"]["metrics"] == [m]


def test_int64_accepted_as_string(api):
    exp_id = _create_experiment(api)
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    _ok(api.post("runs/log-metric", {"run_id": run_id, "key": "m", "value": 1.5,
                                     "timestamp": "1700000000000", "step": "7"}))
    [m] = _ok(api.get("metrics/get-history", {"run_id": run_id, "metric_key": "m"}))["metrics"]
    assert m["timestamp"] == 1_700_000_000_000 and m["step"] == 7


def test_nan_and_infinity_on_the_wire(api):
    exp_id = _create_experiment(api)
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    for key, value in (("nan", "NaN"), ("pinf", "Infinity"), ("ninf", "-Infinity")):
        _ok(api.post("runs/log-metric", {"run_id": run_id, "key": key, "value": value,
                                         "timestamp": 1000, "step": 0}))
    run = _ok(api.get("runs/get", {"run_id": run_id}))["run"]
    values = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert values["nan"] == "NaN"
    # stored clamped to the largest finite double, sent back as a plain number
    assert values["pinf"] == sys.float_info.max and values["ninf"] == -sys.float_info.max


def test_error_bodies_and_statuses(api):
    body = _error(api.get("runs/get", {"run_id": uuid.uuid4().hex}), 404, "RESOURCE_DOES_NOT_EXIST")
    assert set(body) >= {"error_code", "message"}
    _error(api.get("experiments/get", {"experiment_id": "424242424"}), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(api.get("experiments/get-by-name", {"experiment_name": f"nope-{uuid.uuid4().hex}"}),
           404, "RESOURCE_DOES_NOT_EXIST")
    name = f"dup-{uuid.uuid4().hex}"
    _create_experiment(api, name)
    _error(api.post("experiments/create", {"name": name}), 400, "RESOURCE_ALREADY_EXISTS")
    _error(api.post("experiments/create", {}), 400, "INVALID_PARAMETER_VALUE")
    exp_id = _create_experiment(api)
    _error(api.post("runs/search", {"experiment_ids": [exp_id], "filter": "metrics.x > 'a'"}),
           400, "INVALID_PARAMETER_VALUE")


def test_unknown_route_is_404(api):
    r = api.get("no-such-endpoint")
    assert r.status_code == 404
    r = api.post("runs/no-such-endpoint", {"run_id": "x"})
    assert r.status_code == 404
    # MLflow answers unknown routes from its web framework; if the body is JSON it carries
    # ENDPOINT_NOT_FOUND (the client falls back on that code in a few places)
    if r.headers.get("Content-Type", "").startswith("application/json"):
        assert r.json().get("error_code") == "ENDPOINT_NOT_FOUND", r.text


def test_camel_case_and_run_uuid_accepted(api):
    """Bodies are parsed with protobuf's ParseDict: lowerCamel field names work, and `run_uuid`
    is the deprecated alias of `run_id`. (MLflow 3.17.2 checks required fields such as `run_id`
    on the raw JSON key before parsing, so it refuses `runId` alone; this test does not use it.)"""
    exp_id = _create_experiment(api)
    run = _ok(api.post("runs/create", {"experimentId": exp_id, "runName": "camel",
                                       "startTime": 1_700_000_000_000}))["run"]
    assert run["info"]["run_name"] == "camel"
    assert run["info"]["start_time"] == 1_700_000_000_000
    assert run["info"]["experiment_id"] == exp_id
    run_id = run["info"]["run_id"]
    _ok(api.post("runs/log-parameter", {"run_uuid": run_id, "key": "uuid", "value": "yes"}))
    _ok(api.post("runs/set-tag", {"run_uuid": run_id, "key": "t", "value": "v"}))
    _ok(api.post("runs/log-batch", {"run_id": run_id, "run_uuid": run_id,
                                    "metrics": [{"key": "b", "value": 2.0, "timestamp": 5, "step": 1}]}))
    _ok(api.post("runs/update", {"run_id": run_id, "endTime": 77, "status": "KILLED"}))
    got = _ok(api.get("runs/get", {"run_uuid": run_id}))["run"]
    assert got["info"]["status"] == "KILLED" and got["info"]["end_time"] == 77
    params = {p["key"]: p["value"] for p in got["data"]["params"]}
    assert params == {"uuid": "yes"}
    assert {"key": "t", "value": "v"} in got["data"]["tags"]
    assert got["data"]["metrics"] == [{"key": "b", "value": 2.0, "timestamp": 5, "step": 1}]
    found = _ok(api.post("runs/search", {"experimentIds": [exp_id], "maxResults": 5,
                                         "runViewType": "ALL", "orderBy": ["metrics.b DESC"]}))
    assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
    exps = _ok(api.post("experiments/search", {"maxResults": 1, "viewType": "ACTIVE_ONLY",
                                               "filter": f"name = 'nope-{uuid.uuid4().hex}'"}))
    assert exps == {}


def test_unknown_fields_ignored(api):
    exp_id = _ok(api.post("experiments/create", {"name": f"unk-{uuid.uuid4().hex}",
                                                 "no_such_field": {"nested": [1, 2]}}))["experiment_id"]
    run_id = _create_run(api, exp_id, bogus=True)["info"]["run_id"]
    _ok(api.post("runs/log-parameter", {"run_id": run_id, "key": "k", "value": "v", "extra": 1}))
    run = _ok(api.get("runs/get", {"run_id": run_id, "whatever": "x"}))["run"]
    assert run["data"]["params"] == [{"key": "k", "value": "v"}]


def test_mutations_answer_empty_object_and_empty_search_is_empty(api):
    exp_id = _create_experiment(api)
    assert _ok(api.post("experiments/set-experiment-tag",
                        {"experiment_id": exp_id, "key": "k", "value": "v"})) == {}
    assert _ok(api.post("runs/search", {"experiment_ids": [exp_id]})) == {}
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    assert _ok(api.post("runs/log-parameter", {"run_id": run_id, "key": "k", "value": "v"})) == {}
    updated = _ok(api.post("runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": 42}))
    assert updated["run_info"]["status"] == "FINISHED" and updated["run_info"]["end_time"] == 42
    assert updated["run_info"]["run_id"] == run_id
    assert _ok(api.post("runs/delete", {"run_id": run_id})) == {}
    assert _ok(api.post("runs/restore", {"run_id": run_id})) == {}
    assert _ok(api.post("experiments/delete", {"experiment_id": exp_id})) == {}


def test_get_search_with_repeated_query_keys(api):
    prefix = f"rep-{uuid.uuid4().hex}"
    ids = [_create_experiment(api, f"{prefix}-{c}") for c in "abc"]
    for i, exp_id in enumerate(ids):
        _ok(api.post("experiments/set-experiment-tag",
                     {"experiment_id": exp_id, "key": "grp", "value": "x" if i < 2 else "y"}))
    # repeated order_by keys: first by tag-free attribute name DESC, then experiment_id
    r = api.get("experiments/search", [("filter", f"name LIKE '{prefix}-%'"),
                                      ("order_by", "name DESC"), ("order_by", "experiment_id ASC"),
                                      ("max_results", "10"), ("view_type", "ALL")])
    names = [e["name"] for e in _ok(r)["experiments"]]
    assert names == [f"{prefix}-c", f"{prefix}-b", f"{prefix}-a"]

    runs = [_create_run(api, ids[0])["info"]["run_id"] for _ in range(2)]
    for j, run_id in enumerate(runs):
        for step in range(3):
            _ok(api.post("runs/log-metric", {"run_id": run_id, "key": "loss", "value": j + step / 10,
                                             "timestamp": 1000 + step, "step": step}))
    r = api.get("metrics/get-history-bulk-interval",
                [("run_ids", runs[0]), ("run_ids", runs[1]), ("metric_key", "loss"),
                 ("max_results", "10")])
    points = _ok(r)["metrics"]
    got = sorted((p["run_id"], p["step"], p["value"]) for p in points)
    assert got == sorted((run_id, step, j + step / 10) for j, run_id in enumerate(runs)
                         for step in range(3))


def test_log_batch_limits_validated_before_writing(api):
    exp_id = _create_experiment(api)
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    ts = now_ms()
    too_many = [{"key": f"m{i}", "value": 1.0, "timestamp": ts, "step": 0} for i in range(1001)]
    _error(api.post("runs/log-batch", {"run_id": run_id, "metrics": too_many}), 400,
           "INVALID_PARAMETER_VALUE")
    params = [{"key": f"p{i}", "value": "v"} for i in range(101)]
    _error(api.post("runs/log-batch", {"run_id": run_id, "params": params}), 400,
           "INVALID_PARAMETER_VALUE")
    run = _ok(api.get("runs/get", {"run_id": run_id}))["run"]
    assert "metrics" not in run["data"] and "params" not in run["data"]
    # exactly at the limit is fine
    _ok(api.post("runs/log-batch", {"run_id": run_id, "metrics": too_many[:1000]}))
    run = _ok(api.get("runs/get", {"run_id": run_id}))["run"]
    assert len(run["data"]["metrics"]) == 1000


def test_server_side_param_validation(api):
    """The Python client does not validate params itself: these checks are the server's."""
    exp_id = _create_experiment(api)
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    _error(api.post("runs/log-parameter", {"run_id": run_id, "key": "k" * 251, "value": "v"}),
           400, "INVALID_PARAMETER_VALUE")
    _ok(api.post("runs/log-parameter", {"run_id": run_id, "key": "long", "value": "z" * 6500}))
    _ok(api.post("runs/log-parameter", {"run_id": run_id, "key": "p", "value": "1"}))
    body = _error(api.post("runs/log-parameter", {"run_id": run_id, "key": "p", "value": "2"}),
                  400, "INVALID_PARAMETER_VALUE")
    assert "p" in body["message"]
    run = _ok(api.get("runs/get", {"run_id": run_id}))["run"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params == {"long": "z" * 6000, "p": "1"}


def test_deleted_run_write_is_400(api):
    exp_id = _create_experiment(api)
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    _ok(api.post("runs/delete", {"run_id": run_id}))
    _error(api.post("runs/set-tag", {"run_id": run_id, "key": "k", "value": "v"}), 400,
           "INVALID_PARAMETER_VALUE")
    # MLflow refuses updates (set_terminated) of a deleted run as well
    _error(api.post("runs/update", {"run_id": run_id, "status": "FINISHED"}), 400,
           "INVALID_PARAMETER_VALUE")
    run = _ok(api.get("runs/get", {"run_id": run_id}))["run"]
    assert run["info"]["lifecycle_stage"] == "deleted"


@pytest.mark.registry
def test_delete_with_json_body(api):
    name = f"wire-model-{uuid.uuid4().hex}"
    _ok(api.post("registered-models/create", {"name": name}))
    _ok(api.get("registered-models/get", {"name": name}))
    r = api.request("DELETE", "registered-models/delete", data=json.dumps({"name": name}),
                    headers={"Content-Type": "application/json"})
    assert _ok(r) == {}
    _error(api.get("registered-models/get", {"name": name}), 404, "RESOURCE_DOES_NOT_EXIST")


def test_search_page_token_round_trip(api):
    exp_id = _create_experiment(api)
    made = [_create_run(api, exp_id, start_time=1000 + i)["info"]["run_id"] for i in range(5)]
    first = _ok(api.post("runs/search", {"experiment_ids": [exp_id], "max_results": 2}))
    assert isinstance(first["next_page_token"], str) and first["next_page_token"]
    second = _ok(api.post("runs/search", {"experiment_ids": [exp_id], "max_results": 2,
                                          "page_token": first["next_page_token"]}))
    third = _ok(api.post("runs/search", {"experiment_ids": [exp_id], "max_results": 2,
                                         "page_token": second["next_page_token"]}))
    assert "next_page_token" not in third or not third["next_page_token"]
    seen = [r["info"]["run_id"] for page in (first, second, third) for r in page["runs"]]
    assert seen == made[::-1]


def test_metric_history_paging(api):
    exp_id = _create_experiment(api)
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    logged = [(float(i), 100 + i, i) for i in range(7)]
    _ok(api.post("runs/log-batch", {"run_id": run_id, "metrics": [
        {"key": "m", "value": v, "timestamp": t, "step": s} for v, t, s in logged]}))
    seen, token, pages = [], None, 0
    while True:
        params = {"run_id": run_id, "metric_key": "m", "max_results": 3}
        if token:
            params["page_token"] = token
        body = _ok(api.get("metrics/get-history", params))
        page = body.get("metrics", [])
        assert len(page) <= 3
        seen += [(m["value"], m["timestamp"], m["step"]) for m in page]
        token = body.get("next_page_token")
        pages += 1
        if not token:
            break
        assert pages < 10
    assert sorted(seen) == logged
    assert _ok(api.get("metrics/get-history", {"run_id": run_id, "metric_key": "none"})) == {}


def test_more_validation_errors(api):
    exp_id = _create_experiment(api)
    run_id = _create_run(api, exp_id)["info"]["run_id"]
    # run_name and tag mlflow.runName must agree
    _error(api.post("runs/create", {"experiment_id": exp_id, "run_name": "a",
                                    "tags": [{"key": "mlflow.runName", "value": "b"}]}),
           400, "INVALID_PARAMETER_VALUE")
    # negative timestamps and non-numeric values
    _error(api.post("runs/log-metric", {"run_id": run_id, "key": "m", "value": 1, "timestamp": -5}),
           400, "INVALID_PARAMETER_VALUE")
    _error(api.post("runs/log-metric", {"run_id": run_id, "key": "m", "value": "abc",
                                        "timestamp": 5}), 400, "INVALID_PARAMETER_VALUE")
    # one request may not name a param twice, even with the same value
    _error(api.post("runs/log-batch", {"run_id": run_id, "params": [
        {"key": "x", "value": "1"}, {"key": "x", "value": "1"}]}), 400, "INVALID_PARAMETER_VALUE")
    # search ceilings
    _error(api.post("runs/search", {"experiment_ids": [exp_id], "max_results": 50001}),
           400, "INVALID_PARAMETER_VALUE")
    _error(api.post("runs/delete-tag", {"run_id": run_id, "key": "nope"}), 404,
           "RESOURCE_DOES_NOT_EXIST")
    _error(api.post("experiments/delete", {"experiment_id": "99999999"}), 404,
           "RESOURCE_DOES_NOT_EXIST")
    run = _ok(api.get("runs/get", {"run_id": run_id}))["run"]
    assert "metrics" not in run["data"] and "params" not in run["data"]
